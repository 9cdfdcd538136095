"""The second study's tables: each SFT run's ID/OOD curve and its OOD peak, the recovery of RL
and of weight surgery from that peak, and how the OOD answers go wrong (`ood_outcomes`).

Comparisons are paired: every checkpoint of a run is scored on the same items, so the peak's gain
over the start and its loss by the end (`ood_peak`) are mean per-item differences with a
bootstrap interval over items (`evaluate.stats.bootstrap_ci` of the differences), and a recovery
whose three models share their items gets the paired-bootstrap interval of
`intervene.recovery`. Per-item scores come from the evaluation stages' samples.jsonl."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tunescope.study.stages import stage_id


class _Items:
    """Per-item scores of every evaluated model by (model path, suite): the mean over samples, by item id."""

    def __init__(self, manifest: dict[str, Any]) -> None:
        self._dirs = [Path(r["dir"]) for r in manifest["stages"].values() if r["kind"] == "evaluate"]
        self._by: dict[tuple[str, str], pd.Series] | None = None

    def get(self, path: Any, suite: str) -> pd.Series | None:
        if self._by is None:
            rows = []
            for d in self._dirs:
                f = d / "samples.jsonl"
                if f.is_file():
                    rows += [{k: r[k] for k in ("path", "suite", "item_id", "score")}
                             for r in map(_record, f.read_text().splitlines()) if r and r.get("mode") != "loglik"]
            df = pd.DataFrame(rows, columns=["path", "suite", "item_id", "score"])
            self._by = {k: g.groupby("item_id")["score"].mean() for k, g in df.groupby(["path", "suite"])}
        return self._by.get((str(path), suite))

    def score(self, path: Any, suite: str, value: float, low: float, high: float, ids: pd.Index | None = None):
        """A recovery Score with per-item scores (on `ids`, in their order) when they are known."""
        from tunescope.intervene.recovery import Score

        s = self.get(path, suite)
        if s is None or ids is None or not ids.isin(s.index).all():
            return Score(value, low, high)
        per = s.loc[ids].to_numpy(dtype=float)
        return Score(float(per.mean()), low, high, per_item=per)


def _record(line: str) -> dict[str, Any] | None:
    """One samples.jsonl record; None for a line a killed writer left half-written."""
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def _paired(items: _Items, a_path: Any, b_path: Any, suite: str, seed: int = 0) -> tuple[float, float, float, int]:
    """(mean of a - b over the items both answered, 95% low, high, n items); NaNs when unknown."""
    from tunescope.evaluate.stats import bootstrap_ci

    a, b = items.get(a_path, suite), items.get(b_path, suite)
    if a is None or b is None:
        return float("nan"), float("nan"), float("nan"), 0
    common = a.index.intersection(b.index)
    d, lo, hi = bootstrap_ci((a.loc[common] - b.loc[common]).to_numpy(dtype=float), seed=seed)
    return d, lo, hi, len(common)


def _recovery_row(items: _Items, run: str, spec: dict[str, Any], kind: str, name: str, label: str,
                  after: pd.DataFrame, ref: pd.Series, tgt: pd.Series) -> dict[str, Any] | None:
    """recovery = (OOD_after - OOD_target) / (OOD_reference - OOD_target), with its interval:
    paired over items when the three models' per-item scores are known, else from the intervals.
    `ref` and `tgt` are curve rows (ood, ood_ci_low, ood_ci_high, path); `after`, the edited model's scores."""
    from tunescope.intervene.recovery import recovery

    ood = spec["ood_suite"]
    o = after[after["suite"] == ood]
    if o.empty:
        return None
    o = o.iloc[-1]
    per = [items.get(p, ood) for p in (ref["path"], tgt["path"], o["path"])]
    ids = None if any(x is None for x in per) else per[0].index.intersection(per[1].index).intersection(per[2].index)
    ids = ids if ids is not None and len(ids) else None
    rec = recovery(items.score(ref["path"], ood, float(ref["ood"]), float(ref["ood_ci_low"]), float(ref["ood_ci_high"]), ids),
                   items.score(tgt["path"], ood, float(tgt["ood"]), float(tgt["ood_ci_low"]), float(tgt["ood_ci_high"]), ids),
                   items.score(o["path"], ood, float(o["value"]), float(o["ci_low"]), float(o["ci_high"]), ids))
    idv = after.loc[after["suite"] == spec["task"], "value"]
    return {"source": run, "kind": kind, "name": name, "label": label, "suite": ood,
            "ood_reference": rec.ref.value, "ood_target": rec.target.value, "ood_after": rec.edited.value,
            "ood_after_ci_low": float(o["ci_low"]), "ood_after_ci_high": float(o["ci_high"]),
            "id_after": float(idv.iloc[-1]) if len(idv) else np.nan, "n_items": len(ids) if ids is not None else 0,
            "recovery": rec.value, "recovery_low": rec.low, "recovery_high": rec.high, "interval": rec.interval}


