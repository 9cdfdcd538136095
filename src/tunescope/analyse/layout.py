"""Per-architecture tensor layout: which (layer, module type) each part of a stored tensor is.

Most causal LMs store one matrix per module (Llama, Mistral, Qwen2/3, OLMo-2: q_proj, k_proj,
v_proj, o_proj, gate_proj, up_proj, down_proj, with grouped-query k/v of shape (kv_heads*head_dim,
d)). Two families fuse them, and the study's per-module numbers need them split:

    GPT-2   attn.c_attn  (d, 3d)  Conv1D, stored (in, out): columns [q | k | v]
            attn.c_proj  (d, d)   -> o ;  mlp.c_fc (d, 4d) -> up ;  mlp.c_proj (4d, d) -> down
    Phi-3   self_attn.qkv_proj   (q + 2 kv, d): rows [q | k | v], q = heads*head_dim, kv = kv_heads*head_dim
            mlp.gate_up_proj     (2 ffn, d):    rows [gate | up]

A `Part` is a slice of one stored tensor along one dimension, plus whether the stored matrix is
transposed relative to the usual (out, in) convention of `nn.Linear`. `Part.matrix(t)` returns the
part as an (out, in) matrix, so that left singular vectors always live in the output space.
Architectures not listed keep their fused tensors whole, under the fused module name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tunescope.naming import MODULES, parse

CONV1D_MODEL_TYPES = frozenset({"gpt2"})  # Conv1D weights stored as (in, out)
EXCLUDED = frozenset({"embed", "lm_head", "norm"})  # reported apart, never in the module means


@dataclass(frozen=True)
class Part:
    """One reported unit: a whole tensor or one slice of a fused tensor."""

    tensor: str  # stored tensor name
    part: str  # "" for a whole tensor, else the part's module ("q", "gate", ...)
    layer: int | None
    module: str  # q/k/v/o/gate/up/down, embed/lm_head/norm/other, or a fused name left unsplit
    param: str  # "weight", "bias" or "other" (buffers, scalars)
    dim: int  # dimension along which the part is sliced (0 for whole tensors)
    start: int
    stop: int
    transposed: bool  # stored (in, out) (GPT-2 Conv1D)

    @property
    def in_module_means(self) -> bool:
        return self.param == "weight" and self.module in MODULES

    def view(self, t: torch.Tensor, row0: int = 0) -> torch.Tensor | None:
        """This part of `t`, where `t` holds rows row0: of the stored tensor (None if no overlap)."""
        if self.dim == 1:
            return t[:, self.start:self.stop]
        lo, hi = max(self.start, row0), min(self.stop, row0 + t.shape[0])
        if lo >= hi:
            return None
        return t[lo - row0:hi - row0]

    def matrix(self, t: torch.Tensor) -> torch.Tensor:
        """The part of the whole stored tensor `t` as an (out, in) matrix."""
        m = self.view(t)
        assert m is not None
        return m.T if self.transposed else m


def read_config(model_dir: str | Path) -> dict[str, Any]:
    """config.json of a model directory ({} when there is none)."""
    f = Path(model_dir) / "config.json"
    try:
        return json.loads(f.read_text()) if f.is_file() else {}
    except json.JSONDecodeError:
        return {}


def _param(name: str, ndim: int) -> str:
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "weight" and ndim >= 1:
        return "weight"
    return "bias" if leaf == "bias" else "other"


def _qkv_sizes(config: dict[str, Any]) -> tuple[int, int] | None:
    """(q rows, k/v rows) of a fused qkv tensor, from the config."""
    d = config.get("hidden_size") or config.get("n_embd")
    heads = config.get("num_attention_heads") or config.get("n_head")
    if not d or not heads:
        return None
    head_dim = config.get("head_dim") or d // heads
    kv_heads = config.get("num_key_value_heads") or heads
    return heads * head_dim, kv_heads * head_dim


def parts(name: str, shape: tuple[int, ...], config: dict[str, Any]) -> list[Part]:
    """The parts a stored tensor is reported as (one, or one per fused module)."""
    t = parse(name)
    param = _param(name, len(shape))
    conv1d = config.get("model_type") in CONV1D_MODEL_TYPES and t.layer is not None and len(shape) == 2
    rows = shape[0] if shape else 1

    def whole(module: str) -> list[Part]:
        return [Part(name, "", t.layer, module, param, 0, 0, rows, conv1d)]

    if t.module not in ("qkv", "gate_up") or not shape:
        return whole(t.module)
    dim = 1 if conv1d else 0  # the output dimension
    if t.module == "gate_up":
        if shape[dim] % 2:
            return whole(t.module)
        sizes, labels = [shape[dim] // 2] * 2, ["gate", "up"]
    else:
        qkv = _qkv_sizes(config)
        if qkv is None or qkv[0] + 2 * qkv[1] != shape[dim]:
            return whole(t.module)
        sizes, labels = [qkv[0], qkv[1], qkv[1]], ["q", "k", "v"]
    out, start = [], 0
    for size, label in zip(sizes, labels):
        out.append(Part(name, label, t.layer, label, param, dim, start, start + size, conv1d))
        start += size
    return out
