"""Recovery: how much of what TARGET lost does an edited model get back?

    recovery = (edited − target) / (ref − target)

1 means the edit brought the score all the way back to REF's, 0 means no change from TARGET,
negative means it made things worse. Jin et al. ("RL is neither a panacea nor a mirage", 2025)
report it for out-of-distribution accuracy with REF = the SFT checkpoint with the best OOD score,
TARGET = a later SFT checkpoint: (16.24 − 8.97) / (17.52 − 8.97) ≈ 85% for Llama-3.2-11B after RL.
It is undefined (NaN) when ref equals target: nothing was lost, so nothing can be recovered.

The interval, in order of preference:

- "paired-bootstrap": when all three scores carry per-item scores over the same items (same order),
  items are resampled with replacement, the same indices for all three models, and the percentile
  interval of the recovery over the resamples is reported. Pairing matters: the three models are
  scored on one item set, and their per-item scores are strongly correlated. Replicates whose
  denominator is zero are dropped (their count is reported).
- "paired seeds x items": the same with per-item scores of several training seeds, (S, N) each,
  row s of the three belonging together (the peak and the end of SFT seed s, and RL from that seed's
  end): each replicate draws seeds, then items, with replacement, one draw for all three models
  (the two-way bootstrap of `evaluate.stats.paired_diff` with paired seeds), and takes the recovery
  of the three replicate means.
- "interval-arithmetic": otherwise, when all three carry an interval, the range of the formula over
  the box [ref] × [target] × [edited]. The formula is monotone in each argument while the
  denominator keeps its sign, so the range is attained at the box's corners. This treats the three
  intervals as independent worst cases and is conservative; it is unbounded (−inf, inf) when the
  denominator interval contains 0.
- "none": NaN bounds; the three score intervals are still reported beside it (`Recovery.ref` etc.).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tunescope.errors import UserError


@dataclass(frozen=True)
class Score:
    """One model's score on a suite: a value, its interval, and optionally the per-item scores."""

    value: float
    low: float = math.nan
    high: float = math.nan
    # (n_items,) or (n_seeds, n_items), value == mean(per_item); same seeds and item order across models
    per_item: Sequence[float] | np.ndarray | None = None


@dataclass(frozen=True)
class Recovery:
    value: float  # (edited − target) / (ref − target); NaN when ref == target
    low: float
    high: float
    interval: str  # "paired-bootstrap", "interval-arithmetic" or "none" (see module docstring)
    ref: Score
    target: Score
    edited: Score
    level: float = 0.95
    n_undefined: int = 0  # bootstrap replicates with ref == target (dropped)

    def to_dict(self) -> dict[str, float | str | int]:
        """Flat row for tables: recovery and the three scores with their intervals."""
        row: dict[str, float | str | int] = {"recovery": self.value, "recovery_low": self.low,
                                             "recovery_high": self.high, "interval": self.interval,
                                             "level": self.level, "n_undefined": self.n_undefined}
        for key, s in (("ref", self.ref), ("target", self.target), ("edited", self.edited)):
            row.update({key: s.value, f"{key}_low": s.low, f"{key}_high": s.high})
        return row


def ratio(ref: float, target: float, edited: float) -> float:
    """(edited − target) / (ref − target), NaN when ref == target."""
    den = ref - target
    return (edited - target) / den if den != 0 else math.nan


def _bootstrap(ref: np.ndarray, target: np.ndarray, edited: np.ndarray, level: float, n_boot: int,
               seed: int) -> tuple[float, float, int]:
    rng = np.random.default_rng(seed)
    if ref.ndim == 2:  # (S, N): seeds, then items, one draw for the three models
        n_s, n = ref.shape
        s_idx = rng.integers(0, n_s, size=(n_boot, n_s))  # (B, S)
        i_idx = rng.integers(0, n, size=(n_boot, n))  # (B, N)
        r, t, e = (np.stack([x[si][:, ii].mean() for si, ii in zip(s_idx, i_idx)]) for x in (ref, target, edited))
    else:
        n = ref.shape[0]
        idx = rng.integers(0, n, size=(n_boot, n))  # (B, n), shared by the three models
        r, t, e = ref[idx].mean(1), target[idx].mean(1), edited[idx].mean(1)  # (B,)
    den = r - t
    ok = den != 0
    rec = (e[ok] - t[ok]) / den[ok]
    if rec.size == 0:
        return math.nan, math.nan, n_boot
    q = (1 - level) / 2
    lo, hi = np.quantile(rec, [q, 1 - q])
    return float(lo), float(hi), int(n_boot - ok.sum())


def _corners(ref: Score, target: Score, edited: Score) -> tuple[float, float]:
    den_lo, den_hi = ref.low - target.high, ref.high - target.low
    if den_lo <= 0 <= den_hi:
        return -math.inf, math.inf
    vals = [ratio(r, t, e) for r, t, e in itertools.product((ref.low, ref.high), (target.low, target.high),
                                                             (edited.low, edited.high))]
    return min(vals), max(vals)


def recovery(ref: Score, target: Score, edited: Score, *, level: float = 0.95, n_boot: int = 2000,
             seed: int = 0) -> Recovery:
    """Recovery of `edited` between `target` (0) and `ref` (1), with an interval (module docstring)."""
    value = ratio(ref.value, target.value, edited.value)
    scores = (ref, target, edited)
    if all(s.per_item is not None for s in scores):
        arrays = [np.asarray(s.per_item, dtype=np.float64) for s in scores]
        if len({a.shape for a in arrays}) != 1 or arrays[0].ndim not in (1, 2) or arrays[0].size == 0:
            raise UserError("per-item scores of REF, TARGET and the edited model must cover the same items")
        for name, s, a in zip(("ref", "target", "edited"), scores, arrays):
            if not math.isclose(s.value, float(a.mean()), rel_tol=1e-6, abs_tol=1e-9):
                raise UserError(f"{name} score {s.value} is not the mean of its per-item scores ({a.mean()})")
        lo, hi, undefined = _bootstrap(*arrays, level=level, n_boot=n_boot, seed=seed)
        kind = "paired seeds x items" if arrays[0].ndim == 2 and arrays[0].shape[0] > 1 else "paired-bootstrap"
        return Recovery(value, lo, hi, kind, ref, target, edited, level, undefined)
    if all(math.isfinite(v) for s in scores for v in (s.low, s.high)):
        lo, hi = _corners(ref, target, edited)
        return Recovery(value, lo, hi, "interval-arithmetic", ref, target, edited, level)
    return Recovery(value, math.nan, math.nan, "none", ref, target, edited, level)
