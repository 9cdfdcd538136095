"""A forgetting predictor: how well does a checkpoint's distance from its base predict what it forgot?

RL's Razor (Shenfeld et al. 2025, arXiv 2509.04259) reports that forgetting follows the forward KL
E_x KL(pi_0 || pi_theta) on the new task's prompts, across methods and checkpoints, better than other
measures of how far a model moved. Here, over every checkpoint (step > 0) of every run trained from
the base with every tensor trainable, and every seed:

    ood_drop   = mean accuracy of the run's OOD suites at step 0 (the base) - at the checkpoint
    fkl        = forward KL(base || checkpoint) per token along one T = 1 sample of the base per
                 held-out prompt of the training task (distribution.csv): RL's Razor's predictor
    kl         = the same per-token KL along the prompts' gold solutions (Rajani et al.'s KL analysis)
    rel_change = layer-mean relative weight change ||W - W_0||_F / ||W_0||_F (diff, module "all")

and a least-squares line ood_drop = a + b * predictor for each predictor, with R^2 (the squared
Pearson correlation) and its 95% interval from a cluster bootstrap that resamples whole runs
(run x seed), since a run's checkpoints are not independent of one another; on each KL row also
R^2(KL) - R^2(rel_change), paired over the same resamples.

How fkl relates to RL's Razor's E_x KL(pi_0 || pi_theta): summed over a response, the full-vocabulary
KL at each position along y ~ pi_0 is an unbiased estimate of the sequence-level KL (chain rule),
with less variance than log pi_0(y) - log pi_theta(y). The samples are drawn once per sweep, so every
checkpoint is scored along the same responses and the per-token mean is the per-sequence mean over a
constant: R^2 is the same for either. RL's Razor samples many responses per prompt; here there is one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PREDICTORS = {"fkl": "forward KL(base || model) per token, base samples",
              "kl": "KL(base || model) per token, gold solutions", "rel_change": "relative weight change"}
KL_PREDICTORS = ("fkl", "kl")  # each is ranked against rel_change


def points(tradeoff: pd.DataFrame | None, distribution: pd.DataFrame | None, trajectory: pd.DataFrame | None,
           runs: pd.DataFrame | None) -> pd.DataFrame | None:
    """One row per checkpoint (step > 0) of a plain run: ood_drop and each predictor (NaN where missing)."""
    if tradeoff is None or runs is None or tradeoff.empty:
        return None
    plain = runs[(runs["init"] == "base") & (runs["freeze"].fillna("") == "") & (runs["train_only"].fillna("") == "")]
    tr = tradeoff[tradeoff["run"].isin(plain["run"])]
    base = tr[tr["step"] == 0].set_index(["run", "seed"])["ood"]
    tr = tr[tr["step"] > 0].copy()
    if tr.empty or base.empty:
        return None
    tr["ood_drop"] = [base.get((r, s), np.nan) - o for r, s, o in zip(tr["run"], tr["seed"], tr["ood"])]
    keys = ["run", "seed", "step"]
    out = tr[["run", "label", "method", "seed", "step", "fraction", "ood_drop"]]
    kls = [c for c in KL_PREDICTORS if distribution is not None and c in distribution]
    if kls:
        out = out.merge(distribution[keys + kls].drop_duplicates(keys), on=keys, how="left")
    if trajectory is not None and not trajectory.empty:
        w = trajectory[trajectory["module"] == "all"][keys + ["mean_rel_change"]].drop_duplicates(keys)
        out = out.merge(w.rename(columns={"mean_rel_change": "rel_change"}), on=keys, how="left")
    for col in PREDICTORS:
        if col not in out:
            out[col] = np.nan
    return out.reset_index(drop=True)


def r_squared(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(R^2, slope, intercept) of the least-squares line y = a + b x (NaN for fewer than 3 points or no spread)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan"), float("nan")
    xc, yc = x - x.mean(), y - y.mean()
    b = float((xc * yc).sum() / (xc * xc).sum())
    r2 = float((xc * yc).sum() ** 2 / ((xc * xc).sum() * (yc * yc).sum()))
    return r2, b, float(y.mean() - b * x.mean())


def _boot_r2(clusters: list[pd.DataFrame], cols: list[str], n_resamples: int, seed: int) -> np.ndarray:
    """(B, len(cols)) R^2 of each predictor on the same resamples of whole clusters (NaN where undefined)."""
    rng = np.random.default_rng(seed)
    xs = [[g[c].to_numpy(np.float64) for c in cols] for g in clusters]
    ys = [g["ood_drop"].to_numpy(np.float64) for g in clusters]
    out = np.full((n_resamples, len(cols)), np.nan)
    for b in range(n_resamples):
        pick = rng.integers(0, len(clusters), len(clusters))
        y = np.concatenate([ys[i] for i in pick])
        for j in range(len(cols)):
            out[b, j] = r_squared(np.concatenate([xs[i][j] for i in pick]), y)[0]
    return out


def _interval(v: np.ndarray) -> tuple[float, float]:
    v = v[np.isfinite(v)]
    return (float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))) if v.size else (float("nan"), float("nan"))


def fit(pts: pd.DataFrame | None, *, n_resamples: int = 2000, seed: int = 0) -> pd.DataFrame | None:
    """Per predictor: n points, n runs (clusters), slope, intercept, R^2 and its cluster-bootstrap 95%
    interval; on each KL row also R^2(KL) - R^2(rel_change) on the checkpoints that have both, with
    its paired interval (both fits on the same resamples)."""
    if pts is None or pts.empty:
        return None
    rows = {}
    for col, what in PREDICTORS.items():
        d = pts.dropna(subset=[col, "ood_drop"])
        clusters = [g for _, g in d.groupby(["run", "seed"])]
        r2, b, a = r_squared(d[col], d["ood_drop"])
        lo = hi = float("nan")
        if len(clusters) >= 3 and np.isfinite(r2):
            lo, hi = _interval(_boot_r2(clusters, [col], n_resamples, seed)[:, 0])
        rows[col] = {"predictor": col, "what": what, "points": len(d), "runs": len(clusters), "slope": b,
                     "intercept": a, "r2": r2, "r2_ci_low": lo, "r2_ci_high": hi, "r2_minus_rel_change": np.nan,
                     "diff_ci_low": np.nan, "diff_ci_high": np.nan}
    for col in KL_PREDICTORS:
        both = pts.dropna(subset=[col, "rel_change", "ood_drop"])
        clusters = [g for _, g in both.groupby(["run", "seed"])]
        if len(clusters) >= 3:
            diff = r_squared(both[col], both["ood_drop"])[0] - r_squared(both["rel_change"], both["ood_drop"])[0]
            boot = _boot_r2(clusters, [col, "rel_change"], n_resamples, seed)
            lo, hi = _interval(boot[:, 0] - boot[:, 1])
            rows[col].update({"r2_minus_rel_change": diff, "diff_ci_low": lo, "diff_ci_high": hi})
    out = pd.DataFrame(list(rows.values()))
    return out if (out["points"] > 0).any() else None
