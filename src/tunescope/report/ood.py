"""The second study's tables: each SFT run's ID/OOD curve and its OOD peak, the recovery of RL
and of weight surgery from that peak, and how the OOD answers go wrong (`ood_outcomes`).

Comparisons are paired: every checkpoint of a run is scored on the same items, so the peak's gain
over the start and its loss by the end (`ood_peak`) are mean per-item differences with a bootstrap
interval over seeds and items (`evaluate.stats.paired_diff`); a recovery whose three models share
their items gets the paired-bootstrap interval of `intervene.recovery`, over seeds and items when
the SFT run has several seeds (RL from each seed's end; each intervention is made once per seed).
Each seed's peak is picked on half the items (`evaluate.stats.picks_peak`, as `RUN:best_ood` picks
the interventions' reference) and both tables measure it on the other half. Per-item scores come
from the evaluation stages' samples.jsonl (`report.compare.Items`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tunescope.evaluate.stats import held_out, paired_diff
from tunescope.report.compare import Items
from tunescope.study.stages import parse_stage_id


def _recovery_row(items: Items, run: str, spec: dict[str, Any], kind: str, name: str, label: str,
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
    return _row(run, kind, name, label, ood, rec, float(o["ci_low"]), float(o["ci_high"]),
                float(idv.iloc[-1]) if len(idv) else np.nan, len(ids) if ids is not None else 0)


def _row(run: str, kind: str, name: str, label: str, ood: str, rec: Any, after_low: float, after_high: float,
         id_after: float, n_items: int, seeds: float = np.nan, per_seed: str | float = np.nan) -> dict[str, Any]:
    """One row of the `recovery` table (`seeds` and `per_seed` only for recoveries over seeds)."""
    loss = _loss(rec)
    return {"source": run, "kind": kind, "name": name, "label": label, "suite": ood,
            "ood_reference": rec.ref.value, "ood_target": rec.target.value,
            "loss": loss[0], "loss_low": loss[1], "loss_high": loss[2], "ood_after": rec.edited.value,
            "ood_after_ci_low": after_low, "ood_after_ci_high": after_high, "id_after": id_after, "n_items": n_items,
            "seeds": seeds, "recovery": rec.value, "recovery_low": rec.low, "recovery_high": rec.high,
            "interval": rec.interval, "per_seed": per_seed}


def _loss(rec: Any) -> tuple[float, float, float]:
    """reference − target, the OOD loss a recovery is a share of, with its interval paired over the
    same (seeds and) items when per-item scores are known: a share of an unresolved loss is noise."""
    r, t = rec.ref.per_item, rec.target.per_item
    if r is None or t is None:
        return rec.ref.value - rec.target.value, np.nan, np.nan
    d = paired_diff(np.atleast_2d(r), np.atleast_2d(t), paired_seeds=True)
    return d.value, d.low, d.high


def _curve(a: pd.DataFrame, run: str, spec: dict[str, Any]) -> pd.DataFrame | None:
    """One run's ID and OOD accuracy per checkpoint (the mean over its seeds), with the first seed's
    OOD model paths (the checkpoints the interventions edit)."""
    ood = spec["ood_suite"]
    r = a[a["run"] == run].sort_values("seed", kind="stable")
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


def _held_out_peaks(items: Items, a: pd.DataFrame, run: str, ood: str) -> dict[str, Any] | None:
    """Each seed's OOD peak picked on the items that pick peaks (`evaluate.stats.held_out`), with the
    per-item scores of every checkpoint: `scores` (S, T, N) over the steps all seeds have, `paths`
    (S, T), `peak` (S,) the index of each seed's peak step (after step 0, the earliest of ties) and
    `test` the positions of the items that measure it. None when per-item scores are unknown or too
    few."""
    r = a[(a["run"] == run) & (a["suite"] == ood)]
    by_seed = {s: g.drop_duplicates("step").set_index("step")["path"] for s, g in r.groupby("seed", dropna=False)}
    steps = sorted(set.intersection(*(set(p.index) for p in by_seed.values()))) if by_seed else []
    paths = [[str(p[st]) for st in steps] for p in by_seed.values()]
    m = items.matrix([x for row in paths for x in row], ood) if len(steps) > 2 else None
    if m is None or len(m[1]) < 4:
        return None
    scores = m[0].reshape(len(by_seed), len(steps), -1)  # (S, T, N)
    pick, test = held_out(m[1])
    if not len(pick) or not len(test):
        return None
    peak = 1 + scores[:, 1:, :][:, :, pick].mean(axis=2).argmax(axis=1)  # (S,)
    return {"scores": scores, "steps": steps, "paths": paths, "seeds": list(by_seed), "peak": peak, "test": test}


def _peak_row(items: Items, a: pd.DataFrame, run: str, ood: str, curve: pd.DataFrame,
              peak: pd.Series) -> dict[str, Any]:
    """The OOD peak against the start and the end, paired over seeds and items, measured on items it
    was not picked on (`_held_out_peaks`; `evaluate.stats.picks_peak` says why), over seeds and
    items (`evaluate.stats.paired_diff` with `paired_seeds`)."""
    first, last = curve.iloc[0], curve.iloc[-1]
    row = {"run": run, "suite": ood, "peak_step": int(peak["step"]), "peak_fraction": float(peak["fraction"]),
           "start": float(first["ood"]), "peak": float(peak["ood"]), "last": float(last["ood"]),
           "id_peak": float(peak["id"]), "id_last": float(last["id"])}
    h = _held_out_peaks(items, a, run, ood)
    if h is None:
        nan = {k: np.nan for k in ("rise", "rise_low", "rise_high", "fall", "fall_low", "fall_high")}
        return {**row, **nan, "n_items": 0, "seeds": a.loc[a["run"] == run, "seed"].nunique(dropna=False),
                "peak_steps_held_out": "", "interval": "none", "seeds_agreeing": 0}
    scores, test, t_peak = h["scores"], h["test"], h["peak"]
    peak_items = scores[np.arange(len(t_peak)), t_peak][:, test]  # (S, N_test)
    rise = paired_diff(peak_items, scores[:, 0, test], paired_seeds=True)
    fall = paired_diff(peak_items, scores[:, -1, test], paired_seeds=True)
    agree = sum(x > 0 and y > 0 for x, y in zip(rise.per_seed, fall.per_seed))
    return {**row, "rise": rise.value, "rise_low": rise.low, "rise_high": rise.high, "fall": fall.value,
            "fall_low": fall.low, "fall_high": fall.high, "n_items": len(test), "seeds": len(t_peak),
            "peak_steps_held_out": " ".join(str(h["steps"][t]) for t in t_peak), "interval": rise.method,
            "seeds_agreeing": agree}


def ood_peak(manifest: dict[str, Any], scores: pd.DataFrame, items: Items) -> dict[str, pd.DataFrame]:
    """For runs with an ood_suite: the ID/OOD curve, its OOD peak (paired against the start and the
    end), RL from the run and the interventions' recovery, and the OOD outcome mix."""
    from tunescope.report.tables import accuracy  # tables imports this module

    a = accuracy(scores)
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
        peaks.append(_peak_row(items, a, run, spec["ood_suite"], curve, peak))
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


