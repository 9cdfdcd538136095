"""Evaluation benchmark: batched vs one-at-a-time generation, and the time to evaluate a whole run.

    .venv/bin/python -m bench bench_evaluate      # or: .venv/bin/python bench/bench_evaluate.py

1. Greedy generation on maths prompts with the HF engine: per-sample wall time at batch size 32
   against one prompt at a time (the issue's goal: >= 5x), and whether the outputs agree.
2. Throughput at the default study's settings (`bench_throughput`): scored items per second on one
   checkpoint, Hugging Face generate at batch 32 against the compact greedy decoder at the study's batch.
3. A whole run: a run directory of 3 checkpoints (the organism and two noised copies standing in for
   fine-tuned ones) evaluated with `evaluate()` on all seven organism suites, with KL to the organism.

Uses the `default` organism when it is already built (cached), else the `smoke` organism (built in
seconds); set TUNESCOPE_BENCH_ORGANISM=default to build the default one. The result says which.
The CPU is shared, so the load average is recorded with the timings.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

N_GEN, N_SINGLE, BATCH, MAX_NEW = 32, 8, 32, 64
SUITES = ["maths", "maths_hard", "game24", "game24_ood", "facts", "twohop", "instruct"]


def pick_organism() -> tuple[str, Path]:
    from tunescope.organism import build
    from tunescope.organism.build import available

    want = os.environ.get("TUNESCOPE_BENCH_ORGANISM")
    if want == "default" or (want is None and available("default") is not None):
        return "default", build("default")
    return "smoke", build("smoke")


def bench_generation(path: Path) -> dict:
    from tunescope.evaluate.engine import HFEngine, load_tokenizer, render_prompt
    from tunescope.world import get_task

    tok = load_tokenizer(path)
    engine = HFEngine(path, tok, device="cpu", dtype="float32")
    prompts = [render_prompt(tok, it.prompt) for it in get_task("maths").items("test", N_GEN)]
    engine.generate(prompts[:2], max_new_tokens=4)  # warm-up
    t0 = time.perf_counter()
    batched = engine.generate(prompts, max_new_tokens=MAX_NEW, batch_size=BATCH)
    t_batched = (time.perf_counter() - t0) / len(prompts)
    t0 = time.perf_counter()
    single = [engine.generate([p], max_new_tokens=MAX_NEW, batch_size=1)[0] for p in prompts[:N_SINGLE]]
    t_single = (time.perf_counter() - t0) / N_SINGLE
    agree = sum(b[0].text == s[0].text for b, s in zip(batched, single))
    return {"prompts": N_GEN, "max_new_tokens": MAX_NEW, "batch_size": BATCH,
            "s_per_sample_batched": round(t_batched, 4), "s_per_sample_single": round(t_single, 4),
            "speedup": round(t_single / t_batched, 1), "goal_speedup": 5.0,
            "mean_new_tokens": round(sum(b[0].n_tokens for b in batched) / len(batched), 1),
            "greedy_outputs_agree": f"{agree}/{N_SINGLE}"}


def bench_run(path: Path, work: Path) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from _models import perturb  # the tests' stand-in fine-tune: Gaussian noise on every weight

    from tunescope.checkpoints import resolve_models
    from tunescope.evaluate import EvalConfig, evaluate

    run = work / "run"
    for step, noise in ((0, 0.0), (50, 0.05), (100, 0.1)):
        d = perturb(path, run / "checkpoints" / f"step-{step:06d}", noise, seed=step)
        (d / "tunescope.json").write_text(json.dumps({"step": step, "fraction": step / 100, "method": "noise"}))
    cfg = EvalConfig(n=32, max_new_tokens=128, batch_size=32, kl_items=32)
    t0 = time.perf_counter()
    df = evaluate(resolve_models([run]), SUITES, work / "eval", cfg, reference=path)
    wall = time.perf_counter() - t0
    acc = df[df.metric == "accuracy"].pivot(index="step", columns="suite", values="value").round(3)
    dist = __import__("pandas").read_csv(work / "eval" / "distribution.csv")
    return {"checkpoints": 3, "suites": SUITES, "items_per_suite": cfg.n, "max_new_tokens": cfg.max_new_tokens,
            "kl_items": cfg.kl_items, "wall_s": round(wall, 1), "s_per_checkpoint": round(wall / 3, 1),
            "accuracy": acc.to_dict(orient="index"),
            "kl": dict(zip(dist.step, dist.kl.round(4))), "mean_length": dict(zip(dist.step, dist.mean_length.round(1)))}


def bench_throughput(path: Path, work: Path) -> dict:
    """Scored items per second on one checkpoint at the default study's settings (its evaluation
    settings from study_default.yaml, no KL): Hugging Face `generate` at the study's former batch of
    32 against the compact greedy decoder at the study's batch. The same scores are required."""
    import yaml

    from tunescope.checkpoints import resolve_models
    from tunescope.evaluate import EvalConfig, evaluate
    from tunescope.study.config import CONFIGS

    study = yaml.safe_load((CONFIGS / "study_default.yaml").read_text())["evaluation"]
    settings = {**study["settings"], "kl_items": 0}
    models = resolve_models([path])
    evaluate(models, ["maths"], work / "warm", EvalConfig(n=2, max_new_tokens=4, kl_items=0))  # imports, caches
    res, acc = {"suites": study["suites"], "settings": settings}, {}
    for name, over in (("hf_generate_batch32", {"compact": False, "batch_size": 32}),
                       ("compact_study_batch", {"compact": True})):
        t0 = time.perf_counter()
        df = evaluate(models, study["suites"], work / name, EvalConfig(**{**settings, **over}))
        wall = time.perf_counter() - t0
        a = df[df.metric == "accuracy"]
        acc[name] = dict(zip(a.suite, a.value.round(4)))
        res[name] = {"wall_s": round(wall, 2), "items": int(a.n.sum()), "items_per_s": round(a.n.sum() / wall, 1)}
    res["speedup"] = round(res["compact_study_batch"]["items_per_s"] / res["hf_generate_batch32"]["items_per_s"], 2)
    res["goal_speedup"] = 3.0
    res["same_scores"] = acc["hf_generate_batch32"] == acc["compact_study_batch"]
    return res


def run(out: Path) -> dict:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    preset, path = pick_organism()
    res: dict = {"organism": preset, "organism_path": str(path), "load_avg_before": os.getloadavg()[0]}
    res["generation"] = bench_generation(path)
    with tempfile.TemporaryDirectory() as tmp:
        res["throughput"] = bench_throughput(path, Path(tmp))
    with tempfile.TemporaryDirectory() as tmp:
        res["whole_run"] = bench_run(path, Path(tmp))
    res["load_avg_after"] = os.getloadavg()[0]
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "bench_evaluate.json").write_text(json.dumps(res, indent=2, default=str))
    return res


if __name__ == "__main__":
    print(json.dumps(run(Path("bench_out")), indent=2, default=str))
    sys.exit(0)
