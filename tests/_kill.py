"""Kill a smoke study with SIGKILL at a chosen point, rerun it, and compare it with a clean run (the
SIGKILL tests in `make test` and the soak, `make soak`)."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

# (name, glob under DIR/stages that marks the moment to kill): every stage kind, mid-work and mid-write
POINTS = [
    ("base build", ".partial-base-*"),
    ("evaluate base", ".partial-evaluate.base-*/samples.jsonl"),
    ("sft mid-step", ".partial-train.sft.s0-*/run/run.json"),
    ("sft checkpoint written", ".partial-train.sft.s0-*/run/checkpoints/step-000001"),
    ("grpo mid-step", ".partial-train.grpo.s0-*/run/run.json"),
    ("grpo checkpoint written", ".partial-train.grpo.s0-*/run/checkpoints/step-000001"),
    ("sft24 run", ".partial-train.sft24.s1-*/run"),
    ("evaluate mid-sweep", ".partial-evaluate.sft.s1-*/samples.jsonl"),
    ("evaluate after a checkpoint", ".partial-evaluate.grpo.s0-*/eval.json"),
    ("diff", ".partial-diff.*"),
    ("spectrum", ".partial-spectrum.*"),
    ("intervention", ".partial-intervene.*"),
    ("intervention evaluation", ".partial-evaluate.restore_top20.*"),
    ("report", ".partial-report-*"),
]

# columns that hold times, paths or provenance: not part of what must agree bit for bit
VOLATILE = {"wall_s", "train_seconds", "generation_seconds", "stage_wall_s", "path", "model", "dir", "reference"}
SKIP_TABLES = {"setup", "stages"}  # provenance and wall times


def run_study(out: Path, extra: list[str] = (), env: dict | None = None, log: Path | None = None,
              file_limit: int | None = None) -> subprocess.Popen:
    """The smoke study into `out` in a subprocess; its stderr (progress, the `error:` line) to `log`.
    `file_limit` (bytes): every write past it fails with EFBIG (RLIMIT_FSIZE), as on a full disk."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    cmd = [sys.executable, "-m", "tunescope.cli", "run", "--preset", "smoke", "--out", str(out), *extra]
    err = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 (the child holds it)
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, preexec_fn=limit if file_limit else None,
                            env={**os.environ, "TUNESCOPE_THREADS": "1", **(env or {})})


def rerun(out: Path, extra: list[str] = (), env: dict | None = None) -> None:
    """Rerun the study into `out` to its end; a failure names its last line, then the end of its output."""
    log = out.with_name(out.name + ".rerun.err")
    rc = run_study(out, extra, env=env, log=log).wait()
    printed = log.read_text().strip()
    last = printed.splitlines()[-1] if printed else "(nothing printed)"
    assert rc == 0, f"the rerun ended with exit status {rc}: {last}\n{printed[-3000:]}"


def kill_at(out: Path, pattern: str, timeout: float = 600, env: dict | None = None) -> bool:
    """Start the smoke study into `out`, SIGKILL it once `pattern` exists under its stages directory;
    False when the study ended first (the point was not reached)."""
    p = run_study(out, env=env)
    deadline = time.time() + timeout
    while not list((out / "stages").glob(pattern)):
        if p.poll() is not None:
            return False
        assert time.time() < deadline, f"the smoke study did not reach {pattern} in {timeout} s"
        time.sleep(0.01)
    os.kill(p.pid, signal.SIGKILL)
    p.wait(30)
    return True


def tables(out: Path) -> dict[str, pd.DataFrame]:
    """The study's tables without the columns that hold times and paths."""
    got = {}
    for f in sorted((out / "tables").glob("*.csv")):
        if f.stem in SKIP_TABLES:
            continue
        df = pd.read_csv(f)
        got[f.stem] = df.drop(columns=[c for c in df.columns if c in VOLATILE])
    return got


def assert_same(clean: Path, resumed: Path) -> None:
    """Same stage keys, no partial directory left, every table equal bit for bit."""
    def keys(out: Path) -> dict[str, str]:
        return {n: r["key"] for n, r in json.loads((out / "study.json").read_text())["stages"].items()}

    assert keys(clean) == keys(resumed), "the resumed study's stage keys differ"
    assert not list((resumed / "stages").glob(".partial-*")), "a partial stage directory was left"
    a, b = tables(clean), tables(resumed)
    assert a.keys() == b.keys()
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True, obj=f"tables/{name}.csv")