def _recoveries(items: Items, manifest: dict[str, Any], a: pd.DataFrame, run: str, spec: dict[str, Any],
                curve: pd.DataFrame, peak: pd.Series) -> list[dict[str, Any] | None]:
    """Recovery rows of the runs started from `run` (RL) and of the interventions between its checkpoints."""
    last, recs = curve.iloc[-1], []
    for rl, rspec in manifest["runs"].items():
        if rspec["init"].split(":")[0] == run:
            row = _rl_recovery_row(items, a, run, spec, rl, rspec)
            if row is None:  # per-seed items unknown: the first seed, from the curves
                g = a[a["run"] == rl]
                g = g[g["seed"] == g["seed"].min()]
                start = _curve(a, rl, {**rspec, "ood_suite": spec["ood_suite"], "task": spec["task"]})
                row = _recovery_row(items, run, spec, "run", rl, rspec["label"], g[g["step"] == g["step"].max()],
                                    peak, start.iloc[0] if start is not None else last)
            recs.append(row)
    for iv, ispec in manifest.get("interventions", {}).items():
        if ispec["reference"].split(":")[0] != run:
            continue
        label = f"{ispec['method']} ({iv})"
        edits = {seed: rec.get("result", {}) for name, rec in manifest["stages"].items()
                 for kind, who, seed in [parse_stage_id(name)] if kind == "intervene" and who == iv}
        trios = [(e.get("reference"), e.get("target"), e.get("model")) for _, e in sorted(edits.items(), key=_seed_key)]
        row = _paired_recovery(items, run, spec, "intervention", iv, label, trios,
                               a[a["run"] == iv]) if trios and all(all(t) for t in trios) else None
        if row is None:  # per-item scores unknown: the first edit, from the curves
            result = edits[min(edits, key=lambda sd: _seed_key((sd, None)))] if edits else {}
            t_row, r_row = (curve[curve["step"] == result.get(k)] for k in ("target_step", "reference_step"))
            first = a[a["run"] == iv]
            row = _recovery_row(items, run, spec, "intervention", iv, label, first[first["seed"] == first["seed"].min()]
                                if first["seed"].notna().any() else first, r_row.iloc[0] if len(r_row) else peak,
                                t_row.iloc[0] if len(t_row) else last)
        recs.append(row)
    return recs


