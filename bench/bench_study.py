"""Wall time of the smoke study, first run (organism cached) and a re-run (everything cached), one
stage at a time and two at a time (`--jobs 2`, one thread each; forked stages, so a fresh process).

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
    res = {"smoke_first_run_s": round(first, 2), "smoke_rerun_s": round(rerun, 2), "stages": len(stages),
           "stage_seconds_by_kind": by_kind}
    res["jobs"] = _jobs(Path(out))
    return res


def _jobs(out: Path) -> dict:
    """The smoke study in a fresh `tunescope run` process with --jobs 1 and --jobs 2 (1 thread each)."""
    import os
    import subprocess
    import sys

    res = {}
    for jobs in (1, 2):
        study = out / f"study_smoke_jobs{jobs}"
        shutil.rmtree(study, ignore_errors=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "tunescope.cli", "run", "--preset", "smoke", "--out", str(study),
                        "--jobs", str(jobs)], check=True, capture_output=True,
                       env={**os.environ, "TUNESCOPE_THREADS": "1"})
        res[f"jobs{jobs}_wall_s"] = round(time.perf_counter() - t0, 2)
    res["speedup"] = round(res["jobs1_wall_s"] / res["jobs2_wall_s"], 2)
    res["load_avg"] = os.getloadavg()[0]
    return res
