"""Every number of the report, as tidy tables built from the study's artifacts (DIR/tables/*.csv).

`collect(manifest)` reads the stage outputs named in the manifest (study.json) and returns a dict of
DataFrames; the figures, the findings and the HTML are all made from these tables, so every number
in the report is also in a CSV. Nothing here trains or evaluates.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tunescope.report.compare import Items, comparisons
from tunescope.report.ood import ood_peak
from tunescope.study.results import TrainResult, read

MODULES = ("q", "k", "v", "o", "gate", "up", "down")


def _stages(manifest: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """The records of one kind of stage; "train" includes the imports of runs trained elsewhere,
    which leave the same record (a run directory whose step 0 is the base)."""
    kinds = ("train", "import") if kind == "train" else (kind,)
    return {n: r for n, r in manifest["stages"].items() if r["kind"] in kinds}


def _run_seed(stage_name: str) -> tuple[str, int | None]:
    """(run or intervention or "base", seed) of a stage name (`study.stages.stage_id`)."""
    from tunescope.study.stages import parse_stage_id

    kind, name, seed = parse_stage_id(stage_name)
    return name or kind, seed


def _read(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() and path.stat().st_size > 0 else None


def _label(manifest: dict[str, Any], run: str) -> str:
    if run in manifest["runs"]:
        return manifest["runs"][run]["label"]
    return run


def _method(manifest: dict[str, Any], run: str) -> str:
    if run in manifest["runs"]:
        return manifest["runs"][run]["method"]
    return "intervention" if run in manifest.get("interventions", {}) else run


def collect(manifest: dict[str, Any]) -> dict[str, pd.DataFrame]:
    t: dict[str, pd.DataFrame] = {}
    t["setup"] = _setup(manifest)
    t["stages"] = pd.DataFrame([{"stage": n, "kind": r["kind"], "wall_s": r.get("wall_s"), "key": r.get("key"),
                                 "torch_threads": r.get("torch_threads"), "cpu": r.get("cpu")}
                                for n, r in manifest["stages"].items()])
    t["runs"] = pd.DataFrame([{"run": r, "label": v["label"], "method": v["method"], "task": v["task"],
                               "init": v["init"], "ood_suites": " ".join(ood_suites(manifest, r)),
                               "freeze": " ".join(v.get("freeze") or []), "train_only": " ".join(v.get("train_only") or []),
                               "seeds": " ".join(map(str, v["seeds"])),
                               "max_steps": (v.get("budget_resolved") or {}).get("max_steps"),
                               "source": "imported" if v.get("imported") else "trained"}
                              for r, v in manifest["runs"].items()])
    t["compute"] = _compute(manifest)
    scores, dist, reps = _evaluations(manifest)
    t["scores"], t["distribution"] = scores, dist
    t["representations"] = reps
    t["representation_drift"] = _representation_drift(reps)
    if not scores.empty:
        t["seed_spread"] = _seed_spread(scores)
        t["final"] = _final(manifest, scores)
        t["tradeoff"] = _tradeoff(manifest, scores)
    t.update(_weights(manifest))
    t.update(_spectra(manifest))
    if not scores.empty:
        items = Items(manifest)  # per-item scores, read once
        t["freezing"] = _freezing(manifest, scores)
        t["comparisons"] = comparisons(manifest, accuracy(scores), t["runs"], items)
        t.update(ood_peak(manifest, scores, items))
        from tunescope.report import forgetting

        t["forgetting"] = forgetting.points(t.get("tradeoff"), dist, t.get("module_trajectory"), t["runs"])
        t["forgetting_fit"] = forgetting.fit(t["forgetting"])
    return {k: v for k, v in t.items() if v is not None and not v.empty}


def write_tables(tables: dict[str, pd.DataFrame], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        tmp = out / f".{name}.csv.tmp"
        df.to_csv(tmp, index=False)
        os.replace(tmp, out / f"{name}.csv")


def _setup(manifest: dict[str, Any]) -> pd.DataFrame:
    """Provenance as key/value rows: versions, git revision, host, threads, total stage time."""
    prov = manifest.get("provenance", {})
    rows = [("git_revision", prov.get("git_revision")), ("created", prov.get("created")),
            ("torch_threads", prov.get("torch_threads")),
            ("stage_seconds_total", round(sum(r.get("wall_s") or 0 for r in manifest["stages"].values()), 3))]
    rows += [(f"host.{k}", v) for k, v in prov.get("host", {}).items()]
    rows += [(f"version.{k}", v) for k, v in prov.get("versions", {}).items()]
    return pd.DataFrame(rows, columns=["key", "value"])


# ------------------------------------------------------------------------------------------ compute
def _compute(manifest: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for name, rec in _stages(manifest, "train").items():
        run, seed = _run_seed(name)
        meta_f = Path(read(rec, TrainResult).run) / "run.json"
        meta = json.loads(meta_f.read_text()) if meta_f.is_file() else {}
        tot = meta.get("totals", {})
        rows.append({"run": run, "label": _label(manifest, run), "method": _method(manifest, run), "seed": seed,
                     "steps": tot.get("steps"), "tokens_trained": tot.get("tokens_trained"),
                     "tokens_generated": tot.get("tokens_generated"), "train_seconds": tot.get("train_seconds"),
                     "generation_seconds": tot.get("generation_seconds"), "stage_wall_s": rec.get("wall_s")})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ evaluations
def _evaluations(manifest: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    scores, dists, reps = [], [], []
    for name, rec in _stages(manifest, "evaluate").items():
        run, seed = _run_seed(name)
        d = Path(rec["dir"])
        ident = {"run": run, "label": "base" if run == "base" else _label(manifest, run),
                 "kind": _method(manifest, run), "seed": seed}
        s = _read(d / "scores.csv")
        if s is not None:
            scores.append(s.assign(**ident))
        x = _read(d / "distribution.csv")
        if x is not None:
            dists.append(x.assign(**ident))
        r = _read(d / "representations.csv")
        if r is not None:
            reps.append(r.assign(**ident))
    scores_df = pd.concat(scores, ignore_index=True) if scores else pd.DataFrame()
    dist_df = pd.concat(dists, ignore_index=True) if dists else pd.DataFrame()
    scores_df, dist_df = _with_step0(manifest, scores_df), _with_step0(manifest, dist_df)
    for df in (scores_df, dist_df):
        if not df.empty:
            df["fraction"] = df["fraction"].astype(float).fillna(1.0)
            df["step"] = df["step"].fillna(-1).astype(int)
    if not scores_df.empty:
        scores_df = scores_df[["run", "label", "kind", "seed", "model", "path", "step", "fraction", "suite",
                               "metric", "value", "ci_low", "ci_high", "n"]]
    reps_df = pd.concat(reps, ignore_index=True) if reps else pd.DataFrame()
    if not reps_df.empty:
        reps_df["fraction"] = reps_df["fraction"].astype(float).fillna(1.0)
        reps_df["step"] = reps_df["step"].fillna(-1).astype(int)
    return scores_df, dist_df, reps_df


def _representation_drift(reps: pd.DataFrame) -> pd.DataFrame | None:
    """1 - CKA to the base at each run's (and edited model's) last checkpoint, per suite and layer, the
    mean over seeds (evaluate/representations.py)."""
    if reps.empty:
        return None
    r = reps[reps["run"] != "base"]
    last = r[r["step"] == r.groupby(["run", "seed"], dropna=False)["step"].transform("max")]
    if last.empty:
        return None
    g = last.groupby(["run", "label", "kind", "suite", "layer"], sort=False)
    out = g["cka"].agg(["mean", "min", "max", "count"]).reset_index()
    return pd.DataFrame({"run": out["run"], "label": out["label"], "kind": out["kind"], "suite": out["suite"],
                         "layer": out["layer"], "drift": 1 - out["mean"], "drift_min": 1 - out["max"],
                         "drift_max": 1 - out["min"], "seeds": out["count"]})


def _with_step0(manifest: dict[str, Any], df: pd.DataFrame) -> pd.DataFrame:
    """Add each run's step 0 (its init model, not evaluated twice) from the evaluation of that model."""
    if df.empty:
        return df
    extra = []
    for name, rec in _stages(manifest, "train").items():
        run, seed = _run_seed(name)
        res = read(rec, TrainResult)
        init_path = res.init
        src = df[df["path"].astype(str) == str(init_path)] if "path" in df else df.iloc[0:0]
        if src.empty or ((df["run"] == run) & (df["seed"] == seed) & (df["step"] == 0)).any():
            continue
        src = src[src["seed"] == src["seed"].iloc[0]] if src["seed"].notna().any() else src
        extra.append(src.assign(run=run, label=_label(manifest, run), kind=_method(manifest, run), seed=seed,
                                step=0, fraction=0.0, model=f"{name} (init {res.init_name})"))
    return pd.concat([*extra, df], ignore_index=True) if extra else df


