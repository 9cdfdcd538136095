"""The soak (`make soak`, not in `make test`): SIGKILL the smoke study at every point of
`tests/_kill.POINTS` (every stage kind: base build, training mid-step and just after a checkpoint,
evaluation mid-sweep, diff, spectrum, intervention, report), rerun it each time, and check that its
stage keys and every table equal an uninterrupted run's, bit for bit, with no partial directory left.

    python tests/soak.py [OUT]        # a line per point; exit 1 when any point fails
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _kill import POINTS, assert_same, kill_at, rerun, run_study  # noqa: E402


def main(root: Path) -> int:
    root.mkdir(parents=True, exist_ok=True)
    clean = root / "clean"
    shutil.rmtree(clean, ignore_errors=True)
    t0 = time.perf_counter()
    assert run_study(clean).wait() == 0, "the clean smoke study failed"
    print(f"clean run: {time.perf_counter() - t0:.0f} s", flush=True)
    failures = 0
    for name, pattern in POINTS:
        out = root / name.replace(" ", "_")
        shutil.rmtree(out, ignore_errors=True)
        # the base build is only work when the organism is not cached: give that point a cache of its own
        env = {"TUNESCOPE_CACHE": str(root / "cache_for_base")} if name == "base build" else None
        if env:
            shutil.rmtree(env["TUNESCOPE_CACHE"], ignore_errors=True)
        t0 = time.perf_counter()
        reached = kill_at(out, pattern, env=env)
        try:
            rerun(out, env=env)
            assert_same(clean, out)
            verdict = "ok" if reached else "ok (the study ended before the point: not a kill)"
        except AssertionError as e:
            failures += 1
            verdict = f"FAILED: {str(e).splitlines()[0]}"
        print(f"{name:<30} {verdict}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    print(f"{len(POINTS) - failures} of {len(POINTS)} kill points resumed to the clean run's tables", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="soak-"))))
