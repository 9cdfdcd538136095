"""`restore`: apply one weight edit to every chosen tensor of TARGET and write a model directory.

    restore(ref="runs/sft/checkpoints/step-000140", target="runs/sft/checkpoints/step-001600",
            out="runs/restored", method="direction", k=0.2)

Streaming: REF and TARGET are read one tensor at a time (`WeightFiles`) and the result is written
into size-capped shards (`ShardWriter`) inside a temporary directory that is renamed to `out` only
when everything succeeded (`atomic_dir`). Peak memory is a few copies of the largest matrix.
Tensors that are not edited are copied bit for bit from TARGET; config, tokenizer and generation
config come from TARGET too, so `AutoModelForCausalLM.from_pretrained(out)` loads the result.
A sidecar `tunescope.json` names REF, TARGET, the method, its options and per-tensor figures.

Methods (formulas in `edits.py`): direction, full, values, reset, interpolate.

Which tensors: every tensor of the transformer blocks (SVD methods keep only the 2-D ones, so norms
stay TARGET's), narrowed by selectors ("q,k@0-3", as in `tunescope.naming`) and by `layers`.
Tensors outside the blocks (embeddings, LM head, final norm) are edited only with
`include_embeddings=True`. `layers` is "0-3" (inclusive indices) or "0%-25%" (a share of depth,
rounded by the one rule of `tunescope.naming`: "0%-25%" of 32 layers is 0-7, "60%-80%" is 19-25).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from tunescope.checkpoints import SIDECAR, read_sidecar
from tunescope.errors import UserError
from tunescope.fsutil import atomic_dir, check_outside
from tunescope.intervene import METHODS, edits
from tunescope.naming import depth_of, layer_range, parse, parse_selector
from tunescope.naming import select as select_names
from tunescope.provenance import provenance, write_json
from tunescope.weights import ShardWriter, WeightFiles

SVD_METHODS = ("direction", "full", "values")
SVDS_PER_EDIT = {"direction": 2.0, "full": 2.0, "values": 2.0}  # REF's and TARGET's decompositions (values:
# svdvals of REF, counted as a full SVD: an upper bound); the rebuild U diag(σ) Vᵀ is small beside them
# Files copied from TARGET besides the weights (config, tokenizer, generation config, remote code).
AUX_FILES = ("config.json", "generation_config.json", "tokenizer*", "special_tokens_map.json",
             "added_tokens.json", "vocab.*", "merges.txt", "chat_template.*", "preprocessor_config.json", "*.py")


# ---------------------------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class RestoreOptions:
    method: str  # one of METHODS
    k: float = 0.2  # direction/full: fraction of the rank restored from REF (top k, and tail k with `tail`)
    tail: bool = False  # direction/full: also restore the bottom k directions
    layers: str | None = None  # "0-3" or "0-25%"; required for reset, narrows the other methods
    alpha: float = 0.5  # interpolate: weight of REF, (1 - alpha)·T + alpha·R
    select: list[str] | None = None  # selectors such as "q,k@0-3"; None: every block tensor
    include_embeddings: bool = False  # also edit embeddings, LM head and final norm
    precision: str = "float32"  # SVD / arithmetic dtype: float32 (default) or float64
    device: str = "cpu"  # where the SVDs run: "cpu" or "cuda[:i]" (tensors stream through it one at a time)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"unknown method {self.method!r}; use one of {', '.join(METHODS)}")
        if not (isinstance(self.k, int | float) and 0.0 <= self.k <= 1.0):
            raise UserError(f"k = {self.k} is outside [0, 1]; give the fraction of the rank to restore")
        if not (isinstance(self.alpha, int | float) and 0.0 <= self.alpha <= 1.0):
            raise UserError(f"alpha = {self.alpha} is outside [0, 1]; 0 gives TARGET, 1 gives REF")
        if self.precision not in ("float32", "float64"):
            raise UserError(f"precision {self.precision!r} is not float32 or float64")
        if self.device != "cpu":
            if not self.device.startswith("cuda"):
                raise UserError(f"device {self.device!r}: use cpu or cuda")
            if not torch.cuda.is_available():
                raise UserError(f"device {self.device!r}: no CUDA GPU is visible; use --device cpu")
        if self.method == "reset" and not self.layers:
            raise UserError("method reset needs a layer range, e.g. --layers 0-25% or --layers 0-3")
        for text in self.select or []:
            sel = parse_selector(text)
            outside = sorted((sel.modules or set()) & {"embed", "lm_head"})
            if outside and not self.include_embeddings:
                raise UserError(f"selector '{text}' names {outside[0]}; add --include-embeddings to edit it")


def count_layers(model_dir: Path, names: list[str]) -> int:
    """Number of transformer blocks: config.json's num_hidden_layers, else from tensor names."""
    cfg_file = model_dir / "config.json"
    if cfg_file.is_file():
        try:
            cfg = json.loads(cfg_file.read_text())
        except json.JSONDecodeError:
            raise UserError(f"{cfg_file} is not valid JSON; restore it from the checkpoint") from None
        for c in (cfg, cfg.get("text_config") or {}):
            if isinstance(c.get("num_hidden_layers"), int):
                return c["num_hidden_layers"]
    return depth_of(names)