def accuracy(scores: pd.DataFrame) -> pd.DataFrame:
    return scores[scores["metric"] == "accuracy"]


def _seed_spread(scores: pd.DataFrame) -> pd.DataFrame:
    a = accuracy(scores)
    g = a.groupby(["run", "label", "kind", "fraction", "suite"], sort=False)["value"]
    out = g.agg(mean="mean", std="std", min="min", max="max", seeds="count").reset_index()
    return out


def final_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """Per run (and seed) the last checkpoint's accuracy, plus the base model."""
    a = accuracy(scores)
    last = a.groupby(["run", "seed"], dropna=False)["step"].transform("max")
    return a[a["step"] == last]


def _final(manifest: dict[str, Any], scores: pd.DataFrame) -> pd.DataFrame:
    """The original study's layout: suites as rows, base and each run's final checkpoint as columns."""
    f = final_scores(scores)
    f = f[f["kind"] != "intervention"]
    g = f.groupby(["run", "suite"], sort=False).agg(value=("value", "mean"), ci_low=("ci_low", "mean"),
                                                     ci_high=("ci_high", "mean"), seeds=("value", "size"),
                                                     seed_std=("value", "std")).reset_index()
    g["label"] = [("base" if r == "base" else _label(manifest, r)) for r in g["run"]]
    return g


