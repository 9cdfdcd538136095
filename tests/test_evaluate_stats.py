"""Interval and pass@k code against independent computations (numpy loops, scipy, combinatorics)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps

from tunescope.evaluate.stats import bootstrap_ci, ks_for, paired_diff, pass_at_k


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


# --- paired comparisons ------------------------------------------------------------------------


def _two_models(seeds_a: int, seeds_b: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """0/1 scores of two correlated models: a shared item difficulty, a per-seed shift."""
    rng = np.random.default_rng(seed)
    d = rng.normal(0, 1.5, n)
    pa = 1 / (1 + np.exp(-(0.5 + d + rng.normal(0, 0.4, (seeds_a, 1)))))
    pb = 1 / (1 + np.exp(-(d + rng.normal(0, 0.4, (seeds_b, 1)))))
    return (rng.random((seeds_a, n)) < pa).astype(float), (rng.random((seeds_b, n)) < pb).astype(float)


def test_paired_diff_with_one_seed_agrees_with_scipy_paired_bootstrap():
    a, b = _two_models(1, 1, 150, seed=4)
    d = paired_diff(a[0], b[0], n_resamples=20000, seed=0)
    ref = sps.bootstrap((a[0], b[0]), lambda x, y, axis=-1: np.mean(x - y, axis=axis), paired=True,
                        n_resamples=20000, method="percentile", rng=np.random.default_rng(9)).confidence_interval
    assert d.value == pytest.approx(a.mean() - b.mean())
    assert (d.method, d.n_items, d.seeds_a, d.seeds_b) == ("items", 150, 1, 1)
    assert d.low == pytest.approx(ref.low, abs=0.008)
    assert d.high == pytest.approx(ref.high, abs=0.008)


def _naive_two_way(a: np.ndarray, b: np.ndarray, paired_seeds: bool, reps: int, seed: int) -> np.ndarray:
    """The seeds-then-items bootstrap written as a plain loop, replicate by replicate."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(reps):
        sa = rng.choice(a.shape[0], a.shape[0])
        sb = sa if paired_seeds else rng.choice(b.shape[0], b.shape[0])
        items = rng.choice(a.shape[1], a.shape[1])
        out.append(np.mean([np.mean([a[s, i] for s in sa]) - np.mean([b[s, i] for s in sb]) for i in items]))
    return np.asarray(out)


@pytest.mark.parametrize("paired_seeds", [False, True])
def test_paired_diff_with_seeds_agrees_with_a_naive_two_way_bootstrap(paired_seeds):
    a, b = _two_models(3, 3, 60, seed=5)
    d = paired_diff(a, b, paired_seeds=paired_seeds, n_resamples=20000, seed=0)
    ref = np.percentile(_naive_two_way(a, b, paired_seeds, 6000, seed=11), [2.5, 97.5])
    assert d.method == ("paired seeds x items" if paired_seeds else "seeds x items")
    assert d.low == pytest.approx(ref[0], abs=0.012)
    assert d.high == pytest.approx(ref[1], abs=0.012)
    assert d.per_seed == pytest.approx([a[i].mean() - b[i].mean() for i in range(3)])


def test_paired_diff_is_narrower_than_the_marginal_intervals_would_suggest():
    rng = np.random.default_rng(6)
    a = (rng.random(200) < 0.5).astype(float)
    b = a.copy()
    flip = rng.choice(200, 20, replace=False)
    b[flip] = 1 - b[flip]  # two models that agree on 90% of the items
    d = paired_diff(a, b, seed=0)
    _, alo, ahi = bootstrap_ci(a, seed=0)
    _, blo, bhi = bootstrap_ci(b, seed=0)
    assert d.high - d.low < 0.5 * ((ahi - alo) ** 2 + (bhi - blo) ** 2) ** 0.5  # the pairing removes item variance


def test_paired_diff_with_a_seed_effect_is_wider_than_items_alone():
    a, b = _two_models(3, 1, 200, seed=7)
    a[0] = np.maximum(a[0], (np.arange(200) % 3 == 0))  # one seed clearly better than the others
    with_seeds = paired_diff(a, b, seed=0)
    items_only = paired_diff(a.mean(axis=0), b, seed=0)
    assert with_seeds.value == pytest.approx(items_only.value)
    assert with_seeds.high - with_seeds.low > items_only.high - items_only.low


def test_paired_diff_rejects_other_items_and_unmatched_seeds():
    with pytest.raises(ValueError, match="same items"):
        paired_diff(np.ones((2, 5)), np.ones((1, 4)))
    with pytest.raises(ValueError, match="as many seeds"):
        paired_diff(np.ones((2, 5)), np.ones((3, 5)), paired_seeds=True)
    assert math.isnan(paired_diff(np.ones((1, 0)), np.ones((1, 0))).value)


def test_paired_diff_covers_the_true_difference_at_close_to_95_percent():
    from bench.bench_coverage import coverage

    one_seed = coverage(1, 100, 0.0, reps=300, n_resamples=500)
    three_seeds = coverage(3, 100, 0.3, reps=200, n_resamples=500)
    assert 0.90 <= one_seed["coverage"] <= 0.985, one_seed
    assert 0.80 <= three_seeds["coverage"] <= 0.985, three_seeds
