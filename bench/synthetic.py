"""Synthetic Llama checkpoints on disk, with the tensor names and shapes of a real model.

`make_llama_pair(out_dir, preset="1b")` writes a *base* model directory and one or more *perturbed*
checkpoints of it as sharded safetensors + `model.safetensors.index.json` + `config.json`, the
layout `save_pretrained` produces, so that every streaming stage (diff, spectrum, weight surgery)
can be benchmarked at a realistic size without downloading anything.

It streams: the safetensors headers are computed up front from the shapes, then each tensor is
generated, written to the base and to every checkpoint, and dropped. Peak memory is a few copies
of the largest tensor (the 128256 x 2048 embedding for "1b": 0.5 GB in bf16), never the model.

Values: base weights are N(0, 0.02^2) (norm weights 1.0), as Llama's initialiser, drawn from a
shared pool of normals (cheap; rows of tensors larger than the pool repeat with its period); checkpoint k of
K is `base + (k+1)/K * scale(layer, module) * 0.02 * noise`, a straight-line "training trajectory"
whose relative change grows with k and varies by layer and module (q/k move most, as in the
studies). The update is added in float32 and then rounded to the stored dtype, so in bf16 some
entries do not change at all (the effect the diff's `frac_changed` column reports).
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

# name -> Llama architecture sizes. "1b" is Llama-3.2-1B, "8b" Llama-3.1-8B, "tiny" for tests,
# "1b-layer" one layer of "1b" with a 256-token vocabulary (the spectrum benchmark: SVDs cost ~ r³).
PRESETS: dict[str, dict] = {
    "tiny": dict(layers=2, d=64, ffn=160, heads=4, kv_heads=2, vocab=256, tie=False),
    "100m": dict(layers=8, d=768, ffn=2048, heads=12, kv_heads=4, vocab=32000, tie=True),
    "1b": dict(layers=16, d=2048, ffn=8192, heads=32, kv_heads=8, vocab=128256, tie=True),
    "8b": dict(layers=32, d=4096, ffn=14336, heads=32, kv_heads=8, vocab=128256, tie=False),
    "1b-layer": dict(layers=1, d=2048, ffn=8192, heads=32, kv_heads=8, vocab=256, tie=True),  # one layer of 1b
}

# Relative update size per module type (q/k largest), times a per-layer bump in the middle layers.
_MODULE_SCALE = {"q": 1.6, "k": 1.7, "v": 0.9, "o": 1.0, "gate": 1.1, "up": 1.2, "down": 1.15,
                 "embed": 0.3, "lm_head": 0.3, "norm": 0.5}
_DTYPE_NAME = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}


@dataclass(frozen=True)
class Spec:
    name: str
    shape: tuple[int, ...]
    layer: int | None
    module: str


def llama_specs(preset: str) -> list[Spec]:
    """Tensor names and shapes of a Llama model, in `save_pretrained` order."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
    p = PRESETS[preset]
    d, ffn, hd = p["d"], p["ffn"], p["d"] // p["heads"]
    kv = p["kv_heads"] * hd
    specs = [Spec("model.embed_tokens.weight", (p["vocab"], d), None, "embed")]
    for i in range(p["layers"]):
        a, m = f"model.layers.{i}.self_attn", f"model.layers.{i}.mlp"
        specs += [
            Spec(f"model.layers.{i}.input_layernorm.weight", (d,), i, "norm"),
            Spec(f"{a}.q_proj.weight", (d, d), i, "q"),
            Spec(f"{a}.k_proj.weight", (kv, d), i, "k"),
            Spec(f"{a}.v_proj.weight", (kv, d), i, "v"),
            Spec(f"{a}.o_proj.weight", (d, d), i, "o"),
            Spec(f"model.layers.{i}.post_attention_layernorm.weight", (d,), i, "norm"),
            Spec(f"{m}.gate_proj.weight", (ffn, d), i, "gate"),
            Spec(f"{m}.up_proj.weight", (ffn, d), i, "up"),
            Spec(f"{m}.down_proj.weight", (d, ffn), i, "down"),
        ]
    specs.append(Spec("model.norm.weight", (d,), None, "norm"))
    if not p["tie"]:
        specs.append(Spec("lm_head.weight", (p["vocab"], d), None, "lm_head"))
    return specs


def llama_config(preset: str, dtype: torch.dtype) -> dict:
    """A config.json that `transformers.AutoConfig` reads as a LlamaConfig."""
    p = PRESETS[preset]
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": p["vocab"], "hidden_size": p["d"], "intermediate_size": p["ffn"],
        "num_hidden_layers": p["layers"], "num_attention_heads": p["heads"],
        "num_key_value_heads": p["kv_heads"], "head_dim": p["d"] // p["heads"], "hidden_act": "silu",
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "initializer_range": 0.02,
        "tie_word_embeddings": p["tie"], "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0},
        "attention_bias": False, "mlp_bias": False, "bos_token_id": 1, "eos_token_id": 2,
        "dtype": str(dtype).removeprefix("torch."),
    }


# --------------------------------------------------------------------------- streaming writer

def _plan_shards(specs: list[Spec], elem: int, shard_bytes: int) -> list[list[Spec]]:
    shards: list[list[Spec]] = [[]]
    size = 0
    for s in specs:
        n = math.prod(s.shape) * elem
        if shards[-1] and size + n > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(s)
        size += n
    return shards