def ood_suites(manifest: dict[str, Any], run: str) -> list[str]:
    """The run's ood_suite, else that of the run it starts from, else every evaluated suite but its task."""
    spec = manifest["runs"][run]
    while True:
        if spec.get("ood_suite"):
            return [spec["ood_suite"]]
        parent = spec["init"].split(":")[0]
        if parent not in manifest["runs"]:
            break
        spec = manifest["runs"][parent]
    task = manifest["runs"][run]["task"]
    return [s for s in manifest["config"]["evaluation"]["suites"] if s != task]


def _tradeoff(manifest: dict[str, Any], scores: pd.DataFrame) -> pd.DataFrame:
    """Per checkpoint: accuracy on the run's training suite (ID) vs the mean over the other suites (OOD)."""
    a = accuracy(scores)
    rows = []
    for run, spec in manifest["runs"].items():
        r = a[a["run"] == run]
        if r.empty:
            continue
        task = spec["task"]
        ood = ood_suites(manifest, run)
        for (seed, step, frac), g in r.groupby(["seed", "step", "fraction"]):
            idv = g.loc[g["suite"] == task, "value"]
            oodv = g.loc[g["suite"].isin(ood), "value"]
            rows.append({"run": run, "label": spec["label"], "method": spec["method"], "seed": seed, "step": step,
                         "fraction": frac, "id_suite": task, "ood_suites": " ".join(ood),
                         "id": float(idv.mean()) if len(idv) else np.nan,
                         "ood": float(oodv.mean()) if len(oodv) else np.nan})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ weights
