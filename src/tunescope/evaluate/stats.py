"""Uncertainty and sampling metrics: percentile bootstrap intervals, pass@k, mean@k.

Bootstrap (Efron & Tibshirani 1993, the percentile method): resample the *items* of a suite with
replacement B times, recompute the statistic on each resample, and report the 2.5% and 97.5%
quantiles of those B values. Items, not samples, are the unit: with n samples per prompt the
per-item score is first averaged over its samples, so correlated samples of one prompt do not
shrink the interval. The resampling is seeded, so a rerun reproduces the interval exactly.

pass@k is the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained on
Code", eq. 1): with n samples of which c are correct, pass@k = 1 - C(n-c, k) / C(n, k), computed
as a stable product. mean@k is the plain mean score over the k samples of a prompt.
"""

from __future__ import annotations

import math

import numpy as np


def bootstrap_ci(values: np.ndarray | list[float], *, weights: np.ndarray | list[float] | None = None,
                 n_resamples: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """(statistic, low, high): the (weighted) mean of `values` and its percentile bootstrap interval.

    `weights` turn the statistic into a ratio sum(w*v)/sum(w) (e.g. KL pooled over tokens, with
    one value per item and its token count as weight); resampling is still over items.
    An empty input gives NaNs; a single item gives a zero-width interval.
    """
    v = np.asarray(values, dtype=np.float64)  # (N,)
    w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=np.float64)
    if v.size == 0 or w.sum() <= 0:
        return float("nan"), float("nan"), float("nan")
    stat = float((w * v).sum() / w.sum())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(n_resamples, v.size))  # (B, N)
    wb = w[idx]
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = (wb * v[idx]).sum(axis=1) / wb.sum(axis=1)  # (B,)
    boot = boot[np.isfinite(boot)]
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(boot, [alpha, 1.0 - alpha])
    return stat, float(low), float(high)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one prompt: n samples, c of them correct (Chen et al. 2021)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    # 1 - prod_{i=n-c+1}^{n} (1 - k/i), the numerically stable form of 1 - C(n-c,k)/C(n,k)
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def ks_for(n: int) -> list[int]:
    """The k values reported for n samples per prompt: 1, 2, 4, ... up to n, and n itself."""
    ks = [k for k in (1, 2, 4, 8, 16, 32, 64, 128) if k <= n]
    return ks if n in ks else ks + [n]
