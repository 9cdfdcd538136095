"""Recovery = (edited - target) / (ref - target), its intervals, checked against independent computations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from tunescope.errors import UserError
from tunescope.intervene.recovery import Score, recovery


@pytest.mark.parametrize("peak, sft, after, want", [(17.52, 8.97, 16.24, 0.850), (19.67, 17.09, 19.66, 0.996)])
def test_reproduces_the_brief(peak, sft, after, want):
    # Jin et al. 2025: OOD accuracy of the OOD-peak SFT checkpoint, the later SFT one, and after RL
    assert recovery(Score(peak), Score(sft), Score(after)).value == pytest.approx(want, abs=5e-4)


def test_undefined_when_ref_equals_target():
    rec = recovery(Score(0.4, 0.3, 0.5), Score(0.4, 0.3, 0.5), Score(0.5, 0.4, 0.6))
    assert math.isnan(rec.value)
    assert rec.low == -math.inf and rec.high == math.inf
    assert rec.interval == "interval-arithmetic"
    assert math.isnan(recovery(Score(0.4), Score(0.4), Score(0.5)).value)


def test_interval_arithmetic_equals_brute_force_range():
    ref, target, edited = Score(0.60, 0.55, 0.66), Score(0.30, 0.26, 0.35), Score(0.50, 0.44, 0.53)
    rec = recovery(ref, target, edited)
    grid = [np.linspace(s.low, s.high, 31) for s in (ref, target, edited)]
    r, t, e = np.meshgrid(*grid, indexing="ij")
    f = (e - t) / (r - t)
    assert rec.interval == "interval-arithmetic"
    assert rec.low == pytest.approx(f.min(), rel=1e-12) and rec.high == pytest.approx(f.max(), rel=1e-12)
    assert rec.low < rec.value < rec.high
    row = rec.to_dict()
    assert row["recovery"] == rec.value and row["edited_low"] == 0.44


def test_no_interval_without_one():
    rec = recovery(Score(0.6), Score(0.3, 0.2, 0.4), Score(0.5))
    assert rec.interval == "none" and math.isnan(rec.low) and rec.value == pytest.approx(2 / 3)


def test_paired_bootstrap_against_loop_and_delta_method():
    rng = np.random.default_rng(7)
    n = 400
    ref = (rng.random(n) < 0.6).astype(float)  # (n,) per-item correctness
    lost = (ref == 1) & (rng.random(n) < 0.4)  # TARGET forgets 40% of what REF solved
    target = np.where(lost, 0.0, ref)
    edited = np.where(lost & (rng.random(n) < 0.6), 1.0, target)  # the edit wins back ~60% of it
    scores = [Score(float(a.mean()), per_item=a.tolist()) for a in (ref, target, edited)]
    rec = recovery(*scores, n_boot=3000, seed=11)
    assert rec.interval == "paired-bootstrap"
    assert rec.value == pytest.approx((edited.mean() - target.mean()) / (ref.mean() - target.mean()))

    # the same resamples, computed with a plain loop
    idx_all = np.random.default_rng(11).integers(0, n, size=(3000, n))
    reps = []
    for idx in idx_all:
        r, t, e = ref[idx].mean(), target[idx].mean(), edited[idx].mean()
        if r != t:
            reps.append((e - t) / (r - t))
    lo, hi = np.quantile(reps, [0.025, 0.975])
    assert rec.low == pytest.approx(lo) and rec.high == pytest.approx(hi)

    # width against the delta method for a ratio of paired means (independent of resampling)
    d, m = ref - target, edited - target
    num, den = m.mean(), d.mean()
    grad = np.array([1 / den, -num / den**2])
    var = grad @ np.cov(np.stack([m, d])) @ grad / n
    assert (rec.high - rec.low) == pytest.approx(2 * 1.96 * math.sqrt(var), rel=0.2)


def test_per_item_mismatch_is_a_user_error():
    with pytest.raises(UserError, match="same items"):
        recovery(Score(0.5, per_item=[0, 1]), Score(0.0, per_item=[0, 0, 0]), Score(1.0, per_item=[1, 1]))
    with pytest.raises(UserError, match="not the mean"):
        recovery(Score(0.9, per_item=[0, 1]), Score(0.0, per_item=[0, 0]), Score(1.0, per_item=[1, 1]))


def test_bootstrap_drops_degenerate_resamples():
    ref, target = [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]
    rec = recovery(Score(0.25, per_item=ref), Score(0.0, per_item=target), Score(0.25, per_item=ref), n_boot=500)
    assert 0 < rec.n_undefined < 500  # resamples without item 0 have ref == target
    assert rec.low == rec.high == 1.0
    assert list(itertools.islice(rec.to_dict(), 1)) == ["recovery"]


def test_seeds_by_items_bootstrap_matches_an_explicit_two_way_resampling():
    """(S, N) per-item scores, rows paired across the three models: the value is the recovery of the
    three means; each replicate draws seeds then items, one draw for all three (checked against an
    explicit loop over the same draws), and the interval widens when seeds disagree."""
    rng = np.random.default_rng(4)
    s, n = 3, 60
    ref = (rng.random((s, n)) < 0.6).astype(float)
    tgt = (rng.random((s, n)) < 0.3).astype(float)
    aft = (rng.random((s, n)) < 0.5).astype(float)
    sc = [Score(float(x.mean()), per_item=x) for x in (ref, tgt, aft)]
    rec = recovery(*sc, n_boot=400, seed=7)
    assert rec.interval == "paired seeds x items"
    assert rec.value == pytest.approx((aft.mean() - tgt.mean()) / (ref.mean() - tgt.mean()), abs=1e-12)
    draws = np.random.default_rng(7)
    s_idx, i_idx = draws.integers(0, s, size=(400, s)), draws.integers(0, n, size=(400, n))
    reps = []
    for b in range(400):
        means = []
        for x in (ref, tgt, aft):
            total = 0.0
            for si in s_idx[b]:
                for ii in i_idx[b]:
                    total += x[si, ii]
            means.append(total / (s * n))
        if means[0] != means[1]:
            reps.append((means[2] - means[1]) / (means[0] - means[1]))
    lo, hi = np.quantile(reps, [0.025, 0.975])
    assert (rec.low, rec.high) == pytest.approx((lo, hi), abs=1e-12)
    # seeds that disagree (one seed recovers nothing) widen the interval beyond the items' alone
    aft2 = aft.copy()
    aft2[0] = tgt[0]
    wide = recovery(sc[0], sc[1], Score(float(aft2.mean()), per_item=aft2), n_boot=400, seed=7)
    one = recovery(*(Score(float(x.reshape(-1).mean()), per_item=x.reshape(-1)) for x in (ref, tgt, aft2)),
                   n_boot=400, seed=7)
    assert wide.high - wide.low > one.high - one.low