def _weights(manifest: dict[str, Any]) -> dict[str, pd.DataFrame]:
    by_mod, by_layer = [], []
    for name, rec in _stages(manifest, "diff").items():
        run, seed = _run_seed(name)
        d = Path(rec["dir"])
        ident = {"run": run, "label": _label(manifest, run), "kind": _method(manifest, run), "seed": seed}
        m = _read(d / "diff.by_module.csv")
        if m is not None:
            by_mod.append(m.assign(**ident))
        lay = _read(d / "diff.by_layer.csv")
        if lay is not None:
            by_layer.append(lay.assign(**ident))
    if not by_mod:
        return {}
    mod = pd.concat(by_mod, ignore_index=True)
    mod = mod[mod["step"].fillna(0) > 0]
    lay = pd.concat(by_layer, ignore_index=True)
    traj = mod[["run", "label", "kind", "seed", "step", "fraction", "module", "mean_rel_change",
                "pooled_rel_change"]].reset_index(drop=True)
    last_step = lay.groupby(["run", "seed"])["step"].transform("max")
    heat = lay[(lay["step"] == last_step)][["run", "label", "kind", "seed", "step", "layer", "module", "rel_change"]]
    last_mod = mod[mod["step"] == mod.groupby(["run", "seed"])["step"].transform("max")]
    rank = (last_mod[last_mod["module"].isin(MODULES)]
            .groupby(["run", "label", "kind", "module"], sort=False)["mean_rel_change"].mean().reset_index())
    rank["rank"] = rank.groupby("run")["mean_rel_change"].rank(ascending=False, method="first").astype(int)
    order = {r: i for i, r in enumerate(dict.fromkeys(last_mod["run"]))}  # the study's run order
    rank = rank.assign(_o=rank["run"].map(order)).sort_values(["_o", "rank"]).drop(columns="_o").reset_index(drop=True)
    overall = (last_mod[last_mod["module"] == "all"].groupby(["run", "label", "kind"], sort=False)
               [["mean_rel_change", "pooled_rel_change"]].mean().reset_index())
    return {"weight_change_final": heat.reset_index(drop=True), "module_trajectory": traj,
            "module_ranking": rank, "update_size": overall}


# ------------------------------------------------------------------------------------------ spectra
BANDS = [(0.0, 0.1, "top 10%"), (0.1, 0.5, "10-50%"), (0.5, 0.9, "50-90%"), (0.9, 1.01, "bottom 10%")]


EDGES = (0.1, 0.9)  # ranks below the first or at/above the second fraction are the spectrum's edges


def _rank_angles(pr: pd.DataFrame) -> pd.DataFrame:
    """Per rank: the index-matched U and V angles in degrees (u_deg, v_deg), and their excess over the
    null model's (u_excess, v_excess; NaN without one) — mean of U and V in `excess`."""
    out = pr.assign(u_deg=np.degrees(np.arccos(np.clip(pr["u_align"].to_numpy(float), 0, 1))),
                    v_deg=np.degrees(np.arccos(np.clip(pr["v_align"].to_numpy(float), 0, 1))))
    if "u_angle_null" in pr:
        out["u_excess"] = out["u_deg"] - pr["u_angle_null"]
        out["v_excess"] = out["v_deg"] - pr["v_angle_null"]
    else:
        out["u_excess"] = out["v_excess"] = np.nan
    out["excess"] = (out["u_excess"] + out["v_excess"]) / 2
    return out


def spectrum_excess(pr: pd.DataFrame) -> dict[str, float] | None:
    """Edge vs bulk turn of the singular vectors beyond the null model, with a bootstrap interval over matrices.

    Per matrix (tensor, part): the mean excess angle (`_rank_angles`, U and V averaged) of its edge
    ranks (the top and bottom 10%) minus that of its bulk; then the mean over matrices and its 95%
    percentile bootstrap interval resampling matrices (`evaluate.stats.bootstrap_ci`). Also the raw
    (null-free) edge - bulk angle, for contrast. None without null columns."""
    from tunescope.evaluate.stats import bootstrap_ci

    if "u_angle_null" not in pr or pr.empty:
        return None
    r = _rank_angles(pr)
    edge = (r["rank_frac"] < EDGES[0]) | (r["rank_frac"] >= EDGES[1])
    per = []
    for _, g in r.groupby(["tensor", "part"], sort=False, dropna=False):  # part is empty (NaN) when not split
        e, b = edge.loc[g.index], ~edge.loc[g.index]
        if e.any() and b.any():
            raw = (g.loc[e, ["u_deg", "v_deg"]].to_numpy().mean() - g.loc[b, ["u_deg", "v_deg"]].to_numpy().mean())
            per.append((g.loc[e, "excess"].mean(), g.loc[b, "excess"].mean(), raw))
    if not per:
        return None
    arr = np.asarray(per, dtype=np.float64)  # (M, 3)
    value, low, high = bootstrap_ci(arr[:, 0] - arr[:, 1])
    return {"edge_excess_deg": float(arr[:, 0].mean()), "bulk_excess_deg": float(arr[:, 1].mean()),
            "edge_minus_bulk": value, "ci_low": low, "ci_high": high,
            "raw_edge_minus_bulk": float(arr[:, 2].mean()), "n_matrices": len(per)}


