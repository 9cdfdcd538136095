"""Wall time of the smoke study, first run (organism cached) and a re-run (everything cached).

    python -m bench bench_study
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path


def run(out: Path) -> dict:
    from tunescope.organism import build
    from tunescope.study.config import load_study
    from tunescope.study.runner import run_study

    build(preset="smoke")  # the organism is cached across studies; not part of the study's time
    study = Path(out) / "study_smoke"
    shutil.rmtree(study, ignore_errors=True)
    cfg = load_study(preset="smoke")
    t0 = time.perf_counter()
    run_study(cfg, study)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_study(cfg, study)
    rerun = time.perf_counter() - t0
    stages = json.loads((study / "study.json").read_text())["stages"]
    by_kind: dict[str, float] = {}
    for rec in stages.values():
        by_kind[rec["kind"]] = round(by_kind.get(rec["kind"], 0.0) + (rec["wall_s"] or 0.0), 2)
    return {"smoke_first_run_s": round(first, 2), "smoke_rerun_s": round(rerun, 2), "stages": len(stages),
            "stage_seconds_by_kind": by_kind}
