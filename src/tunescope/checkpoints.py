"""Model directories and training runs on disk.

A *model directory* is a standard Hugging Face directory (config.json, safetensors, tokenizer)
with an optional `tunescope.json` sidecar. A *run directory* holds checkpoints:

    RUN/run.json                       resolved config + provenance of the run
    RUN/log.jsonl                      one line per optimiser step
    RUN/checkpoints/step-000040/       a complete model directory; tunescope.json has step, fraction

Runs trained elsewhere are read in their own layouts (`foreign_checkpoints`), ordered by step:

    RUN/checkpoint-500/                          Hugging Face Trainer, TRL (trainer_state.json: max_steps)
    RUN/global_step_500/actor/huggingface/       verl (FSDP shards alone: merge them first)
    RUN/step_500/, RUN/global_step_500/[MODEL/]  open-instruct, OpenRLHF (a model directory, or one inside)

The fraction of training is the step over `max_steps` of the checkpoint's trainer_state.json when
there is one, else over the largest step found. A DeepSpeed ZeRO checkpoint without consolidated
weights is an error naming `zero_to_fp32.py`. `resolve_models` turns command-line paths into an
ordered list of model directories.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunescope.errors import UserError

SIDECAR = "tunescope.json"
CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class ModelRef:
    """A model directory, with its step and fraction of training when it is a checkpoint."""

    path: Path
    name: str  # label for tables: "<run>/step-000040" or the directory name
    step: int | None = None
    fraction: float | None = None
    method: str | None = None

    def sidecar(self) -> dict[str, Any]:
        return read_sidecar(self.path)


def read_sidecar(path: str | Path) -> dict[str, Any]:
    f = Path(path) / SIDECAR
    if not f.is_file():
        return {}
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError:
        raise UserError(f"{f} is not valid JSON; delete it or restore it from the run") from None


def is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def checkpoint_dir(run: str | Path, step: int) -> Path:
    return Path(run) / CHECKPOINTS / f"step-{step:06d}"


def list_checkpoints(run: str | Path) -> list[ModelRef]:
    """Complete checkpoints of a run, ordered by step (temporary or partial ones are skipped)."""
    run = Path(run)
    refs = []
    for d in sorted((run / CHECKPOINTS).glob("step-*")):
        if not d.is_dir() or not is_model_dir(d) or not (d / SIDECAR).is_file():
            continue
        side = read_sidecar(d)
        refs.append(ModelRef(path=d, name=f"{run.name}/{d.name}", step=int(side.get("step", d.name[5:])),
                             fraction=side.get("fraction"), method=side.get("method")))
    return sorted(refs, key=lambda r: r.step or 0)


_FOREIGN = re.compile(r"^(checkpoint-|global_step_|global_step|step_)(\d+)$")


def _has_weights(d: Path) -> bool:
    return any(f.is_file() for pattern in ("*.safetensors", "*.bin") for f in d.glob(pattern))


def _model_inside(d: Path) -> Path | None:
    """The model directory a foreign step directory holds: itself, verl's actor/huggingface, or its
    one subdirectory with a config.json. Raises when only unconsolidated shards are there."""
    for cand in (d, d / "actor" / "huggingface"):
        if is_model_dir(cand) and _has_weights(cand):
            return cand
    subs = [c for c in sorted(d.iterdir()) if c.is_dir() and is_model_dir(c) and _has_weights(c)]
    if len(subs) == 1:
        return subs[0]
    if (d / "zero_to_fp32.py").is_file() or any(d.glob("global_step*/*_model_states.pt")):
        raise UserError(f"{d} holds DeepSpeed ZeRO shards but no consolidated weights; run "
                        f"`python {d / 'zero_to_fp32.py'} {d} {d}/consolidated --safe_serialization` "
                        "(DeepSpeed's zero_to_fp32.py, saved beside them), then pass that directory")
    if any((d / "actor").glob("model_world_size_*_rank_*.pt")):
        raise UserError(f"{d / 'actor'} holds verl FSDP shards but no huggingface/ weights; merge them with "
                        f"`python -m verl.model_merger merge --backend fsdp --local_dir {d / 'actor'} "
                        f"--target_dir {d / 'actor' / 'huggingface'}`")
    return None


def _max_steps(d: Path) -> int | None:
    state = d / "trainer_state.json"
    try:
        return int(json.loads(state.read_text())["max_steps"]) if state.is_file() else None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def foreign_checkpoints(run: str | Path) -> list[ModelRef]:
    """The checkpoints of a run trained outside tunescope (layouts above), ordered by step."""
    run = Path(run)
    found: dict[int, tuple[Path, Path]] = {}
    for d in sorted(run.iterdir()) if run.is_dir() else []:
        m = _FOREIGN.match(d.name)
        if not (m and d.is_dir()):
            continue
        model = _model_inside(d)
        if model is None:
            continue
        step = int(m.group(2))
        if step in found:
            raise UserError(f"{run} has two checkpoints of step {step} ({found[step][0].name}, {d.name}); "
                            "pass the model directories themselves")
        found[step] = (d, model)
    last = max(found, default=0)
    refs = []
    for step, (d, model) in sorted(found.items()):
        total = _max_steps(d) or _max_steps(model) or last
        refs.append(ModelRef(path=model, name=f"{run.name}/{d.name}", step=step,
                             fraction=round(step / total, 6) if total else None))
    return refs


def resolve_models(paths: list[str | Path]) -> list[ModelRef]:
    """Model directories for CLI arguments: a run directory expands to all its checkpoints."""
    out: list[ModelRef] = []
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise UserError(f"{path} does not exist; pass a model directory or a run directory")
        # a named model directory is checked whole here; a run's checkpoints by the command that reads
        # them (an evaluation sweep records a broken one and goes on, `diff` stops on it with one line)
        foreign = [] if (path / CHECKPOINTS).is_dir() else foreign_checkpoints(path)
        if foreign:  # a run trained elsewhere (a model saved at its root beside the checkpoints is not read)
            out.extend(foreign)
        elif is_model_dir(path):
            from tunescope.weights import verify

            verify(path)
            side = read_sidecar(path)
            out.append(ModelRef(path=path, name=path.name, step=side.get("step"),
                                fraction=side.get("fraction"), method=side.get("method")))
        elif (path / CHECKPOINTS).is_dir():
            refs = list_checkpoints(path)
            if not refs:
                raise UserError(f"run directory {path} has no complete checkpoints yet")
            out.extend(refs)
        else:
            raise UserError(f"{path} is neither a model directory (no config.json) nor a run directory "
                            f"({CHECKPOINTS}/step-N/, or checkpoint-N/, global_step_N/, step_N/ of other trainers)")
    return out
