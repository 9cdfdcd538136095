"""What each kind of study stage returns: one typed record per kind, read back from stage.json.

A stage function returns one of these; the stage cache stores it as plain JSON (`result` in
stage.json, paths rewritten to the stage's final directory) and `read` turns a finished stage's
record back into it, so the runner and the report read `read(rec, BaseResult).model` where
they once read `rec["result"]["model"]`, and a missing or misspelt field is a KeyError here, not
a silent None three stages later.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar


@dataclass(frozen=True)
class BaseResult:
    model: str  # a model directory, or a hub id resolved through the Hugging Face cache
    n_layers: int  # transformer blocks: layer shares ("60%-80%") resolve against this


@dataclass(frozen=True)
class TrainResult:
    run: str  # the run directory (run.json, checkpoints/step-NNNNNN)
    init: str  # the model the run started from
    init_name: str  # "base", or the source run's checkpoint name
    init_step: int | None  # the source checkpoint's step (0 for the base)


@dataclass(frozen=True)
class EvalResult:
    models: list[str]  # the model directories scored, in order
    torch_threads: int | None


@dataclass(frozen=True)
class DiffResult:
    table: str  # diff.csv


@dataclass(frozen=True)
class SpectrumResult:
    reference: str
    target: str
    reference_step: int | None
    target_step: int | None


@dataclass(frozen=True)
class EditResult:
    model: str  # the edited model directory
    reference: str
    target: str
    reference_step: int | None
    target_step: int | None
    suite: str | None  # the suite its recovery is measured on


@dataclass(frozen=True)
class ReportResult:
    report: str  # report.html


R = TypeVar("R")


def read(record: dict[str, Any], kind: type[R]) -> R:
    """The typed result of a finished stage's record (its stage.json)."""
    data = record["result"]
    return kind(**{f.name: data[f.name] for f in dataclasses.fields(kind)})  # type: ignore[arg-type]


def base_model(inputs: dict[str, dict[str, Any]]) -> Path:
    """The base model's directory (or hub id) from a stage's inputs."""
    return Path(read(inputs["base"], BaseResult).model)
