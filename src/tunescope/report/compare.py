"""Paired comparisons of two models on the items both answered: the numbers behind the verdicts.

Every model of a study is scored on the same items of a suite, so a difference between two models
is measured item by item (`evaluate.stats.paired_diff`): mean per-item difference with a bootstrap
interval that resamples the items, and, when a run has several training seeds, its seeds first
(seeds x items). Two intervals that merely fail to overlap are neither the right test (they ignore
that the items are shared) nor a strong one; the table `comparisons` holds one row per comparison
the findings make:

- `vs base`: each training run's final checkpoint against the base model, on every suite;
- `sft vs grpo`: the SFT and RL (GRPO, RLOO, an imported PPO/RLVR) runs of one task, both from the
  base model with every tensor trained (the methods' own comparison), on every suite;
- `variant vs plain`: a run with frozen or selected tensors against the run of the same recipe
  without selectors.

Per-item scores come from the evaluation stages' samples.jsonl: the mean over samples of an item,
and for a multiple-choice suite scored by option likelihood, the likelihood pick (the records the
suite's `accuracy` is computed from). `paired_kl` pairs two runs' KL to the base the same way, over
the KL items both were scored on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tunescope.evaluate.outputs import item_scores
from tunescope.evaluate.stats import Diff, bootstrap_ci, paired_diff

POOLED_OOD = "out-of-domain (pooled)"  # the suite name of a comparison on all of a run's OOD suites' items
COLUMNS = ["comparison", "a", "b", "a_label", "b_label", "suite", "a_value", "b_value", "diff", "ci_low",
           "ci_high", "n_items", "seeds_a", "seeds_b", "interval", "per_seed", "seeds_agreeing"]


class Items:
    """Per-item scores of every evaluated model by (model path, suite): the mean over samples, by item id."""

    def __init__(self, manifest: dict[str, Any]) -> None:
        self._dirs = [Path(r["dir"]) for r in manifest["stages"].values() if r["kind"] == "evaluate"]
        self._by: dict[tuple[str, str], pd.Series] | None = None

    def get(self, path: Any, suite: str) -> pd.Series | None:
        if self._by is None:
            self._by = item_scores(self._dirs)
        return self._by.get((str(path), suite))

    def score(self, path: Any, suite: str, value: float, low: float, high: float, ids: pd.Index | None = None):
        """A recovery Score with per-item scores (on `ids`, in their order) when they are known."""
        from tunescope.intervene.recovery import Score

        s = self.get(path, suite)
        if s is None or ids is None or not ids.isin(s.index).all():
            return Score(value, low, high)
        per = s.loc[ids].to_numpy(dtype=float)
        return Score(float(per.mean()), low, high, per_item=per)

    def matrix(self, paths: list[Any], suite: str, also: list[Any] = ()) -> tuple[np.ndarray, pd.Index] | None:
        """(len(paths), N) per-item scores of `paths` on the items they (and `also`) all answered."""
        series = [self.get(p, suite) for p in [*paths, *also]]
        if not paths or any(s is None for s in series):
            return None
        ids = series[0].index
        for s in series[1:]:
            ids = ids.intersection(s.index)
        return np.stack([s.loc[ids].to_numpy(dtype=float) for s in series[:len(paths)]]), ids


def compare(items: Items, a_paths: list[Any], b_paths: list[Any], suite: str | list[str], *,
            paired_seeds: bool = False, seed: int = 0) -> Diff:
    """a − b over the items all of a's and b's models answered (one path per seed), on one suite or
    on the items of several suites pooled (each item weighs the same)."""
    a_parts, b_parts = [], []
    for s in [suite] if isinstance(suite, str) else suite:
        a, b = items.matrix(a_paths, s, also=b_paths), items.matrix(b_paths, s, also=a_paths)
        if a is None or b is None:
            return Diff(np.nan, np.nan, np.nan, 0, len(a_paths), len(b_paths), "none")
        a_parts.append(a[0])
        b_parts.append(b[0])
    a_all, b_all = np.concatenate(a_parts, axis=1), np.concatenate(b_parts, axis=1)  # (S, N) over the suites
    if not a_all.shape[1]:
        return Diff(np.nan, np.nan, np.nan, 0, len(a_paths), len(b_paths), "none")
    return paired_diff(a_all, b_all, paired_seeds=paired_seeds, seed=seed)


# ---------------------------------------------------------------------------------------------
# which runs are compared


def plain_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs that start from the base model with every tensor trained (the methods' own comparison)."""
    if runs is None or runs.empty:
        return pd.DataFrame(columns=["run", "method", "task"])
    return runs[(runs["init"] == "base") & (runs["freeze"].fillna("") == "") & (runs["train_only"].fillna("") == "")]


