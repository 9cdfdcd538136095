"""Seconds per optimiser step for SFT and GRPO under the default budget, and GRPO's generation share.

Runs a few steps of each method from the default organism when it is built (else the smoke
organism; the result says which), with `budget_default.yaml` unchanged except for `max_steps`
and `checkpoint_every=1.0` (only the step-0 and final checkpoints are written).
Step 1 is reported separately: it includes warm-up (first allocations, lazy imports).

    .venv/bin/python -m bench bench_train
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path
from typing import Any

STEPS = 4


def _organism() -> tuple[str, Path]:
    from tunescope.organism import build
    from tunescope.organism.build import available

    path = available("default")
    if path is not None:
        return "default", path
    return "smoke", build("smoke")


def _summary(run: Path) -> dict[str, Any]:
    import json

    lines = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
    later = lines[1:] or lines
    sec = [ln["seconds"] for ln in later]
    gen = [ln["gen_seconds"] for ln in later]
    return {
        "steps": len(lines),
        "first_step_s": round(lines[0]["seconds"], 3),
        "s_per_step_median": round(statistics.median(sec), 3),
        "s_per_step_mean": round(statistics.mean(sec), 3),
        "generation_share": round(sum(gen) / sum(sec), 3),
        "tokens_per_step": round(statistics.mean(ln["tokens"] for ln in later), 1),
        "tokens_generated_per_step": round(statistics.mean(ln["tokens_generated"] for ln in later), 1),
    }


def run(out: Path) -> dict[str, Any]:
    from tunescope.train import load_budget, train

    organism, model = _organism()
    cfg = load_budget("default", [f"max_steps={STEPS}", "checkpoint_every=1.0"])
    work = Path(out) / "bench_train"
    shutil.rmtree(work, ignore_errors=True)
    result: dict[str, Any] = {"organism": organism, "budget": "default",
                              "prompts_per_step": cfg.prompts_per_step,
                              "grpo_completions_per_step": cfg.prompts_per_step * cfg.grpo.num_generations,
                              "max_completion_length": cfg.max_completion_length}
    for method in ("sft", "grpo"):
        t0 = time.perf_counter()
        run_dir = train(method, model, work / method, cfg)
        result[method] = {**_summary(run_dir), "run_wall_s": round(time.perf_counter() - t0, 2)}
    result["grpo_over_sft_step_time"] = round(result["grpo"]["s_per_step_median"]
                                              / result["sft"]["s_per_step_median"], 1)
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(run(Path("bench_out")), indent=2))