def chosen_tensors(names: list[str], shapes: dict[str, tuple[int, ...]], opts: RestoreOptions,
                   layer_range: tuple[int, int] | None) -> list[str]:
    """Names of the tensors the method edits, in file order (see module docstring)."""
    block = [n for n in names if parse(n).layer is not None]
    chosen = select_names(block, opts.select) if opts.select else block
    if layer_range is not None:
        lo, hi = layer_range
        chosen = [n for n in chosen if lo <= parse(n).layer <= hi]
    if opts.include_embeddings:
        chosen += [n for n in names if parse(n).layer is None]
    if opts.method in SVD_METHODS:
        chosen = [n for n in chosen if len(shapes[n]) == 2]
    keep = set(chosen)
    chosen = [n for n in names if n in keep]
    if not chosen:
        raise UserError("the selection holds no tensor this method can edit; check --select and --layers")
    return chosen


# ---------------------------------------------------------------------------------------------
# One tensor


def edit_tensor(opts: RestoreOptions, ref: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The edited tensor (same shape and dtype as `target`)."""
    dtype = torch.float64 if opts.precision == "float64" else torch.float32
    if opts.method == "reset":
        return ref.to(target.dtype)
    if opts.device != "cpu":
        return edit_tensor(replace(opts, device="cpu"), ref.to(opts.device), target.to(opts.device)).cpu()
    if opts.method == "interpolate":
        return edits.interpolate(ref, target, opts.alpha, dtype=dtype)
    if opts.method == "values":
        return edits.value_restore(ref, target, dtype=dtype)
    fn = edits.direction_restore if opts.method == "direction" else edits.full_restore
    return fn(ref, target, opts.k, tail=opts.tail, dtype=dtype)


def _record(name: str, opts: RestoreOptions, ref: torch.Tensor, target: torch.Tensor,
            new: torch.Tensor) -> dict[str, Any]:
    """Per-tensor figures for the sidecar: restored directions, distance to TARGET and to REF."""
    t, r, w = target.float(), ref.float(), new.float()
    row: dict[str, Any] = {"name": name, "shape": list(target.shape)}
    if opts.method in ("direction", "full"):
        rank = min(target.shape)
        mask = edits.restored_positions(rank, opts.k, opts.tail)
        top = edits.n_directions(opts.k, rank)
        row.update(rank=rank, top=top, tail=int(mask.sum()) - top)
    row["rel_to_target"] = float(torch.linalg.vector_norm(w - t) / max(torch.linalg.vector_norm(t), 1e-30))
    row["rel_to_ref"] = float(torch.linalg.vector_norm(w - r) / max(torch.linalg.vector_norm(r), 1e-30))
    return row


# ---------------------------------------------------------------------------------------------
# A whole model directory


def _check_pair(ref: WeightFiles, target: WeightFiles, chosen: list[str]) -> None:
    """Same shapes for every tensor the two share; every edited tensor present in REF."""
    for name in target.names():
        if name in ref and ref.shape(name) != target.shape(name):
            raise UserError(f"REF and TARGET differ in shape at {name}: {list(ref.shape(name))} vs "
                            f"{list(target.shape(name))}; pass two checkpoints of one architecture")
    for name in chosen:
        if name not in ref:
            raise UserError(f"tensor {name} is in TARGET but missing from REF {ref.dir}")


def _check_finite(ref: WeightFiles, target: WeightFiles, chosen: list[str]) -> None:
    """Every tensor to edit is finite in REF and TARGET, or an error naming them: an SVD of a matrix
    with NaN or inf fails, and any other edit of one would write NaN weights. It reads the edited
    tensors once more before the edit, so that a bad input is answered before any work starts."""
    bad = [f"{side} {name} ({int((~torch.isfinite(w)).sum())} values)" for name in chosen
           for side, files in (("REF", ref), ("TARGET", target)) for w in [files.get(name)]
           if not bool(torch.isfinite(w).all())]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise UserError(f"non-finite weights (NaN or inf) in {len(bad)} tensor(s) to edit: {', '.join(bad[:3])}{more}; "
                        "the edit would not be finite: pass checkpoints whose weights are finite, or leave these "
                        "tensors out with --select")


def _copy_aux(src: Path, dst: Path) -> list[str]:
    copied = []
    for pattern in AUX_FILES:
        for f in sorted(src.glob(pattern)):
            if f.is_file() and not (dst / f.name).exists():
                shutil.copy2(f, dst / f.name)
                copied.append(f.name)
    return copied


def restore(ref: str | Path, target: str | Path, out: str | Path, method: str, *, k: float = 0.2,
            tail: bool = False, layers: str | None = None, alpha: float = 0.5, select: list[str] | None = None,
            include_embeddings: bool = False, precision: str = "float32", device: str = "cpu",
            max_shard_bytes: int = 2 * 1024**3, progress: bool = True) -> Path:
    """Write TARGET with `method` applied against REF to the new model directory `out`; return `out`.

    Raises UserError (nothing written) for an unknown method, k or alpha outside [0, 1], a layer
    range outside the model, REF/TARGET of different shapes, or a non-empty `out`.
    """
    opts = RestoreOptions(method=method, k=k, tail=tail, layers=layers, alpha=alpha,
                          select=list(select) if select else None, include_embeddings=include_embeddings,
                          precision=precision, device=device)
    ref, target, out = Path(ref), Path(target), Path(out)
    check_outside(out, {"REF": ref, "TARGET": target})
    if not (target / "config.json").is_file():
        raise UserError(f"TARGET {target} has no config.json; pass a Hugging Face model directory")
    ref_w, tgt_w = WeightFiles(ref), WeightFiles(target)
    names = tgt_w.names()
    n_layers = count_layers(target, names)
    layers = layer_range(opts.layers, n_layers) if opts.layers else None
    chosen = chosen_tensors(names, {n: tgt_w.shape(n) for n in names}, opts, layers)
    _check_pair(ref_w, tgt_w, chosen)
    _check_finite(ref_w, tgt_w, chosen)
    edit = set(chosen)

    if progress and method in SVD_METHODS:  # the SVDs dominate: say how long before starting them
        import sys

        from tunescope.analyse.spectrum import estimate_line, svd_rate

        dev = torch.device(device)
        where = f"{torch.get_num_threads()} threads" if dev.type == "cpu" else str(dev)
        shapes = [tgt_w.shape(n) for n in chosen]
        rate = svd_rate(dev, torch.float64 if precision == "float64" else torch.float32)
        print(estimate_line(shapes, SVDS_PER_EDIT[method], rate, where), file=sys.stderr, flush=True)

    records = []
    with atomic_dir(out) as tmp:
        writer = ShardWriter(tmp, max_shard_bytes=max_shard_bytes)
        for name in tqdm(names, desc=f"restore ({method})", unit="tensor", disable=not progress):
            t = tgt_w.get(name)
            if name in edit:
                r = ref_w.get(name)
                t0 = time.perf_counter()
                new = edit_tensor(opts, r, t)
                seconds = time.perf_counter() - t0
                records.append(_record(name, opts, r, t, new) | {"seconds": round(seconds, 4)})
                t = new
            writer.add(name, t)
        writer.close()
        copied = _copy_aux(target, tmp)
        side = {
            "intervention": {
                "method": method, "ref": str(ref.resolve()), "target": str(target.resolve()),
                "options": asdict(opts), "layer_range": list(layers) if layers else None,
                "n_layers": n_layers, "edited_tensors": len(records), "copied_files": copied,
                "tensors": records,
            },
            "target_sidecar": read_sidecar(target),
            "provenance": provenance(config=asdict(opts)),
        }
        write_json(tmp / SIDECAR, side)
    return out

