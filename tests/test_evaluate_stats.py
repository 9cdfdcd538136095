"""Interval and pass@k code against independent computations (numpy loops, scipy, combinatorics)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps

from tunescope.evaluate.stats import bootstrap_ci, ks_for, pass_at_k


def test_bootstrap_matches_a_loop_over_the_same_resamples():
    values = np.random.default_rng(1).integers(0, 2, size=37).astype(float)
    stat, lo, hi = bootstrap_ci(values, n_resamples=500, seed=7)
    rng = np.random.default_rng(7)
    idx = rng.integers(0, len(values), size=(500, len(values)))
    boots = [float(np.mean([values[j] for j in row])) for row in idx]
    assert stat == pytest.approx(values.mean())
    assert lo == pytest.approx(np.percentile(boots, 2.5))
    assert hi == pytest.approx(np.percentile(boots, 97.5))


def test_bootstrap_agrees_with_scipy_percentile_interval():
    values = np.random.default_rng(2).normal(size=200)
    _, lo, hi = bootstrap_ci(values, n_resamples=20000, seed=0)
    ref = sps.bootstrap((values,), np.mean, n_resamples=20000, method="percentile",
                        confidence_level=0.95, rng=np.random.default_rng(3)).confidence_interval
    assert lo == pytest.approx(ref.low, abs=0.01)
    assert hi == pytest.approx(ref.high, abs=0.01)


def test_bootstrap_agrees_with_normal_approximation_on_large_n():
    p, n = 0.3, 4000
    values = (np.random.default_rng(3).random(n) < p).astype(float)
    stat, lo, hi = bootstrap_ci(values, n_resamples=4000, seed=0)
    half = 1.959964 * math.sqrt(stat * (1 - stat) / n)
    assert lo == pytest.approx(stat - half, abs=0.003)
    assert hi == pytest.approx(stat + half, abs=0.003)


def test_weighted_bootstrap_is_a_ratio_of_sums():
    v = np.array([0.5, 2.0, 1.0, 0.0])
    w = np.array([10, 1, 5, 4])
    stat, lo, hi = bootstrap_ci(v, weights=w, n_resamples=300, seed=5)
    assert stat == pytest.approx((v * w).sum() / w.sum())
    idx = np.random.default_rng(5).integers(0, 4, size=(300, 4))
    boots = [sum(v[j] * w[j] for j in row) / sum(w[j] for j in row) for row in idx]
    assert (lo, hi) == pytest.approx(tuple(np.percentile(boots, [2.5, 97.5])))


def test_bootstrap_edge_cases():
    assert all(math.isnan(x) for x in bootstrap_ci([]))
    assert bootstrap_ci([1.0]) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("n", [1, 2, 5, 7])
def test_pass_at_k_matches_brute_force_over_subsets(n):
    for c in range(n + 1):
        outcomes = [1] * c + [0] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(range(n), k))
            brute = sum(any(outcomes[i] for i in s) for s in subsets) / len(subsets)
            assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12)
            assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_ks_for():
    assert ks_for(1) == [1]
    assert ks_for(8) == [1, 2, 4, 8]
    assert ks_for(6) == [1, 2, 4, 6]
