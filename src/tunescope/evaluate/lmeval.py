"""lm-evaluation-harness adapter: run its Hugging Face backend on one checkpoint, return our score rows.

`lm_eval.simple_evaluate(model="hf", model_args={"pretrained": PATH}, tasks=[...])` with extra task
YAMLs from `lm_eval_include` (e.g. a task over a local JSON file, for offline use). Each numeric
metric becomes a row `suite=<task>, metric=lm_eval:<metric>,<filter>`, and the task's headline metric
(`HEADLINE`) is repeated as `accuracy`, the metric the report's tables read. The interval is our own 95%
percentile bootstrap over lm-eval's per-document scores (so it matches the other rows); where a metric
has no per-document values (corpus-level metrics) it falls back to lm-eval's standard error, ± 1.96·SE.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

from tunescope.errors import UserError


def run_lm_eval(path: str | Path, cfg: Any) -> list[dict[str, Any]]:
    """Score rows (suite, metric, value, ci_low, ci_high, n) for every lm-eval task in `cfg.lm_eval`."""
    try:
        import lm_eval
    except ImportError:
        raise UserError("--lm-eval needs lm-eval: pip install lm-eval==0.4.13") from None
    include = cfg.lm_eval_include
    if include and not Path(include).is_dir():
        raise UserError(f"lm_eval_include={include} is not a directory of task YAMLs")
    manager = _task_manager(str(include) if include else None)
    try:
        res = lm_eval.simple_evaluate(
            model="hf", tasks=list(cfg.lm_eval), task_manager=manager, limit=cfg.lm_eval_limit,
            model_args={"pretrained": str(path), "dtype": "float32" if cfg.dtype == "auto" else cfg.dtype,
                        "device": "cuda" if cfg.device == "auto" and _cuda() else
                        ("cpu" if cfg.device == "auto" else cfg.device)},
            batch_size=cfg.batch_size, random_seed=cfg.seed, numpy_random_seed=cfg.seed,
            torch_random_seed=cfg.seed, fewshot_random_seed=cfg.seed, bootstrap_iters=0, log_samples=True)
    except (KeyError, ValueError) as e:
        raise UserError(f"lm-eval could not run tasks {', '.join(cfg.lm_eval)}: {e}") from None
    return lm_eval_rows(res, seed=cfg.seed, n_resamples=cfg.bootstrap)


@functools.cache
def _task_manager(include: str | None) -> Any:
    """lm-eval's index of its task YAMLs (and the included ones): 8 s to build, so built once per process
    and shared by every checkpoint of a sweep."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include)


def lm_eval_rows(res: dict[str, Any], seed: int = 0, n_resamples: int = 2000) -> list[dict[str, Any]]:
    """Our score rows from the dict `simple_evaluate` returns."""
    from tunescope.evaluate.stats import bootstrap_ci

    rows = []
    for task, metrics in res["results"].items():
        n = res.get("n-samples", {}).get(task, {}).get("effective")
        for key, value in metrics.items():
            if "," not in key or "_stderr" in key or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            name, _, flt = key.partition(",")
            docs = [d for d in res.get("samples", {}).get(task, []) if d.get("filter", flt) == flt]
            per_doc = [float(d[name]) for d in docs if isinstance(d.get(name), (int, float))]
            if per_doc and len(per_doc) == len(docs) and abs(sum(per_doc) / len(per_doc) - value) < 1e-9:
                _, lo, hi = bootstrap_ci(per_doc, seed=seed, n_resamples=n_resamples)
            else:
                se = metrics.get(f"{name}_stderr,{flt}")
                se = float(se) if isinstance(se, (int, float)) and math.isfinite(se) else float("nan")
                lo, hi = value - 1.96 * se, value + 1.96 * se
            rows.append({"suite": task, "metric": f"lm_eval:{key}", "value": float(value),
                         "ci_low": lo, "ci_high": hi, "n": n})
    return rows + headline(rows)


# the metric that stands for an lm-eval task in the report's accuracy tables, the first one it has
# (IFEval: the prompt-level strict accuracy, as Rajani et al. report "IFEval prompt")
HEADLINE = ("acc", "exact_match", "prompt_level_strict_acc", "acc_norm", "pass@1")


def headline(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per task, a copy of its HEADLINE metric's row (any filter, the first listed) as metric `accuracy`."""
    out = []
    for task in dict.fromkeys(r["suite"] for r in rows):
        mine = [r for r in rows if r["suite"] == task]
        for name in HEADLINE:
            hit = [r for r in mine if r["metric"].removeprefix("lm_eval:").partition(",")[0] == name]
            if hit:
                out.append({**hit[0], "metric": "accuracy"})
                break
    return out


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
