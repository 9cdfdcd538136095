"""Update magnitudes: how far each weight matrix moved from the base model, per checkpoint.

For every stored tensor (fused ones split into their parts, see `layout`) and every checkpoint:

    rel_change   = ||W_ckpt - W_base||_F / ||W_base||_F
    delta_fro    = ||W_ckpt - W_base||_F
    base_fro     = ||W_base||_F
    frac_changed = #{ |W_ckpt - W_base| > tolerance } / numel      (absolute tolerance, per entry)
    nonfinite    = #{ entries where W_base or W_ckpt is NaN or Inf }
    (rel_change is inf when the base tensor is all zeros and the checkpoint is not)

This is the weight analysis of "Scalpel vs. Hammer: GRPO amplifies existing capabilities, SFT
replaces them" (Rajani et al., 2025): per layer and matrix type (q, k, v, o, gate, up, down), with
embeddings, LM head and norms reported apart and kept out of the module means. Deviations:
differences are taken in float32 from the stored values (bf16 is cast exactly), because an RL
update is often near bf16's resolution (2^-8 relative) and a bf16 subtraction would round it away;
frac_changed adds the "how sparse is the update" view of Mukherjee et al. (2025, "RL finetunes
small subnetworks"), whose default tolerance of 1e-5 we keep. Norms over NaN/Inf entries are
taken over the finite entries only, and the count is reported in `nonfinite`.

Streaming: tensors are the outer loop and checkpoints the inner one, so each base tensor is read
once however many checkpoints there are. Tensors are read in row blocks (about CHUNK_ELEMS entries
over base + checkpoints) straight from memory-mapped shards (`mapped`), with the next block read
ahead and finished ones released, so memory stays one block set plus small scratch buffers
whatever the model size.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from tunescope.analyse.layout import Part, parts, read_config
from tunescope.analyse.mapped import MappedWeights
from tunescope.checkpoints import ModelRef
from tunescope.errors import UserError
from tunescope.provenance import provenance, write_json
from tunescope.weights import WeightFiles

DEFAULT_TOLERANCE = 1e-5
TILE = 1 << 16  # entries per arithmetic tile (256 KB in float32: stays in L2)
CHUNK_ELEMS = 1 << 26  # entries read per block set (base + checkpoints): 128 MB in bf16

COLUMNS = ["checkpoint", "step", "fraction", "method", "tensor", "part", "layer", "module", "param", "dtype",
           "numel", "rel_change", "delta_fro", "base_fro", "frac_changed", "tolerance", "nonfinite"]


# --------------------------------------------------------------------------- input checks

def check_same_layout(base: WeightFiles, other: WeightFiles) -> None:
    """Same tensor names and shapes, or an error naming the first tensor that differs."""
    for name in base.names():
        if name not in other:
            raise UserError(f"tensor {name} of {base.dir} is missing from {other.dir}; "
                            "compare checkpoints of the same model")
        if other.shape(name) != base.shape(name):
            raise UserError(f"tensor {name} has shape {list(base.shape(name))} in {base.dir} but "
                            f"{list(other.shape(name))} in {other.dir}; the models have different architectures")
    extra = [n for n in other.names() if n not in base]
    if extra:
        raise UserError(f"tensor {extra[0]} of {other.dir} is not in {base.dir}; "
                        "the models have different architectures")


# --------------------------------------------------------------------------- accumulation

@dataclass
class _Acc:
    """Running sums for one (part, checkpoint)."""

    delta_sq: float = 0.0
    changed: int = 0
    nonfinite: int = 0
    numel: int = 0


@dataclass
class _BaseAcc:
    base_sq: float = 0.0
    per_ckpt: list[_Acc] = field(default_factory=list)


def row_blocks(shape: tuple[int, ...], chunk_elems: int) -> list[tuple[int, int]]:
    """Row ranges that cover a tensor in blocks of about chunk_elems entries."""
    if not shape:
        return [(0, 1)]
    per_row = max(1, math.prod(shape[1:]))
    step = max(1, chunk_elems // per_row)
    return [(r, min(r + step, shape[0])) for r in range(0, shape[0], step)] or [(0, 0)]


Block = tuple[str, int, torch.Tensor, list[torch.Tensor]]  # name, first row, base rows, checkpoint rows


def read_blocks(base: MappedWeights, ckpts: list[MappedWeights], names: list[str],
                chunk_elems: int) -> Iterator[Block]:
    """Every tensor in row blocks: base rows, then the same rows of every checkpoint (stored dtype, views).

    The next block is requested from disk while this one is being used, and this one's pages are
    released from the process once the consumer asks for the next.
    """
    plan = [(n, r0, r1) for n in names for r0, r1 in row_blocks(base.w.shape(n), chunk_elems)]
    models = [base, *ckpts]
    for i, (name, r0, r1) in enumerate(plan):
        if i + 1 < len(plan):
            for m in models:
                m.willneed(*plan[i + 1])
        views = [m.rows(name, r0, r1) for m in models]
        yield name, r0, views[0], views[1:]
        del views
        for m in models:
            m.release(name, r0, r1)


class _Tiles:
    """Scratch buffers for one tile of TILE entries, reused so that the arithmetic stays in cache.

    The inner loop is numpy on tiles of 64K entries, single-threaded: on a busy machine this is
    several times faster than whole-block multi-threaded torch ops (allocation page faults and
    thread wake-ups dominate those).
    """

    def __init__(self, dtype: np.dtype):
        self.dtype = np.dtype(dtype)
        self.base = np.empty(TILE, self.dtype)
        self.delta = np.empty(TILE, self.dtype)
        self.absd = np.empty(TILE, self.dtype)
        self.mask = np.empty(TILE, bool)

    def load(self, t: torch.Tensor, out: np.ndarray) -> np.ndarray:
        """A flat tile of a stored tensor as float32 (float64 for F64), into `out`; exact."""
        o = out[: t.numel()]
        if t.dtype == torch.bfloat16 and self.dtype == np.float32:  # bf16 is the top half of a float32
            np.left_shift(t.view(torch.int16).numpy().view(np.uint16), 16, out=o.view(np.uint32),
                          dtype=np.uint32)
        elif t.dtype in (torch.float32, torch.float16, torch.float64):
            np.copyto(o, t.numpy(), casting="unsafe")
        else:
            np.copyto(o, t.to(torch.float64).numpy(), casting="unsafe")
        return o


def _sq(x: np.ndarray) -> float:
    return float(np.dot(x, x))


def _add_tile(c: np.ndarray, b: np.ndarray, tol: float, tiles: _Tiles, acc: _Acc) -> None:
    """Running sums for one tile: c (the checkpoint's values, overwritten by the update) minus b."""
    d = np.subtract(c, b, out=c)
    sq = _sq(d)
    acc.numel += d.size
    if not math.isfinite(sq):  # NaN/Inf in base or checkpoint: count them, sum over the rest
        bad = ~np.isfinite(d)
        acc.nonfinite += int(np.count_nonzero(bad))
        d[bad] = 0.0
        sq = _sq(d)
    acc.delta_sq += sq
    if tol > 0:
        absd = np.abs(d, out=tiles.absd[: d.size])
        acc.changed += int(np.count_nonzero(np.greater(absd, tol, out=tiles.mask[: d.size])))
    else:
        acc.changed += int(np.count_nonzero(d))


def diff_block(ps: list[Part], r0: int, base_rows: torch.Tensor, ckpt_rows: list[torch.Tensor], tol: float,
               accs: list[_BaseAcc], tiles: _Tiles) -> None:
    """Add one row block of a tensor, against every checkpoint, to the parts' running sums.

    Tiles outer, checkpoints inner: each base tile is converted once and stays in cache.
    """
    for a, p in zip(accs, ps):
        bp = p.view(base_rows, r0)  # (rows, ...) stored dtype
        if bp is None:
            continue
        cps = [p.view(c, r0) for c in ckpt_rows]
        per_row = max(1, bp[0].numel()) if bp.dim() > 1 else 1
        step = max(1, TILE // per_row)
        for s in range(0, bp.shape[0], step):
            flat = bp[s:s + step].reshape(-1)
            if flat.numel() > TILE:  # one row longer than a tile: go entry by entry range
                for e in range(0, flat.numel(), TILE):
                    _tile_all(flat[e:e + TILE], [c[s:s + step].reshape(-1)[e:e + TILE] for c in cps], tol, a, tiles)
            else:
                _tile_all(flat, [c[s:s + step].reshape(-1) for c in cps], tol, a, tiles)


def _tile_all(bt: torch.Tensor, cts: list[torch.Tensor], tol: float, a: _BaseAcc, tiles: _Tiles) -> None:
    b = tiles.load(bt, tiles.base)
    sq = _sq(b)
    a.base_sq += sq if math.isfinite(sq) else _sq(np.where(np.isfinite(b), b, 0.0))
    for acc, ct in zip(a.per_ckpt, cts):
        _add_tile(tiles.load(ct, tiles.delta), b, tol, tiles, acc)


# --------------------------------------------------------------------------- public API

def diff(base: Path, models: list[ModelRef], out: Path, tolerance: float = DEFAULT_TOLERANCE,
         parquet: bool = False, chunk_elems: int | None = None, progress: bool = True) -> pd.DataFrame:
    """Diff every checkpoint in `models` against `base`; write the tables next to `out`; return the long table.

    Files: `out` (CSV, long format, one row per tensor part and checkpoint), `<stem>.by_module.csv`,
    `<stem>.by_layer.csv`, `<stem>.provenance.json`, and `out` with suffix .parquet when asked.
    """
    if tolerance < 0:
        raise UserError(f"tolerance must be >= 0, got {tolerance}")
    if not models:
        raise UserError("no checkpoints to compare; pass at least one model or run directory")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    base_w = WeightFiles(base)
    ckpts = [WeightFiles(m.path) for m in models]
    for c in ckpts:
        check_same_layout(base_w, c)
    config = read_config(base)
    names = base_w.names()

    if chunk_elems is None:  # ~64M entries in flight per block set, whatever the number of checkpoints
        chunk_elems = max(1 << 20, CHUNK_ELEMS // (len(ckpts) + 1))
    total = sum(base_w.nbytes(n) for n in names) * (len(ckpts) + 1)
    bar = tqdm(total=total, desc="diff", unit="B", unit_scale=True, disable=not progress)
    compute = np.float64 if any(c.dtype(n) == "F64" for c in [base_w, *ckpts] for n in names) else np.float32
    tiles = _Tiles(compute)
    rows: list[dict] = []
    current: tuple[str, list[Part], list[_BaseAcc]] | None = None
    mapped = [MappedWeights(w) for w in (base_w, *ckpts)]
    for name, r0, b, cs in read_blocks(mapped[0], mapped[1:], names, chunk_elems):
        if current is None or current[0] != name:
            if current is not None:
                rows += _rows(*current, models, ckpts, tolerance)
            ps = parts(name, base_w.shape(name), config)
            current = (name, ps, [_BaseAcc(per_ckpt=[_Acc() for _ in ckpts]) for _ in ps])
        diff_block(current[1], r0, b, cs, tolerance, current[2], tiles)
        bar.update(b.numel() * b.element_size() * (len(ckpts) + 1))
    if current is not None:
        rows += _rows(*current, models, ckpts, tolerance)
    bar.close()
    rows.sort(key=lambda r: r["_k"])  # stable: checkpoint, then tensor file order
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["layer"] = table["layer"].astype("Int64")
    table["step"] = table["step"].astype("Int64")

    warn_nonfinite(table)
    by_module, by_layer = summaries(table)
    _write_csv(table, out)
    _write_csv(by_module, out.with_name(out.stem + ".by_module.csv"))
    _write_csv(by_layer, out.with_name(out.stem + ".by_layer.csv"))
    if parquet:
        tmp = out.with_name(out.stem + ".parquet.tmp")
        table.to_parquet(tmp, index=False)
        os.replace(tmp, out.with_suffix(".parquet"))
    write_json(out.with_name(out.stem + ".provenance.json"), provenance(
        config={"base": str(base), "models": [str(m.path) for m in models], "tolerance": tolerance,
                "chunk_elems": chunk_elems, "compute_dtype": np.dtype(compute).name},
        seed=None, stage="analyse.diff", n_tensors=len(names)))
    return table


def warn_nonfinite(table: pd.DataFrame, limit: int = 10) -> None:
    """One warning line on stderr per checkpoint tensor with NaN or inf entries (their norms and
    counts are taken over the finite entries, which can hide a diverged run)."""
    bad = table[table["nonfinite"] > 0]
    for r in bad.head(limit).itertuples():
        print(f"warning: {r.checkpoint}: {r.tensor}{f' [{r.part}]' if r.part else ''} "
              f"has {r.nonfinite} non-finite entries (NaN or inf, in it or in the base); its row is over the finite "
              "ones only", file=sys.stderr)
    if len(bad) > limit:
        print(f"warning: {len(bad) - limit} more tensor rows with non-finite entries (column nonfinite)", file=sys.stderr)


def _rows(name: str, ps: list[Part], accs: list[_BaseAcc], models: list[ModelRef], ckpts: list[WeightFiles],
          tolerance: float) -> list[dict]:
    rows = []
    for p, a in zip(ps, accs):
            base_fro = math.sqrt(a.base_sq)
            for k, (m, ck, c) in enumerate(zip(models, ckpts, a.per_ckpt)):
                delta_fro = math.sqrt(c.delta_sq)
                rows.append({
                    "checkpoint": m.name, "step": m.step, "fraction": m.fraction, "method": m.method,
                    "tensor": name, "part": p.part, "layer": p.layer, "module": p.module, "param": p.param,
                    "dtype": ck.dtype(name), "numel": c.numel,
                    "rel_change": delta_fro / base_fro if base_fro > 0 else (0.0 if delta_fro == 0 else math.inf),
                    "delta_fro": delta_fro, "base_fro": base_fro,
                    "frac_changed": c.changed / c.numel if c.numel else 0.0,
                    "tolerance": tolerance, "nonfinite": c.nonfinite, "_k": k,
                })
    return rows


def summaries(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-module and per-layer summaries over the q/k/v/o/gate/up/down weight parts.

    by_module: one row per checkpoint and module: mean/median/max of rel_change over layers, and the
    pooled change sqrt(sum delta_fro^2) / sqrt(sum base_fro^2); plus module "all" (every matrix).
    by_layer: one row per checkpoint, layer and module (rel_change), plus module "mean" per layer.
    """
    from tunescope.naming import MODULES

    keys = ["checkpoint", "step", "fraction", "method"]
    t = table[(table["param"] == "weight") & table["module"].isin(MODULES)].copy()
    t["delta_sq"], t["base_sq"] = t["delta_fro"] ** 2, t["base_fro"] ** 2

    def agg(g: pd.core.groupby.DataFrameGroupBy) -> pd.DataFrame:
        r = g.agg(mean_rel_change=("rel_change", "mean"), median_rel_change=("rel_change", "median"),
                  max_rel_change=("rel_change", "max"), delta_sq=("delta_sq", "sum"),
                  base_sq=("base_sq", "sum"), mean_frac_changed=("frac_changed", "mean"),
                  n_matrices=("rel_change", "size"), nonfinite=("nonfinite", "sum")).reset_index()
        r["pooled_rel_change"] = (r["delta_sq"] / r["base_sq"]) ** 0.5
        return r.drop(columns=["delta_sq", "base_sq"])

    per_mod = agg(t.groupby(keys + ["module"], dropna=False, sort=False))
    all_mod = agg(t.groupby(keys, dropna=False, sort=False)).assign(module="all")
    by_module = pd.concat([per_mod, all_mod[per_mod.columns]], ignore_index=True)

    lay = t.groupby(keys + ["layer", "module"], dropna=False, sort=False)["rel_change"].mean().reset_index()
    mean = lay.groupby(keys + ["layer"], dropna=False, sort=False)["rel_change"].mean().reset_index()
    by_layer = pd.concat([lay, mean.assign(module="mean")[lay.columns]], ignore_index=True)

    # order: checkpoints as given, then layer, then module in the study's order
    ck = {c: i for i, c in enumerate(dict.fromkeys(table["checkpoint"]))}
    mod = {m: i for i, m in enumerate((*MODULES, "all", "mean"))}
    by_module = by_module.assign(_c=by_module["checkpoint"].map(ck), _m=by_module["module"].map(mod))
    by_module = by_module.sort_values(["_c", "_m"], kind="stable").drop(columns=["_c", "_m"])
    by_layer = by_layer.assign(_c=by_layer["checkpoint"].map(ck), _m=by_layer["module"].map(mod))
    by_layer = by_layer.sort_values(["_c", "layer", "_m"], kind="stable").drop(columns=["_c", "_m"])
    return by_module.reset_index(drop=True), by_layer.reset_index(drop=True)


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)
