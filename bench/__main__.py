"""Run every benchmark module under bench/ and print their results (also saved to bench_out/)."""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path

import bench


def main() -> int:
    only = sys.argv[1:]
    out = Path("bench_out")
    out.mkdir(exist_ok=True)
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}  # keep other benchmarks' results
    for mod in sorted(m.name for m in pkgutil.iter_modules(bench.__path__)):
        if not mod.startswith("bench_") or (only and mod not in only):
            continue
        t0 = time.perf_counter()
        print(f"== {mod}", flush=True)
        res = importlib.import_module(f"bench.{mod}").run(out)
        res["wall_s"] = round(time.perf_counter() - t0, 2)
        results[mod] = res
        print(json.dumps(res, indent=2), flush=True)
    path.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