def _spectra(manifest: dict[str, Any]) -> dict[str, pd.DataFrame]:
    sig, ang, exc = [], [], []
    for name, rec in _stages(manifest, "spectrum").items():
        spec = name.split("/", 1)[1]
        d = Path(rec["dir"])
        pr = _read(d / "spectrum.per_rank.csv")
        pm = _read(d / "spectrum.csv")
        ident = {"spectrum": spec, "reference": rec["config"]["reference"], "target": rec["config"]["target"]}
        if pr is not None:
            ranked = _rank_angles(pr)
            for lo, hi, band in BANDS:
                b = ranked[(ranked["rank_frac"] >= lo) & (ranked["rank_frac"] < hi)]
                if b.empty:
                    continue
                sig.append(ident | {"band": band, "mean_abs_rel_sigma_change": float(b["rel_sigma_change"].abs().mean()),
                                    "mean_rel_sigma_change": float(b["rel_sigma_change"].mean()),
                                    "u_angle_deg": float(b["u_deg"].mean()), "v_angle_deg": float(b["v_deg"].mean()),
                                    "u_excess_deg": float(b["u_excess"].mean()),
                                    "v_excess_deg": float(b["v_excess"].mean()), "n_values": len(b)})
            e = spectrum_excess(pr)
            if e is not None:
                exc.append(ident | e)
        if pm is not None and "k_frac" in pm:
            pm = pm[~pm["nonfinite"].astype(bool)]
            g = pm.groupby("k_frac").agg(
                head_u=("rot_head_u", "mean"), bulk_u=("rot_bulk_u", "mean"), tail_u=("rot_tail_u", "mean"),
                head_v=("rot_head_v", "mean"), bulk_v=("rot_bulk_v", "mean"), tail_v=("rot_tail_v", "mean"),
                mean_abs_rel_sigma_change=("mean_abs_rel_sigma_change", "mean"),
                energy_diag=("energy_in_basis_diag", "mean"), energy_offdiag=("energy_in_basis_offdiag", "mean"),
                n_matrices=("tensor", "size")).reset_index()
            ang.append(g.assign(**ident))
    out = {}
    if sig:
        out["spectrum_sigma"] = pd.DataFrame(sig)
    if ang:
        out["spectrum_angles"] = pd.concat(ang, ignore_index=True)
    if exc:
        out["spectrum_excess"] = pd.DataFrame(exc)
    return out


# ------------------------------------------------------------------------------------------ freezing
def _same_recipe(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("method", "task", "init", "budget")
    return all(a.get(k) == b.get(k) for k in keys)


def _freezing(manifest: dict[str, Any], scores: pd.DataFrame) -> pd.DataFrame:
    """Runs with freeze/train_only selectors beside the run with the same recipe and no selectors."""
    runs = manifest["runs"]
    f = final_scores(scores)
    rows = []
    for name, spec in runs.items():
        if not (spec.get("freeze") or spec.get("train_only")):
            continue
        plain = [n for n, s in runs.items() if not (s.get("freeze") or s.get("train_only")) and _same_recipe(s, spec)]
        for variant, what in ([(plain[0], "none")] if plain else []) + [
                (name, "freeze " + " ".join(spec["freeze"]) if spec.get("freeze") else
                 "train only " + " ".join(spec["train_only"]))]:
            g = f[f["run"] == variant].groupby("suite")[["value", "ci_low", "ci_high"]].mean().reset_index()
            for _, r in g.iterrows():
                rows.append({"group": plain[0] if plain else name, "run": variant, "label": _label(manifest, variant),
                             "selectors": what, "suite": r["suite"], "value": r["value"],
                             "ci_low": r["ci_low"], "ci_high": r["ci_high"]})
    return pd.DataFrame(rows).drop_duplicates(["run", "suite"]) if rows else pd.DataFrame()