def _seed_key(item: tuple[int | None, Any]) -> int:
    return -1 if item[0] is None else item[0]


def _rl_recovery_row(items: Items, a: pd.DataFrame, run: str, spec: dict[str, Any], rl: str,
                     rspec: dict[str, Any]) -> dict[str, Any] | None:
    """RL's recovery over every seed the SFT run and the RL run share: seed s's OOD peak (picked on
    the items that pick peaks, `_held_out_peaks`), its last checkpoint and RL from it, paired over
    seeds and the other items."""
    ood = spec["ood_suite"]
    h = _held_out_peaks(items, a, run, ood)
    after = a[(a["run"] == rl) & (a["suite"] == ood)]
    if h is None:
        return None
    trios: list[tuple[str, str, str]] = []
    for i, sd in enumerate(h["seeds"]):
        r = after[after["seed"] == sd]
        if not r.empty:
            trios.append((h["paths"][i][h["peak"][i]], h["paths"][i][-1], r.loc[r["step"].idxmax(), "path"]))
    rows = a[a["run"] == rl]
    final = rows[rows["step"] == rows.groupby("seed")["step"].transform("max")] if not rows.empty else rows
    return _paired_recovery(items, run, spec, "run", rl, rspec["label"], trios, final) if trios else None


def _paired_recovery(items: Items, run: str, spec: dict[str, Any], kind: str, name: str,
                     label: str, trios: list[tuple[str, str, str]], after: pd.DataFrame) -> dict[str, Any] | None:
    """Recovery over seeds: one (reference, target, edited) trio of model paths per seed, paired over
    seeds and items (`intervene.recovery` with (S, N) per-item scores) on the items that did not pick
    the reference (an OOD peak: `evaluate.stats.picks_peak`); `after` holds the edited models' score
    rows. None when the per-item scores are not all known."""
    from tunescope.intervene.recovery import Score, recovery

    ood = spec["ood_suite"]
    m = items.matrix([str(p) for trio in trios for p in trio], ood)
    test = held_out(m[1])[1] if m is not None else []
    if m is None or not len(test):
        return None
    per = m[0].reshape(len(trios), 3, -1)[:, :, test]  # (S, 3, N_test): reference, target, edited
    rec = recovery(*(Score(float(per[:, j].mean()), per_item=per[:, j]) for j in range(3)))
    o, idv = after[after["suite"] == ood], after.loc[after["suite"] == spec["task"], "value"]
    return _row(run, kind, name, label, ood, rec, float(o["ci_low"].mean()), float(o["ci_high"].mean()),
                float(idv.mean()) if len(idv) else np.nan, len(test), seeds=len(trios),
                per_seed=" ".join(f"{_ratio(*per[i].mean(axis=1)):.3f}" for i in range(len(trios))))


def _ratio(ref: float, tgt: float, after: float) -> float:
    from tunescope.intervene.recovery import ratio

    return ratio(float(ref), float(tgt), float(after))


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