def _header(shard: list[Spec], dtype_name: str, elem: int) -> bytes:
    meta: dict = {"__metadata__": {"format": "pt"}}
    off = 0
    for s in shard:
        n = math.prod(s.shape) * elem
        meta[s.name] = {"dtype": dtype_name, "shape": list(s.shape), "data_offsets": [off, off + n]}
        off += n
    raw = json.dumps(meta, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors pads the header to 8-byte alignment
    return len(raw).to_bytes(8, "little") + raw


def write_models(dirs: list[Path], specs: list[Spec], make: Callable[[Spec], Iterable[torch.Tensor]],
                 dtype: torch.dtype, shard_bytes: int, config: dict) -> None:
    """Write len(dirs) models with the same layout; `make(spec)` returns one tensor per model."""
    elem = torch.empty((), dtype=dtype).element_size()
    shards = _plan_shards(specs, elem, shard_bytes)
    n = len(shards)
    files = [f"model-{i + 1:05d}-of-{n:05d}.safetensors" if n > 1 else "model.safetensors" for i in range(n)]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps(config, indent=2))
        if n > 1:
            total = sum(math.prod(s.shape) for s in specs) * elem
            wmap = {s.name: files[i] for i, sh in enumerate(shards) for s in sh}
            (d / "model.safetensors.index.json").write_text(
                json.dumps({"metadata": {"total_size": total}, "weight_map": wmap}, indent=2))
    for shard, fname in zip(shards, files):
        handles = [open(d / fname, "wb") for d in dirs]
        try:
            head = _header(shard, _DTYPE_NAME[dtype], elem)
            for h in handles:
                h.write(head)
            for s in shard:
                for h, t in zip(handles, make(s)):
                    assert t.shape == s.shape and t.dtype == dtype, s.name
                    h.write(t.contiguous().view(torch.uint8).numpy())
        finally:
            for h in handles:
                h.close()


# --------------------------------------------------------------------------- public entry point

def _seed(name: str, salt: int) -> int:
    return zlib.crc32(name.encode()) * 1009 + salt


def update_scale(spec: Spec, n_layers: int, base_rel: float) -> float:
    """Relative size of the synthetic update for one tensor (bigger in middle layers and q/k)."""
    bump = 1.0
    if spec.layer is not None:
        x = spec.layer / max(n_layers - 1, 1)
        bump = 1.0 + 0.8 * math.exp(-((x - 0.6) / 0.2) ** 2)
    return base_rel * _MODULE_SCALE.get(spec.module, 1.0) * bump


def make_llama_pair(out_dir: Path, preset: str = "1b", shard_bytes: int = 1 << 30,
                    dtype: torch.dtype = torch.bfloat16, n_checkpoints: int = 1,
                    rel_update: float = 1e-2, seed: int = 0) -> tuple[Path, list[Path]]:
    """Write `out_dir/base` and `out_dir/ckpt-{k}` (k = 1..n_checkpoints); return their paths.

    Existing complete output (same preset, dtype, shard size, K and seed, recorded in
    `out_dir/synthetic.json`) is reused, so benchmarks pay the write once.
    """
    out_dir = Path(out_dir)
    base = out_dir / "base"
    ckpts = [out_dir / f"ckpt-{k + 1}" for k in range(n_checkpoints)]
    stamp = out_dir / "synthetic.json"
    key = {"preset": preset, "shard_bytes": shard_bytes, "dtype": str(dtype), "n_checkpoints": n_checkpoints,
           "rel_update": rel_update, "seed": seed}
    if stamp.is_file() and json.loads(stamp.read_text()) == key:
        return base, ckpts
    stamp.unlink(missing_ok=True)
    specs = llama_specs(preset)
    n_layers = PRESETS[preset]["layers"]

    # Random values come from one pool of 16M standard normals read at random offsets (cycled for
    # bigger tensors): drawing 1.2B fresh normals costs minutes on a small CPU, a pool costs seconds.
    gen = torch.Generator().manual_seed(seed)
    pool = torch.randn(1 << 24, generator=gen)

    def draw(n: int, salt: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(salt)
        off = int(torch.randint(0, pool.numel(), (1,), generator=g))
        sign = 1.0 if torch.rand((), generator=g) < 0.5 else -1.0
        reps = -(-(off + n) // pool.numel())  # ceil
        src = pool if reps == 1 else pool.repeat(reps)
        return src[off:off + n].mul(sign)

    def make(s: Spec) -> Iterator[torch.Tensor]:  # one tensor per model, produced lazily
        n = math.prod(s.shape)
        if s.module == "norm":
            w = torch.ones(s.shape)
        else:
            w = draw(n, _seed(s.name, seed)).mul_(0.02).reshape(s.shape)  # float32, one tensor
        noise = draw(n, _seed(s.name, seed + 1)).mul_(0.02 * update_scale(s, n_layers, rel_update))
        noise = noise.reshape(s.shape)
        yield w.to(dtype)
        for k in range(n_checkpoints):
            yield torch.add(w, noise, alpha=(k + 1) / n_checkpoints).to(dtype)

    for d, step in zip(ckpts, range(1, n_checkpoints + 1)):
        d.mkdir(parents=True, exist_ok=True)
        (d / "tunescope.json").write_text(json.dumps({"step": step, "fraction": step / n_checkpoints,
                                                     "method": "synthetic"}))
    write_models([base, *ckpts], specs, make, dtype, shard_bytes, llama_config(preset, dtype))
    stamp.write_text(json.dumps(key))
    return base, ckpts


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Write a synthetic Llama base + perturbed checkpoints.")
    ap.add_argument("out", type=Path)
    ap.add_argument("--preset", default="1b", choices=sorted(PRESETS))
    ap.add_argument("--checkpoints", type=int, default=1)
    ap.add_argument("--shard-mb", type=int, default=1024)
    args = ap.parse_args()
    print(make_llama_pair(args.out, args.preset, args.shard_mb << 20, n_checkpoints=args.checkpoints))