def method_pairs(runs: pd.DataFrame) -> list[tuple[str, str]]:
    """(SFT run, RL run) pairs of plain runs on the same training task and, where both are known, the
    same number of steps (RL: GRPO, RLOO, or an imported PPO or RLVR run; a 15-step SFT run is not
    GRPO's matched arm)."""
    from tunescope.train.config import RL_METHODS

    def steps(r: Any) -> float | None:
        v = getattr(r, "max_steps", None)
        return None if v is None or pd.isna(v) else float(v)

    p = plain_runs(runs)
    return [(s.run, g.run) for s in p[p["method"] == "sft"].itertuples()
            for g in p[p["method"].isin(RL_METHODS)].itertuples()
            if s.task == g.task and (None in (steps(s), steps(g)) or steps(s) == steps(g))]


def variant_pairs(runs: pd.DataFrame, manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """(variant, plain) pairs: a run with freeze/train_only selectors and the run of its recipe without."""
    specs, keys = manifest["runs"], ("method", "task", "init", "budget")
    out = []
    for name, spec in specs.items():
        if not (spec.get("freeze") or spec.get("train_only")):
            continue
        plain = [n for n, s in specs.items() if not (s.get("freeze") or s.get("train_only"))
                 and all(s.get(k) == spec.get(k) for k in keys)]
        if plain:
            out.append((name, plain[0]))
    return out


def final_paths(acc: pd.DataFrame, run: str) -> list[str]:
    """The final checkpoint's model path of each seed of `run` (seed order), from the accuracy rows."""
    r = acc[acc["run"] == run]
    if r.empty:
        return []
    last = r[r["step"] == r.groupby("seed", dropna=False)["step"].transform("max")]
    return list(last.sort_values("seed").drop_duplicates("seed")["path"].astype(str))


# ---------------------------------------------------------------------------------------------
# the table


def comparisons(manifest: dict[str, Any], acc: pd.DataFrame, runs: pd.DataFrame, items: Items) -> pd.DataFrame:
    """One row per paired comparison the findings make (see the module docstring)."""
    label = {r: s["label"] for r, s in manifest["runs"].items()} | {"base": "base"}
    suites = {r: list(acc.loc[acc["run"] == r, "suite"].drop_duplicates()) for r in manifest["runs"]}
    jobs = [("vs base", r, "base") for r in manifest["runs"]]
    jobs += [("sft vs grpo", s, g) for s, g in method_pairs(runs)]
    jobs += [("variant vs plain", v, p) for v, p in variant_pairs(runs, manifest)]
    ood = dict(zip(runs["run"], runs["ood_suites"].fillna("").str.split()))
    rows = []
    for kind, a, b in jobs:
        pa, pb = final_paths(acc, a), final_paths(acc, b)
        if not pa or not pb:
            continue
        todo = [s for s in suites[a] if b == "base" or s in suites[b]]
        pooled = [s for s in ood.get(a, []) if s in todo]
        for suite in todo + ([pooled] if kind == "sft vs grpo" and pooled else []):
            d = compare(items, pa, pb, suite)
            if d.method == "none":
                continue
            suite = suite if isinstance(suite, str) else POOLED_OOD
            agree = sum(np.sign(x) == np.sign(d.value) != 0 for x in d.per_seed)  # with the pooled estimate's sign
            rows.append({"comparison": kind, "a": a, "b": b, "a_label": label.get(a, a), "b_label": label.get(b, b),
                         "suite": suite, "a_value": d.mean_a, "b_value": d.mean_b, "diff": d.value, "ci_low": d.low,
                         "ci_high": d.high, "n_items": d.n_items, "seeds_a": d.seeds_a, "seeds_b": d.seeds_b,
                         "interval": d.method, "per_seed": " ".join(f"{x:+.4f}" for x in d.per_seed),
                         "seeds_agreeing": int(agree)})
    return pd.DataFrame(rows, columns=COLUMNS)


def _item_kl(rows: pd.DataFrame, name: str = "kl") -> tuple[np.ndarray, np.ndarray] | None:
    """Per KL item, a run's final KL sums (mean over its seeds) and token counts; None when not recorded
    or when its seeds were scored along different responses (token counts that differ)."""
    if f"{name}_item_sums" not in rows or rows[f"{name}_item_sums"].isna().any():
        return None
    sums = [np.asarray(str(x).split(), dtype=np.float64) for x in rows[f"{name}_item_sums"]]
    counts = {str(x) for x in rows[f"{name}_item_tokens"]}
    tokens = np.asarray(str(rows[f"{name}_item_tokens"].iloc[0]).split(), dtype=np.float64)
    if len(counts) > 1 or not len(tokens) or any(len(x) != len(tokens) for x in sums):
        return None
    return np.mean(sums, axis=0), tokens


def paired_kl(a: pd.DataFrame, b: pd.DataFrame, name: str = "kl") -> tuple[float, float, float] | None:
    """KL(a) − KL(b), token-pooled, with an item bootstrap over the KL items both were scored on; `name`
    "fkl" pairs the forward KL along samples of the base (the same samples when the counts agree)."""
    ka, kb = _item_kl(a, name), _item_kl(b, name)
    if ka is None or kb is None or len(ka[1]) != len(kb[1]) or not (ka[1] == kb[1]).all() or ka[1].sum() <= 0:
        return None
    n = ka[1]
    per = np.divide(ka[0] - kb[0], n, out=np.zeros_like(n), where=n > 0)
    return bootstrap_ci(per, weights=n)
