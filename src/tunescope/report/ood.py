"""The second study's tables: each SFT run's ID/OOD curve and its OOD peak, the recovery of RL
and of weight surgery from that peak, and how the OOD answers go wrong (`ood_outcomes`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def _recovery_row(run: str, spec: dict[str, Any], kind: str, name: str, label: str, g: pd.DataFrame,
                  ref_s: Any, tgt_s: Any) -> dict[str, Any] | None:
    """recovery = (OOD_after - OOD_target) / (OOD_reference - OOD_target), with its interval."""
    from tunescope.intervene.recovery import Score, recovery

    ood = spec["ood_suite"]
    o = g[g["suite"] == ood]
    if o.empty:
        return None
    o = o.iloc[-1]
    rec = recovery(ref_s, tgt_s, Score(float(o["value"]), float(o["ci_low"]), float(o["ci_high"])))
    idv = g.loc[g["suite"] == spec["task"], "value"]
    return {"source": run, "kind": kind, "name": name, "label": label, "suite": ood,
            "ood_reference": ref_s.value, "ood_target": tgt_s.value, "ood_after": float(o["value"]),
            "ood_after_ci_low": float(o["ci_low"]), "ood_after_ci_high": float(o["ci_high"]),
            "id_after": float(idv.iloc[-1]) if len(idv) else np.nan,
            "recovery": rec.value, "recovery_low": rec.low, "recovery_high": rec.high, "interval": rec.interval}


def ood_peak(manifest: dict[str, Any], scores: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """For runs with an ood_suite: the ID/OOD curve, its OOD peak, RL from it and the interventions' recovery."""
    from tunescope.intervene.recovery import Score
    from tunescope.report.tables import accuracy  # tables imports this module

    a = accuracy(scores)
    curves, recs = [], []
    for run, spec in manifest["runs"].items():
        ood = spec.get("ood_suite")
        if not ood:
            continue
        r = a[(a["run"] == run)]
        seed = r["seed"].min()
        r = r[r["seed"] == seed]
        wide = r[r["suite"].isin([spec["task"], ood])].pivot_table(index=["step", "fraction"], columns="suite",
                                                                   values=["value", "ci_low", "ci_high"])
        if wide.empty:
            continue
        curve = pd.DataFrame({"run": run, "step": [i[0] for i in wide.index], "fraction": [i[1] for i in wide.index],
                              "id": wide[("value", spec["task"])].to_numpy(),
                              "id_ci_low": wide[("ci_low", spec["task"])].to_numpy(),
                              "id_ci_high": wide[("ci_high", spec["task"])].to_numpy(),
                              "ood": wide[("value", ood)].to_numpy(), "ood_ci_low": wide[("ci_low", ood)].to_numpy(),
                              "ood_ci_high": wide[("ci_high", ood)].to_numpy()})
        after0 = curve[curve["step"] > 0]
        peak = after0.loc[after0["ood"].idxmax()] if not after0.empty else curve.iloc[0]
        curve["is_peak"] = curve["step"] == peak["step"]
        curves.append(curve)
        last = curve.iloc[-1]
        sc = {"peak": Score(float(peak["ood"]), float(peak["ood_ci_low"]), float(peak["ood_ci_high"])),
              "last": Score(float(last["ood"]), float(last["ood_ci_low"]), float(last["ood_ci_high"]))}

        for rl, rspec in manifest["runs"].items():  # RL (or any run) started from this run
            if rspec["init"].split(":")[0] == run:
                g = a[(a["run"] == rl)]
                g = g[(g["seed"] == g["seed"].min()) & (g["step"] == g["step"].max())]
                start = a[(a["run"] == rl) & (a["step"] == 0) & (a["suite"] == ood)]
                tgt = (Score(float(start["value"].iloc[0]), float(start["ci_low"].iloc[0]),
                             float(start["ci_high"].iloc[0])) if len(start) else sc["last"])
                recs.append(_recovery_row(run, spec, "run", rl, rspec["label"], g, sc["peak"], tgt))
        for iv, ispec in manifest.get("interventions", {}).items():
            if ispec["reference"].split(":")[0] != run:
                continue
            target_rec = manifest["stages"].get(f"intervene/{iv}", {}).get("result", {})
            tstep = target_rec.get("target_step")
            t_row = curve[curve["step"] == tstep]
            tgt = (Score(float(t_row["ood"].iloc[0]), float(t_row["ood_ci_low"].iloc[0]),
                         float(t_row["ood_ci_high"].iloc[0])) if len(t_row) else sc["last"])
            rstep = target_rec.get("reference_step")
            r_row = curve[curve["step"] == rstep]
            ref_s = (Score(float(r_row["ood"].iloc[0]), float(r_row["ood_ci_low"].iloc[0]),
                           float(r_row["ood_ci_high"].iloc[0])) if len(r_row) else sc["peak"])
            recs.append(_recovery_row(run, spec, "intervention", iv, f"{ispec['method']} ({iv})",
                                      a[a["run"] == iv], ref_s, tgt))
    recs = [r for r in recs if r is not None]
    out = {}
    if curves:
        out["ood_curve"] = pd.concat(curves, ignore_index=True)
    if recs:
        out["recovery"] = pd.DataFrame(recs)
    mix = _outcome_mix(manifest, scores)
    if mix is not None:
        out["ood_outcomes"] = mix
    return out


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
