"""Map tensor names to (layer, module type), and select tensors by module and layer range.

Module types are the study's seven: q, k, v, o (attention) and gate, up, down (MLP), plus
`embed`, `lm_head`, `norm` and `other` for everything kept out of the module means.
`tunescope.analyse` extends this for fused layouts (GPT-2 c_attn, Phi-3 qkv_proj) that are split
into parts.

A selector string, used by freezing and by weight surgery:

    "gate,up,down@19-25"     gate/up/down projections in layers 19..25 (inclusive)
    "q,k"                    q and k projections in every layer
    "*@0-7"                  every tensor of layers 0..7
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tunescope.errors import UserError

MODULES = ("q", "k", "v", "o", "gate", "up", "down")

_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")
_SUFFIX = {
    "q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o",
    "gate_proj": "gate", "up_proj": "up", "down_proj": "down",
    "w1": "gate", "w3": "up", "w2": "down",
    "qkv_proj": "qkv", "gate_up_proj": "gate_up", "c_attn": "qkv", "c_fc": "up",
    "dense": "o", "fc1": "up", "fc2": "down",
}


@dataclass(frozen=True)
class TensorName:
    name: str
    layer: int | None
    module: str  # one of MODULES, a fused "qkv"/"gate_up", or "embed"/"lm_head"/"norm"/"other"


def parse(name: str) -> TensorName:
    """(layer, module type) of a parameter or safetensors tensor name."""
    m = _LAYER_RE.search(name)
    layer = int(m.group(1)) if m else None
    parts = name.split(".")
    stem = parts[-2] if len(parts) >= 2 and parts[-1] in ("weight", "bias") else parts[-1]
    if "norm" in stem or stem.startswith("ln_"):
        module = "norm"
    elif "embed" in name or stem in ("wte", "wpe"):
        module = "embed"
    elif "lm_head" in name:
        module = "lm_head"
    elif stem == "c_proj" and layer is not None:
        module = "o" if ".attn." in name else "down"
    else:
        module = _SUFFIX.get(stem, "other")
    return TensorName(name=name, layer=layer, module=module)


@dataclass(frozen=True)
class Selector:
    """Module types and an inclusive layer range; `None` means all."""

    modules: frozenset[str] | None
    layers: tuple[int, int] | None

    def matches(self, name: str) -> bool:
        t = parse(name)
        if self.modules is not None and t.module not in self.modules:
            return False
        if self.layers is not None and (t.layer is None or not self.layers[0] <= t.layer <= self.layers[1]):
            return False
        return True


def parse_selector(text: str) -> Selector:
    """Parse "gate,up,down@19-25" style selectors (see module docstring)."""
    mods, _, rng = text.strip().partition("@")
    modules = None
    if mods.strip() not in ("", "*"):
        modules = frozenset(m.strip() for m in mods.split(",") if m.strip())
        known = set(MODULES) | {"qkv", "gate_up", "embed", "lm_head", "norm"}
        bad = sorted(modules - known)
        if bad:
            raise UserError(f"selector '{text}': unknown module type {bad[0]!r}; use {', '.join(MODULES)}")
    layers = None
    if rng.strip():
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+))?\s*", rng)
        if not m:
            raise UserError(f"selector '{text}': layer range must look like 19-25 or 7")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise UserError(f"selector '{text}': layer range {lo}-{hi} is empty; write it low-high")
        layers = (lo, hi)
    return Selector(modules=modules, layers=layers)


def select(names: list[str], selectors: list[str]) -> list[str]:
    """Names matched by any selector; a selector that matches nothing is an error."""
    chosen: set[str] = set()
    for text in selectors:
        sel = parse_selector(text)
        hit = [n for n in names if sel.matches(n)]
        if not hit:
            raise UserError(f"selector '{text}' matches no tensor of this model; check module names and layers")
        chosen.update(hit)
    return [n for n in names if n in chosen]
