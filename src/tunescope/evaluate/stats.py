"""Uncertainty and sampling metrics: percentile bootstrap intervals, pass@k, mean@k.

Bootstrap (Efron & Tibshirani 1993, the percentile method): resample the *items* of a suite with
replacement B times, recompute the statistic on each resample, and report the 2.5% and 97.5%
quantiles of those B values. Items, not samples, are the unit: with n samples per prompt the
per-item score is first averaged over its samples, so correlated samples of one prompt do not
shrink the interval. The resampling is seeded, so a rerun reproduces the interval exactly.

pass@k is the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained on
Code", eq. 1): with n samples of which c are correct, pass@k = 1 - C(n-c, k) / C(n, k), computed
as a stable product. mean@k is the plain mean score over the k samples of a prompt.

Paired differences (`paired_diff`): two models scored on the same items are compared item by item —
the mean per-item difference, with a bootstrap that resamples the shared items; with several
training seeds per side, a two-way ("pigeonhole", Owen 2007) bootstrap that resamples seeds and,
independently, items. Coverage by simulation: bench/bench_coverage.py and docs/evaluate.md.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

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


# ---------------------------------------------------------------------------------------------
# Paired comparisons of two models on the items both answered


@dataclass(frozen=True)
class Diff:
    """mean(a) − mean(b) over shared items, with its percentile bootstrap interval.

    `per_seed` holds the difference seed by seed (seed i of a against seed i of b, or against b's
    only seed), the raw material for "how many seeds agree"."""

    value: float
    low: float
    high: float
    n_items: int
    seeds_a: int
    seeds_b: int
    method: str  # "items" | "seeds x items" | "paired seeds x items" | "none"
    per_seed: tuple[float, ...] = ()
    mean_a: float = math.nan  # mean(a) and mean(b) over the shared items
    mean_b: float = math.nan


def paired_diff(a: np.ndarray | list, b: np.ndarray | list, *, paired_seeds: bool = False,
                n_resamples: int = 2000, level: float = 0.95, seed: int = 0, chunk: int = 250) -> Diff:
    """The paired difference of two models' per-item scores, with a (hierarchical) bootstrap interval.

    `a` (S_a, N) and `b` (S_b, N) hold per-item scores, one row per training seed, columns the same
    N items in the same order (1-D means one seed). Each bootstrap replicate draws the items once,
    with replacement, and applies that draw to every seed of both models: the items are shared, so
    the pairing is kept (a model that is better on hard items is compared on the same hard items).
    With several seeds the replicate first draws seeds, with replacement: independently for a and b
    when they are different runs, or one draw for both (`paired_seeds=True`) when a and b are two
    checkpoints of the same seeds (the peak and the end of one run). Seeds and items are crossed,
    not nested (every seed answers every item), so this is the two-way "pigeonhole" bootstrap
    (Owen 2007, "The pigeonhole bootstrap"), resampling seeds, then items. The statistic of a
    replicate is mean over its items of (mean over a's drawn seeds − mean over b's drawn seeds).

    With one seed on each side this is the ordinary paired bootstrap of the per-item differences,
    the same as `scipy.stats.bootstrap((a, b), ..., paired=True, method="percentile")`. With few
    seeds the seed draw underestimates the seed variance by a factor (S−1)/S; docs/evaluate.md
    gives the measured coverage.
    """
    a2, b2 = np.atleast_2d(np.asarray(a, dtype=np.float64)), np.atleast_2d(np.asarray(b, dtype=np.float64))
    (sa, n), (sb, nb) = a2.shape, b2.shape
    if n != nb:
        raise ValueError(f"a and b must score the same items: {n} vs {nb} columns")
    if paired_seeds and sa != sb:
        raise ValueError(f"paired_seeds needs as many seeds in a as in b: {sa} vs {sb}")
    if n == 0 or sa == 0 or sb == 0:
        return Diff(math.nan, math.nan, math.nan, 0, sa, sb, "none")
    mean_a, mean_b = float(a2.mean()), float(b2.mean())
    value = mean_a - mean_b
    per_seed = tuple(float(a2[i].mean() - b2[i if sb == sa else 0].mean()) for i in range(sa)) if sb in (1, sa) \
        else tuple(float(a2.mean() - b2[j].mean()) for j in range(sb))
    rng = np.random.default_rng(seed)
    boot = np.empty(n_resamples)  # (B,)
    if paired_seeds:
        d = a2 - b2  # (S, N): the same seed's two checkpoints
        for lo in range(0, n_resamples, chunk):
            m = min(chunk, n_resamples - lo)
            s_idx = rng.integers(0, sa, size=(m, sa))  # (m, S)
            i_idx = rng.integers(0, n, size=(m, n))  # (m, N)
            per_item = d[s_idx].mean(axis=1)  # (m, N): mean over the drawn seeds
            boot[lo:lo + m] = np.take_along_axis(per_item, i_idx, axis=1).mean(axis=1)
        method = "paired seeds x items" if sa > 1 else "items"
    else:
        for lo in range(0, n_resamples, chunk):
            m = min(chunk, n_resamples - lo)
            pa = a2[rng.integers(0, sa, size=(m, sa))].mean(axis=1) if sa > 1 else np.broadcast_to(a2, (m, n))
            pb = b2[rng.integers(0, sb, size=(m, sb))].mean(axis=1) if sb > 1 else np.broadcast_to(b2, (m, n))
            i_idx = rng.integers(0, n, size=(m, n))  # (m, N), shared by a and b
            boot[lo:lo + m] = np.take_along_axis(pa - pb, i_idx, axis=1).mean(axis=1)
        method = "seeds x items" if max(sa, sb) > 1 else "items"
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(boot, [alpha, 1.0 - alpha])
    return Diff(value, float(low), float(high), n, sa, sb, method, per_seed, mean_a, mean_b)


# the rule `picks_peak` implements, in words: the stages that resolve RUN:best_ood hash it into their key,
# so that a change of the rule (edit this line with it) reruns them
PEAK_RULE = "best checkpoint after step 0 on the items whose crc32(id) is even; ties: the earliest"


def picks_peak(item_id: object) -> bool:
    """Whether an item is one of those a best checkpoint (the OOD peak) is picked on; the others
    measure it. A peak picked as the best of many checkpoints on the items it is then measured on
    scores high partly by luck (the winner's curse: the best of ten scores with a ±0.03 error sits
    about 0.05 above its truth), so picking and measuring use disjoint halves. The half is a hash
    of the item id, so an item is on the same side in every table, whatever else was scored."""
    return zlib.crc32(str(item_id).encode()) % 2 == 0


def held_out(ids: Iterable[object]) -> tuple[np.ndarray, np.ndarray]:
    """Positions in `ids` of the items that pick a peak and of those that measure it (`picks_peak`)."""
    side = np.array([picks_peak(i) for i in ids], dtype=bool)
    return np.flatnonzero(side), np.flatnonzero(~side)
