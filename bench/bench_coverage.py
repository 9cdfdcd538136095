"""Coverage of the paired-comparison intervals (`evaluate.stats.paired_diff`), by simulation.

    .venv/bin/python -m bench bench_coverage      # or: .venv/bin/python bench/bench_coverage.py

A 95% interval should hold the true difference in about 95% of studies. Each simulated study draws
N items from a population (item difficulty d ~ Normal(0, 1.5) on the logit scale) and S training
seeds of a fine-tuned model A (a seed shifts every item's logit by u_s ~ Normal(0, tau) and each
item's by e_si ~ Normal(0, 0.5)); the base B is one fixed model. Scores are 0/1 draws with
P(correct) = sigmoid(logit), A's logit mu_A + d + u_s + e_si, B's mu_B + d. The true difference is
E[P_A] − E[P_B] over the item and seed populations (a 400,000-draw Monte Carlo). The table is the
share of studies whose interval holds it, for one-seed (items) and several-seed (seeds x items)
designs, with and without a seed effect (tau). Binomial standard error of a coverage over R
studies: sqrt(0.95 * 0.05 / R), 0.007 at R = 1000.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

MU_A, MU_B, ITEM_SD, INTERACTION_SD = 0.6, 0.0, 1.5, 0.5
DESIGNS = [(1, 64, 0.0), (1, 200, 0.0), (1, 200, 0.3), (3, 64, 0.3), (3, 200, 0.0), (3, 200, 0.3),
           (5, 200, 0.3)]  # (seeds, items, tau)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def true_difference(tau: float, draws: int = 400_000, seed: int = 12345) -> float:
    rng = np.random.default_rng(seed)
    d = rng.normal(0, ITEM_SD, draws)
    a = _sigmoid(MU_A + d + rng.normal(0, tau, draws) + rng.normal(0, INTERACTION_SD, draws))
    return float(a.mean() - _sigmoid(MU_B + d).mean())


def simulate(seeds: int, items: int, tau: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One simulated study: per-item 0/1 scores of A (seeds, items) and of the base B (1, items)."""
    d = rng.normal(0, ITEM_SD, items)  # (N,)
    u = rng.normal(0, tau, (seeds, 1))  # (S, 1)
    pa = _sigmoid(MU_A + d + u + rng.normal(0, INTERACTION_SD, (seeds, items)))  # (S, N)
    a = (rng.random((seeds, items)) < pa).astype(float)
    b = (rng.random((1, items)) < _sigmoid(MU_B + d)).astype(float)
    return a, b


def coverage(seeds: int, items: int, tau: float, reps: int, n_resamples: int = 1000, seed: int = 0) -> dict:
    from tunescope.evaluate.stats import paired_diff

    truth = true_difference(tau)
    rng = np.random.default_rng(seed)
    hit, widths = 0, []
    for r in range(reps):
        a, b = simulate(seeds, items, tau, rng)
        diff = paired_diff(a, b, n_resamples=n_resamples, seed=r)
        hit += diff.low <= truth <= diff.high
        widths.append(diff.high - diff.low)
    return {"seeds": seeds, "items": items, "seed_sd_logit": tau, "true_difference": round(truth, 4),
            "coverage": round(hit / reps, 3), "mean_width": round(float(np.mean(widths)), 3), "studies": reps}


def run(out: Path, reps: int = 1000) -> dict:
    rows = [coverage(s, n, tau, reps) for s, n, tau in DESIGNS]
    lines = ["| seeds | items | seed effect (logit sd) | coverage of the 95% interval | mean width |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['seeds']} | {r['items']} | {r['seed_sd_logit']} | {r['coverage']:.3f} | {r['mean_width']:.3f} |"
              for r in rows]
    (out / "coverage.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return {"designs": rows, "studies_per_design": reps}


if __name__ == "__main__":
    out = Path("bench_out")
    out.mkdir(exist_ok=True)
    print(json.dumps(run(out, int(sys.argv[1]) if len(sys.argv) > 1 else 1000), indent=2))
