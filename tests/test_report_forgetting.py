"""The forgetting predictor (report/forgetting.py): the points it joins, R² against scipy, the cluster bootstrap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tunescope.report import forgetting


def _tables(rng: np.random.Generator, n_runs: int = 5, steps: tuple[int, ...] = (0, 10, 20, 30)):
    """tradeoff, distribution and module trajectory rows of plain runs whose OOD drop is 0.5 x forward KL
    + noise, with the gold-solution KL a noisier proxy of it, plus a run from an SFT checkpoint (not plain:
    left out)."""
    trade, dist, traj, runs = [], [], [], []
    for r in range(n_runs):
        run = f"r{r}"
        runs.append({"run": run, "init": "base", "freeze": "", "train_only": ""})
        for seed in (0, 1):
            for step in steps:
                fkl = 0.0 if step == 0 else step / 30 * (1 + r)
                kl = fkl * rng.uniform(0.5, 1.5)
                w = 0.0 if step == 0 else rng.uniform(0, 1)
                ood = 0.6 - (0.0 if step == 0 else 0.5 * fkl + rng.normal(0, 0.05))
                trade.append({"run": run, "label": run, "method": "sft", "seed": seed, "step": step,
                              "fraction": step / 30, "ood": ood})
                dist.append({"run": run, "seed": seed, "step": step, "kl": kl, "fkl": fkl})
                traj += [{"run": run, "seed": seed, "step": step, "module": m, "mean_rel_change": w * f}
                         for m, f in (("all", 1.0), ("q", 2.0))]
    runs.append({"run": "rl", "init": "r0:last", "freeze": "", "train_only": ""})
    trade.append({"run": "rl", "label": "rl", "method": "grpo", "seed": 0, "step": 10, "fraction": 1.0, "ood": 0.1})
    return pd.DataFrame(trade), pd.DataFrame(dist), pd.DataFrame(traj), pd.DataFrame(runs)


def test_points_join_the_checkpoints_of_plain_runs_with_their_kl_and_weight_change():
    trade, dist, traj, runs = _tables(np.random.default_rng(0))
    pts = forgetting.points(trade, dist, traj, runs)
    assert set(pts["run"]) == {f"r{r}" for r in range(5)} and (pts["step"] > 0).all()
    assert len(pts) == 5 * 2 * 3
    row = pts[(pts["run"] == "r2") & (pts["seed"] == 1) & (pts["step"] == 20)].iloc[0]
    t = trade.set_index(["run", "seed", "step"])["ood"]
    assert row["ood_drop"] == pytest.approx(t[("r2", 1, 0)] - t[("r2", 1, 20)])
    assert row["fkl"] == pytest.approx(20 / 30 * 3)
    d = dist.set_index(["run", "seed", "step"])["kl"]
    assert row["kl"] == pytest.approx(d[("r2", 1, 20)])
    w = traj[(traj["module"] == "all")].set_index(["run", "seed", "step"])["mean_rel_change"]
    assert row["rel_change"] == pytest.approx(w[("r2", 1, 20)])  # the layer mean over all modules, not q's


def test_r_squared_and_line_match_scipy():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 2, 40)
    y = 0.3 * x + rng.normal(0, 0.2, 40)
    r2, b, a = forgetting.r_squared(x, y)
    ref = stats.linregress(x, y)
    assert (r2, b, a) == pytest.approx((ref.rvalue ** 2, ref.slope, ref.intercept), rel=1e-12)
    assert np.isnan(forgetting.r_squared(np.ones(5), y[:5])[0])  # no spread in the predictor


def test_fit_intervals_resample_runs_and_rank_the_predictors_paired():
    trade, dist, traj, runs = _tables(np.random.default_rng(2), n_runs=8)
    pts = forgetting.points(trade, dist, traj, runs)
    fit = forgetting.fit(pts, n_resamples=400, seed=0).set_index("predictor")
    for p in forgetting.PREDICTORS:
        ref = stats.linregress(pts[p], pts["ood_drop"])
        assert fit.loc[p, "r2"] == pytest.approx(ref.rvalue ** 2, rel=1e-9)
        assert fit.loc[p, "points"] == 48 and fit.loc[p, "runs"] == 16
        assert fit.loc[p, "r2_ci_low"] <= fit.loc[p, "r2"] <= fit.loc[p, "r2_ci_high"]
    assert fit.loc["fkl", "r2"] > 0.8 and fit.loc["rel_change", "r2"] < 0.2  # the drop follows KL, not noise
    assert fit.loc["fkl", "r2"] > fit.loc["kl", "r2"]  # the proxy fits worse
    for p in forgetting.KL_PREDICTORS:
        assert fit.loc[p, "r2_minus_rel_change"] == pytest.approx(fit.loc[p, "r2"] - fit.loc["rel_change", "r2"])
    assert fit.loc["fkl", "diff_ci_low"] > 0 and np.isnan(fit.loc["rel_change", "r2_minus_rel_change"])

    # one cluster's points resampled together: an interval from a by-hand cluster bootstrap, same draws
    clusters = [g for _, g in pts.groupby(["run", "seed"])]
    rng = np.random.default_rng(0)
    boot = []
    for _ in range(400):
        pick = rng.integers(0, len(clusters), len(clusters))
        d = pd.concat([clusters[i] for i in pick])
        boot.append(stats.pearsonr(d["kl"], d["ood_drop"]).statistic ** 2)
    assert (fit.loc["kl", "r2_ci_low"], fit.loc["kl", "r2_ci_high"]) == pytest.approx(
        tuple(np.quantile(boot, [0.025, 0.975])), rel=1e-9)


def test_evaluations_without_the_forward_kl_still_fit_the_other_predictors():
    trade, dist, traj, runs = _tables(np.random.default_rng(3))
    pts = forgetting.points(trade, dist.drop(columns="fkl"), traj, runs)  # an older distribution.csv
    fit = forgetting.fit(pts, n_resamples=100, seed=0).set_index("predictor")
    assert fit.loc["fkl", "points"] == 0 and np.isnan(fit.loc["fkl", "r2_minus_rel_change"])
    assert fit.loc["kl", "points"] == 30 and np.isfinite(fit.loc["kl", "r2_minus_rel_change"])
