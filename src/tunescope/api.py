"""The notebook API: the calls a notebook needs, taking paths (model directories, run directories in
any layout `tunescope.checkpoints` reads, or hub ids in the local Hugging Face cache) and returning
DataFrames; output files are optional (a temporary directory when `out` is None).

    import tunescope as ts
    moved = ts.diff("models/base", "runs/my_trl_run")            # every checkpoint against the base
    moved.groupby(["step", "module"])["rel_change"].mean()
    spec = ts.spectrum("models/base", "runs/my_trl_run/checkpoint-500")["per_matrix"]
    scores = ts.evaluate("runs/my_trl_run", suites=["maths", "game24_ood"], n=64)
    study = ts.load_study("runs/demo")                              # a finished study's tables and findings
    study.tables["scorecard"]

Each raises `tunescope.errors.UserError` with one line saying what to fix, as the CLI does.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tunescope.errors import UserError


def _local(model: str | Path) -> Path:
    """A local directory for a path or a hub id (resolved through the local Hugging Face cache)."""
    p = Path(model).expanduser()
    if p.exists():
        return p
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(model), allow_patterns=["*.json", "*.safetensors", "*.jinja", "*.txt",
                                                                   "tokenizer*"]))
    except Exception as e:  # offline, unknown id, no access: one line
        raise UserError(f"{model} is neither a local path nor a model in the Hugging Face cache "
                        f"({type(e).__name__}); pass a model directory or download it first") from None


def _out(out: str | Path | None, name: str) -> Path:
    return Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="tunescope-")) / name


def diff(base: str | Path, *models: str | Path, out: str | Path | None = None, tolerance: float | None = None,
         progress: bool = False) -> pd.DataFrame:
    """Relative weight change of every checkpoint of `models` (model or run directories) against `base`,
    one row per tensor part and checkpoint (columns as `tunescope diff` writes them).

    >>> ts.diff("models/base", "runs/sft", "runs/grpo").groupby("checkpoint")["rel_change"].mean()
    """
    from tunescope.analyse.diff import DEFAULT_TOLERANCE
    from tunescope.analyse.diff import diff as _diff
    from tunescope.checkpoints import resolve_models

    refs = resolve_models([_local(m) for m in models])
    return _diff(_local(base), refs, _out(out, "diff.csv"),
                 tolerance=DEFAULT_TOLERANCE if tolerance is None else tolerance, progress=progress)


def spectrum(reference: str | Path, target: str | Path, out: str | Path | None = None, null_draws: int = 3,
             select: list[str] | None = None, progress: bool = False) -> dict[str, pd.DataFrame]:
    """Singular values and directions of every matrix of `target` against `reference`:
    {"per_matrix": ..., "per_rank": ...} (as `tunescope spectrum` writes them).

    >>> ts.spectrum("models/base", "runs/sft/checkpoints/step-000060")["per_matrix"]
    """
    from tunescope.analyse.spectrum import spectrum as _spectrum

    return _spectrum(_local(reference), _local(target), _out(out, "spectrum.csv"), select=select,
                     null_draws=null_draws, progress=progress)


def restore(reference: str | Path, target: str | Path, out: str | Path, method: str = "direction",
            **options: Any) -> Path:
    """Write `target` with `method` (full, direction, values, reset, interpolate) applied against
    `reference` to the new model directory `out`; return `out`. Options as `tunescope restore`'s
    (k, tail, layers, alpha, select, include_embeddings, precision, device).

    >>> ts.restore("runs/sft/checkpoints/step-000006", "runs/sft/checkpoints/step-000060",
    ...            "models/restored", method="direction", k=0.2)
    """
    from tunescope.intervene.restore import restore as _restore

    return _restore(_local(reference), _local(target), out, method, progress=options.pop("progress", False),
                    **options)


def evaluate(*models: str | Path, suites: list[str] | tuple[str, ...] = ("maths",), out: str | Path | None = None,
             reference: str | Path | None = None, **settings: Any) -> pd.DataFrame:
    """Score every checkpoint of `models` on `suites`; returns scores.csv as a DataFrame. `settings`
    are evaluation-config keys (n, n_final, max_new_tokens, temperature, ...; see `tunescope eval`);
    `reference` adds KL(reference ‖ model).

    >>> ts.evaluate("runs/grpo", suites=["maths", "game24_ood"], n=64)
    """
    from tunescope.checkpoints import resolve_models
    from tunescope.config import from_dict
    from tunescope.evaluate.run import EvalConfig
    from tunescope.evaluate.run import evaluate as _evaluate

    refs = resolve_models([_local(m) for m in models])
    cfg = from_dict(EvalConfig, settings)
    return _evaluate(refs, list(suites), _out(out, "eval"), cfg,
                     reference=_local(reference) if reference is not None else None)


def run_study(study: str | Path | None = None, out: str | Path = "runs/study", overrides: list[str] | None = None,
              preset: str = "default", jobs: int = 1) -> Path:
    """Run (or resume) a study file, or the built-in study of `preset`, into `out`; return report.html.

    >>> ts.run_study(preset="smoke", out="/tmp/smoke", overrides=["runs.sft.budget.lr=1e-4"])
    """
    from tunescope.study.config import load_study as _load
    from tunescope.study.runner import run_study as _run

    if jobs < 1:
        raise UserError(f"jobs={jobs}: give 1 or more stages to run at once")
    return _run(_load(study, list(overrides or []), preset=preset), out, jobs=jobs)


@dataclass
class Study:
    """A finished study: its report, its tables by name (tables/NAME.csv), its findings and manifest."""

    dir: Path
    report: Path
    tables: dict[str, pd.DataFrame]
    manifest: dict[str, Any]

    @property
    def findings(self) -> pd.DataFrame:
        return self.tables.get("findings", pd.DataFrame())

    @property
    def scorecard(self) -> pd.DataFrame:
        return self.tables.get("scorecard", pd.DataFrame())


def load_study(directory: str | Path) -> Study:
    """The tables and findings of a study that `tunescope run --out DIR` (or `run_study`) finished.

    >>> study = ts.load_study("runs/demo"); study.scorecard[["claim", "effect", "verdict"]]
    """
    d = Path(directory)
    tables_dir, manifest = d / "tables", d / "study.json"
    if not tables_dir.is_dir() or not manifest.is_file():
        raise UserError(f"{d} holds no finished study (no tables/ or study.json); run `tunescope run --out {d}`")
    tables = {f.stem: pd.read_csv(f) for f in sorted(tables_dir.glob("*.csv"))}
    return Study(dir=d, report=d / "report.html", tables=tables, manifest=json.loads(manifest.read_text()))


__all__ = ["Study", "diff", "evaluate", "load_study", "restore", "run_study", "spectrum"]
