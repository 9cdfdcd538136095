"""Runs trained elsewhere in a study (`runs.NAME.checkpoints`): adopted, not copied.

The import stage reads the run's checkpoints (a run directory in any layout `tunescope.checkpoints`
reads, or an explicit list of {path, step} with model directories or hub ids) and lays them out as a
tunescope run under its stage directory: one `checkpoints/step-N/` per checkpoint whose files are
symbolic links to the originals, with a sidecar holding step, fraction, the producing method and the
source. Every later stage (evaluation, diff, spectra, refs such as NAME:best_ood and NAME:last,
interventions) then reads it as it reads a run trained here; step 0 is the study's base. What the
run's own files say of its budget (trainer_state.json) goes into run.json; "unknown" otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunescope.checkpoints import SIDECAR, ModelRef, checkpoint_dir
from tunescope.errors import UserError
from tunescope.study import results as res
from tunescope.study.config import StudyConfig
from tunescope.study.stages import Context, Stage


def import_stage(cfg: StudyConfig, run: str, name: str, fingerprint: Callable[[str], str]) -> Stage:
    """The stage that adopts run `run`'s checkpoints; its key follows the sources' names, sizes and times."""
    spec = cfg.runs[run]
    ck = spec.checkpoints
    sources = [ck] if isinstance(ck, str) else [str(e["path"]) for e in ck]
    conf = {"run": run, "method": spec.method, "checkpoints": ck,
            "fingerprint": [fingerprint(str(Path(s).expanduser())) for s in sources]}

    def fn(ctx: Context) -> res.TrainResult:
        refs = _sources(ck)
        run_dir = ctx.out / "run"
        for ref in refs:
            _adopt(ref, checkpoint_dir(run_dir, ref.step or 0), spec.method)
        (run_dir / "run.json").write_text(json.dumps({"method": spec.method, "imported": _describe(ck, refs)},
                                                     indent=2))
        base = res.base_model(ctx.inputs)
        return res.TrainResult(run=str(run_dir), init=str(base), init_name="base", init_step=0)

    return Stage(name, "import", conf, fn, inputs=["base"], estimate_s=2)


def _sources(ck: Any) -> list[ModelRef]:
    from tunescope.api import _local  # paths and hub ids, one rule with the notebook API
    from tunescope.checkpoints import foreign_checkpoints, list_checkpoints, read_sidecar
    from tunescope.weights import verify

    if isinstance(ck, str):
        path = _local(ck)
        refs = list_checkpoints(path) if (path / "checkpoints").is_dir() else foreign_checkpoints(path)
        if not refs:
            raise UserError(f"{ck} holds no checkpoints in a layout tunescope reads (checkpoints/step-N/, "
                            "checkpoint-N/, global_step_N/, step_N/); list them as {path, step} instead")
        refs = [r for r in refs if r.step]  # a tunescope run's step 0 is its init; the study's base stands there
    else:
        last = max(int(e["step"]) for e in ck)
        refs = [ModelRef(path=_local(e["path"]), name=str(e["path"]), step=int(e["step"]),
                         fraction=int(e["step"]) / last) for e in sorted(ck, key=lambda e: e["step"])]
    for r in refs:
        verify(r.path)
    last = max(r.step or 0 for r in refs)
    return [r if r.fraction is not None else
            ModelRef(r.path, r.name, r.step, read_sidecar(r.path).get("fraction", (r.step or 0) / last), r.method)
            for r in refs]


def _adopt(ref: ModelRef, dst: Path, method: str) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(ref.path.iterdir()):
        if f.is_file() and f.name != SIDECAR and not (dst / f.name).exists():
            (dst / f.name).symlink_to(f.resolve())
    (dst / SIDECAR).write_text(json.dumps({"step": ref.step, "fraction": ref.fraction, "method": method,
                                           "source": str(ref.path.resolve())}, indent=2))


def _describe(ck: Any, refs: list[ModelRef]) -> dict[str, Any]:
    """Source, checkpoints and what trainer_state.json says of the budget (unknown where nothing does)."""
    state = {}
    for ref in reversed(refs):
        f = ref.path / "trainer_state.json"
        if f.is_file():
            try:
                state = json.loads(f.read_text())
            except json.JSONDecodeError:
                state = {}
            break
    lrs = [h["learning_rate"] for h in state.get("log_history", []) if "learning_rate" in h]
    budget = {k: state[k] for k in ("max_steps", "num_train_epochs", "train_batch_size") if k in state}
    if lrs:
        budget["peak_lr"] = max(lrs)
    return {"source": ck, "steps": [r.step for r in refs], "budget": budget or "unknown"}


def imported_budget(rec: dict[str, Any] | None) -> dict[str, Any]:
    """What the report prints as an imported run's budget: from its import stage's run.json."""
    if rec is None:
        return {"imported": True, "budget": "unknown"}
    meta = Path(res.read(rec, res.TrainResult).run) / "run.json"
    info = json.loads(meta.read_text()).get("imported", {}) if meta.is_file() else {}
    return {"imported_from": info.get("source"), "steps": info.get("steps"), "budget": info.get("budget", "unknown")}
