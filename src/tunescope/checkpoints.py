"""Model directories and training runs on disk.

A *model directory* is a standard Hugging Face directory (config.json, safetensors, tokenizer)
with an optional `tunescope.json` sidecar. A *run directory* holds checkpoints:

    RUN/run.json                       resolved config + provenance of the run
    RUN/log.jsonl                      one line per optimiser step
    RUN/checkpoints/step-000040/       a complete model directory; tunescope.json has step, fraction

`resolve_models` turns command-line paths into an ordered list of model directories.
"""

from __future__ import annotations

import json
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


def resolve_models(paths: list[str | Path]) -> list[ModelRef]:
    """Model directories for CLI arguments: a run directory expands to all its checkpoints."""
    out: list[ModelRef] = []
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise UserError(f"{path} does not exist; pass a model directory or a run directory")
        if is_model_dir(path):
            from tunescope.weights import verify

            verify(path)
            side = read_sidecar(path)
            out.append(ModelRef(path=path, name=path.name, step=side.get("step"),
                                fraction=side.get("fraction"), method=side.get("method")))
        elif (path / CHECKPOINTS).is_dir():
            refs = list_checkpoints(path)
            if not refs:
                raise UserError(f"run directory {path} has no complete checkpoints yet")
            from tunescope.weights import verify

            for ref in refs:
                verify(ref.path)
            out.extend(refs)
        else:
            raise UserError(f"{path} is neither a model directory (no config.json) nor a run directory "
                            f"(no {CHECKPOINTS}/)")
    return out