def _curve(a: pd.DataFrame, run: str, spec: dict[str, Any]) -> pd.DataFrame | None:
    """One run's (first seed's) ID and OOD accuracy per checkpoint, with the OOD rows' model paths."""
    ood = spec["ood_suite"]
    r = a[a["run"] == run]
    r = r[r["seed"] == r["seed"].min()]
    wide = r[r["suite"].isin([spec["task"], ood])].pivot_table(index=["step", "fraction"], columns="suite",
                                                               values=["value", "ci_low", "ci_high"])
    if wide.empty or ood not in wide["value"] or spec["task"] not in wide["value"]:
        return None
    paths = r[r["suite"] == ood].drop_duplicates("step").set_index("step")["path"]
    steps = [i[0] for i in wide.index]
    return pd.DataFrame({"run": run, "step": steps, "fraction": [i[1] for i in wide.index],
                         "id": wide[("value", spec["task"])].to_numpy(),
                         "id_ci_low": wide[("ci_low", spec["task"])].to_numpy(),
                         "id_ci_high": wide[("ci_high", spec["task"])].to_numpy(),
                         "ood": wide[("value", ood)].to_numpy(), "ood_ci_low": wide[("ci_low", ood)].to_numpy(),
                         "ood_ci_high": wide[("ci_high", ood)].to_numpy(),
                         "path": [paths.get(st) for st in steps]})


def _peak_row(items: _Items, run: str, ood: str, curve: pd.DataFrame, peak: pd.Series) -> dict[str, Any]:
    """The OOD peak against the start and the end, as paired per-item differences."""
    first, last = curve.iloc[0], curve.iloc[-1]
    rise = _paired(items, peak["path"], first["path"], ood)
    fall = _paired(items, peak["path"], last["path"], ood)
    return {"run": run, "suite": ood, "peak_step": int(peak["step"]), "peak_fraction": float(peak["fraction"]),
            "start": float(first["ood"]), "peak": float(peak["ood"]), "last": float(last["ood"]),
            "rise": rise[0], "rise_low": rise[1], "rise_high": rise[2],
            "fall": fall[0], "fall_low": fall[1], "fall_high": fall[2], "n_items": min(rise[3], fall[3]),
            "id_peak": float(peak["id"]), "id_last": float(last["id"])}


def ood_peak(manifest: dict[str, Any], scores: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """For runs with an ood_suite: the ID/OOD curve, its OOD peak (paired against the start and the
    end), RL from the run and the interventions' recovery, and the OOD outcome mix."""
    from tunescope.report.tables import accuracy  # tables imports this module

    a = accuracy(scores)
    items = _Items(manifest)
    curves, peaks, recs = [], [], []
    for run, spec in manifest["runs"].items():
        if not spec.get("ood_suite"):
            continue
        curve = _curve(a, run, spec)
        if curve is None:
            continue
        after0 = curve[curve["step"] > 0]
        peak = after0.loc[after0["ood"].idxmax()] if not after0.empty else curve.iloc[0]
        curve["is_peak"] = curve["step"] == peak["step"]
        curves.append(curve)
        peaks.append(_peak_row(items, run, spec["ood_suite"], curve, peak))
        recs += _recoveries(items, manifest, a, run, spec, curve, peak)
    recs = [r for r in recs if r is not None]
    out = {}
    if curves:
        out["ood_curve"] = pd.concat(curves, ignore_index=True)
        out["ood_peak"] = pd.DataFrame(peaks)
    if recs:
        out["recovery"] = pd.DataFrame(recs)
    mix = _outcome_mix(manifest, scores)
    if mix is not None:
        out["ood_outcomes"] = mix
    return out


def _recoveries(items: _Items, manifest: dict[str, Any], a: pd.DataFrame, run: str, spec: dict[str, Any],
                curve: pd.DataFrame, peak: pd.Series) -> list[dict[str, Any] | None]:
    """Recovery rows of the runs started from `run` (RL) and of the interventions between its checkpoints."""
    last, recs = curve.iloc[-1], []
    for rl, rspec in manifest["runs"].items():
        if rspec["init"].split(":")[0] == run:
            g = a[a["run"] == rl]
            g = g[g["seed"] == g["seed"].min()]
            start = _curve(a, rl, {**rspec, "ood_suite": spec["ood_suite"], "task": spec["task"]})
            recs.append(_recovery_row(items, run, spec, "run", rl, rspec["label"], g[g["step"] == g["step"].max()],
                                      peak, start.iloc[0] if start is not None else last))
    for iv, ispec in manifest.get("interventions", {}).items():
        if ispec["reference"].split(":")[0] != run:
            continue
        result = manifest["stages"].get(stage_id("intervene", iv), {}).get("result", {})
        t_row, r_row = (curve[curve["step"] == result.get(k)] for k in ("target_step", "reference_step"))
        recs.append(_recovery_row(items, run, spec, "intervention", iv, f"{ispec['method']} ({iv})",
                                  a[a["run"] == iv], r_row.iloc[0] if len(r_row) else peak,
                                  t_row.iloc[0] if len(t_row) else last))
    return recs


def _outcome_mix(manifest: dict[str, Any], scores: pd.DataFrame) -> pd.DataFrame | None:
    """How each checkpoint answers the OOD suites: the share of every outcome class of a
    `Diagnosed` task (correct, partial, faces_as_10, …), one row per run, seed and step."""
    oods = {spec["ood_suite"] for spec in manifest["runs"].values() if spec.get("ood_suite")}
    o = scores[scores["metric"].str.startswith("outcome:") & scores["suite"].isin(oods)]
    if o.empty:
        return None
    wide = o.assign(outcome=o["metric"].str.removeprefix("outcome:")).pivot_table(
        index=["run", "label", "kind", "seed", "step", "fraction", "suite"], columns="outcome", values="value",
        sort=False)
    order = [c for c in dict.fromkeys(o["metric"].str.removeprefix("outcome:")) if c in wide.columns]
    return wide[order].reset_index().rename_axis(columns=None)
