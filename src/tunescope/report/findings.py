"""Findings in plain words, computed from the report's tables (never written in advance).

Each finding states what the data shows and, where the original studies made a claim about the same
thing, whether this study's data supports it ("supported", "not supported", "inconclusive"). Claims
come from the research brief: Rajani et al. 2025 ("Scalpel vs. Hammer") and Jin et al. 2025 ("RL is
neither a panacea nor a mirage"). A difference counts only when the 95% intervals do not overlap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from tunescope.report.tables import accuracy, final_scores


@dataclass
class Finding:
    topic: str
    text: str
    claim: str = ""  # the original study's claim this finding tests ("" when none)
    verdict: str = ""  # supported | not supported | inconclusive | ""


def _pct(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.0f}%"


def _g(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.3g}"


def compute(tables: dict[str, pd.DataFrame]) -> list[Finding]:
    out: list[Finding] = []
    out += _modules(tables)
    out += _update_ratio(tables)
    out += _gains(tables)
    out += _versus_base(tables)
    out += _kl(tables)
    out += _ood_peak(tables)
    out += _recoveries(tables)
    out += _spectra(tables)
    out += _freezing(tables)
    out += _seeds(tables)
    return out


def as_table(findings: list[Finding]) -> pd.DataFrame:
    return pd.DataFrame([f.__dict__ for f in findings], columns=["topic", "text", "claim", "verdict"])


def _plain(t: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Runs that start from the base model with every tensor trained (the methods' own comparison)."""
    runs = t.get("runs")
    if runs is None:
        return pd.DataFrame(columns=["run", "method", "task"])
    return runs[(runs["init"] == "base") & (runs["freeze"].fillna("") == "") & (runs["train_only"].fillna("") == "")]


def _pairs(t: dict[str, pd.DataFrame]) -> list[tuple[str, str]]:
    """(SFT run, GRPO run) pairs of plain runs on the same training task."""
    p = _plain(t)
    return [(s.run, g.run) for s in p[p["method"] == "sft"].itertuples()
            for g in p[p["method"] == "grpo"].itertuples() if s.task == g.task]


TINY = 1e-9  # a relative change below this is "did not move" (float32 noise is ~1e-7 relative per entry)
ANGLE_RESOLUTION = 0.05  # degrees: arccos of a float32 cosine cannot resolve smaller angles (~0.03°)


def _modules(t: dict[str, pd.DataFrame]) -> list[Finding]:
    rank = t.get("module_ranking")
    if rank is None:
        return []
    out = []
    top2_qk = {}
    for run, g in rank.groupby("run", sort=False):
        g = g.sort_values("rank")
        top = g.iloc[0]
        if top["mean_rel_change"] < TINY:
            out.append(Finding("weights", f"{top['label']}: no module moved measurably (largest layer-mean relative "
                                          f"change {_g(top['mean_rel_change'])})."))
            continue
        order = ", ".join(f"{m} {v:.2g}" for m, v in zip(g["module"], g["mean_rel_change"]))
        top2_qk[run] = set(g["module"].iloc[:2]) == {"q", "k"}
        out.append(Finding("weights", f"{top['label']}: {top['module']} moved most (final relative change, layer "
                                      f"mean: {order})."))
    plain = [r for r in top2_qk if r in set(_plain(t)["run"])] if "runs" in t else list(top2_qk)
    if plain:
        n = sum(top2_qk[r] for r in plain)
        verdict = "supported" if n == len(plain) else ("not supported" if n == 0 else "inconclusive")
        out.append(Finding("weights", f"Q and K are the two most-changed module types in {n} of {len(plain)} runs.",
                           "Both methods move Q and K most (Rajani et al.)", verdict))
    return out


def _update_ratio(t: dict[str, pd.DataFrame]) -> list[Finding]:
    size = t.get("update_size")
    if size is None:
        return []
    by_run = size.set_index("run")
    pairs = _pairs(t) if "runs" in t else [(s, g) for s in size.loc[size["kind"] == "sft", "run"]
                                           for g in size.loc[size["kind"] == "grpo", "run"]]
    pairs = [(s, g) for s, g in pairs if s in by_run.index and g in by_run.index]
    if not pairs:
        return []
    out = []
    ratios = []
    for sr, gr in pairs:
        s, g = by_run.loc[sr], by_run.loc[gr]
        if g["mean_rel_change"] < TINY:
            ratios.append(math.inf if s["mean_rel_change"] >= TINY else math.nan)
            out.append(Finding("weights", f"{g['label']} did not move the weights measurably (layer-mean relative "
                                          f"change {_g(g['mean_rel_change'])}), so the SFT/GRPO ratio is undefined; "
                                          f"{s['label']} moved them by {_g(s['mean_rel_change'])}."))
            continue
        r = s["mean_rel_change"] / g["mean_rel_change"]
        ratios.append(r)
        out.append(Finding("weights", f"{s['label']} changed the weights {r:.1f}x as much as {g['label']} "
                                      f"(layer-mean relative change {_g(s['mean_rel_change'])} vs {_g(g['mean_rel_change'])})."))
    ratios = [r for r in ratios if not math.isnan(r)]
    if not ratios:
        return out
    bigger = sum(r > 1 for r in ratios)
    verdict = "supported" if bigger == len(ratios) else ("not supported" if bigger == 0 else "inconclusive")
    out.append(Finding("weights", f"SFT's update is larger than GRPO's in {bigger} of {len(ratios)} SFT-GRPO pairs "
                                  "(same task, both from the base model).",
                       "SFT moves the weights far more than GRPO (4-50x in Rajani et al.)", verdict))
    return out


def _gains(t: dict[str, pd.DataFrame]) -> list[Finding]:
    trade = t.get("tradeoff")
    scores = t.get("scores")
    if trade is None or scores is None:
        return []
    out = []
    for _run, g in trade.groupby("run", sort=False):
        first, last = g[g["step"] == g["step"].min()], g[g["step"] == g["step"].max()]
        did, dood = float(last["id"].mean() - first["id"].mean()), float(last["ood"].mean() - first["ood"].mean())
        out.append(Finding("accuracy", f"{g['label'].iloc[0]}: in-domain ({g['id_suite'].iloc[0]}) "
                                       f"{first['id'].mean():.2f} -> {last['id'].mean():.2f} ({did:+.2f}); "
                                       f"out-of-domain mean {first['ood'].mean():.2f} -> {last['ood'].mean():.2f} "
                                       f"({dood:+.2f})."))
    return out


def _versus_base(t: dict[str, pd.DataFrame]) -> list[Finding]:
    """Final accuracy against the base's, suite by suite: a move counts only outside both intervals."""
    final, runs = t.get("final"), t.get("runs")
    if final is None or runs is None or "base" not in set(final["run"]):
        return []
    f = final.set_index(["run", "suite"])
    runs = runs.set_index("run")

    def move(run: str, suite: str) -> str:  # "above", "below" or "within" the base's interval
        if (run, suite) not in f.index or ("base", suite) not in f.index:
            return "within"
        r, b = f.loc[(run, suite)], f.loc[("base", suite)]
        return "above" if r["ci_low"] > b["ci_high"] else "below" if r["ci_high"] < b["ci_low"] else "within"

    def cell(run: str, suite: str) -> str:
        r = f.loc[(run, suite)]
        return f"{r['value']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"

    out = []
    plain = _plain(t)
    for g in plain[plain["method"] == "grpo"].itertuples():
        if (g.run, g.task) not in f.index or ("base", g.task) not in f.index:
            continue
        moved = move(g.run, g.task)
        verdict = {"above": "supported", "below": "not supported", "within": "inconclusive"}[moved]
        out.append(Finding("accuracy", f"In-domain ({g.task}): {g.label} {cell(g.run, g.task)} against the base's "
                                       f"{cell('base', g.task)}, {moved} the base's interval.",
                           "GRPO raises in-domain accuracy (Rajani et al.: MATH-500 0.352 -> 0.402)", verdict))
    for s_run, g_run in _pairs(t):
        worse = {r: [x for x in runs.loc[r, "ood_suites"].split() if move(r, x) == "below"] for r in (s_run, g_run)}
        n_sft, n_grpo = len(worse[s_run]), len(worse[g_run])
        verdict = "supported" if n_sft > n_grpo else "not supported" if n_sft < n_grpo else "inconclusive"
        out.append(Finding("accuracy", f"Out-of-domain, below the base's interval at the end: "
                                       f"{runs.loc[s_run, 'label']} on {', '.join(worse[s_run]) or 'no suite'}; "
                                       f"{runs.loc[g_run, 'label']} on {', '.join(worse[g_run]) or 'no suite'}.",
                           "SFT loses more out-of-domain than GRPO (Rajani et al.: IFEval 0.682 -> 0.216-0.333 "
                           "after SFT, 0.466 after GRPO)", verdict))
    return out


def _kl(t: dict[str, pd.DataFrame]) -> list[Finding]:
    d = t.get("distribution")
    if d is None or d.empty or d["kl"].isna().all():
        return []
    last = d[d["kind"].isin(["sft", "grpo"])]
    last = last[last["step"] == last.groupby(["run", "seed"])["step"].transform("max")]
    m = last.groupby(["run", "kind"], sort=False)[["kl", "kl_ci_low", "kl_ci_high"]].mean().reset_index()
    if m.empty:
        return []
    text = "; ".join(f"{r.run} {_g(r.kl)} [{_g(r.kl_ci_low)}, {_g(r.kl_ci_high)}]" for r in m.itertuples())
    out_text = text
    out = [Finding("distribution", f"Final per-token KL(base || model): {out_text}.")]
    m = m.set_index("run")
    pairs = [(s, g) for s, g in _pairs(t) if s in m.index and g in m.index]
    if pairs:
        below = sum(bool(m.loc[g, "kl_ci_high"] < m.loc[s, "kl_ci_low"]) for s, g in pairs)
        pairs = len(pairs)
        verdict = "supported" if below == pairs else ("not supported" if below == 0 else "inconclusive")
        out.append(Finding("distribution", f"GRPO's final KL is below SFT's, intervals apart, in {below} of "
                                           f"{pairs} SFT-GRPO pairs.",
                           "GRPO drifts from the base far less than SFT (Rajani et al.)", verdict))
    return out


def _ood_peak(t: dict[str, pd.DataFrame]) -> list[Finding]:
    c = t.get("ood_curve")
    if c is None:
        return []
    out = []
    paired = t.get("ood_peak")
    for run, g in c.groupby("run", sort=False):
        p = g[g["is_peak"]].iloc[0]
        first, last = g.iloc[0], g.iloc[-1]
        row = paired[paired["run"] == run].iloc[0] if paired is not None and (paired["run"] == run).any() else None
        if row is not None and math.isfinite(row["fall_low"]) and math.isfinite(row["rise_low"]):  # paired
            rises, falls = row["rise_low"] > 0, row["fall_low"] > 0
        else:  # no per-item scores: marginal intervals that do not overlap
            rises, falls = p["ood_ci_low"] > first["ood_ci_high"], p["ood_ci_low"] > last["ood_ci_high"]
        id_up = last["id"] >= p["id"]
        flat = g["ood"].max() == g["ood"].min()
        verdict = "supported" if rises and falls and id_up else (
            "inconclusive" if flat else
            "not supported" if not (p["ood"] > first["ood"] and p["ood"] > last["ood"]) else "inconclusive")
        out.append(Finding(
            "ood peak", f"{run}: the out-of-distribution score peaks at step {int(p['step'])} "
                        f"({_pct(p['fraction'])} of training) at {p['ood']:.2f} [{p['ood_ci_low']:.2f}, "
                        f"{p['ood_ci_high']:.2f}], from {first['ood']:.2f} at the start to {last['ood']:.2f} at the "
                        f"end, while in-distribution goes {p['id']:.2f} -> {last['id']:.2f}.",
            "OOD accuracy rises early in SFT, peaks, then falls while ID keeps rising (Jin et al.)", verdict))
        if row is not None and math.isfinite(row["fall_low"]) and math.isfinite(row["rise_low"]):
            out[-1].text += (f" Paired over {int(row['n_items'])} items: peak − start {row['rise']:+.3f} "
                             f"[{row['rise_low']:+.3f}, {row['rise_high']:+.3f}], peak − end {row['fall']:+.3f} "
                             f"[{row['fall_low']:+.3f}, {row['fall_high']:+.3f}].")
        if flat:
            out[-1].text += (f" The out-of-distribution score is {p['ood']:.2f} at every checkpoint, so this run "
                             "cannot show a peak (the model never solves, or always solves, these items).")
        out[-1].text += _faces_as_10(t.get("ood_outcomes"), run, int(p["step"]), int(last["step"]))
    return out


def _faces_as_10(mix: pd.DataFrame | None, run: str, peak: int, last: int) -> str:
    """How the share of OOD answers that value J, Q and K as 10 moved from the peak to the end."""
    if mix is None or "faces_as_10" not in mix:
        return ""
    r = mix[mix["run"] == run]
    r = r[r["seed"] == r["seed"].min()].set_index("step")
    if peak not in r.index or last not in r.index:
        return ""
    return (f" Answers that value J, Q and K as 10 against the stated rule: {_pct(r.loc[peak, 'faces_as_10'])} at "
            f"the peak, {_pct(r.loc[last, 'faces_as_10'])} at the end.")


def _recoveries(t: dict[str, pd.DataFrame]) -> list[Finding]:
    r = t.get("recovery")
    if r is None:
        return []
    out = []
    for row in r.itertuples():
        interval = (f" [{_pct(row.recovery_low)}, {_pct(row.recovery_high)}]"
                    if math.isfinite(row.recovery_low) and math.isfinite(row.recovery_high) else "")
        text = (f"{row.label}: {row.suite} {row.ood_target:.2f} -> {row.ood_after:.2f} against the peak's "
                f"{row.ood_reference:.2f}, recovering {_pct(row.recovery)}{interval} of the loss.")
        if not math.isfinite(row.recovery):
            text += " Nothing was lost between the peak and the target, so recovery is undefined."
        claim = ("RL recovers most of the OOD loss (85-99% in Jin et al., with PPO; GRPO here)" if row.kind == "run"
                 else "Restoring top-20% directions or resetting the first 25% of layers recovers 70-80% (Jin et al.)")
        if not math.isfinite(row.recovery):
            verdict = "inconclusive"
        elif math.isfinite(row.recovery_low) and row.recovery_low >= 0.5:
            verdict = "supported"
        elif math.isfinite(row.recovery_high) and row.recovery_high < 0.5:
            verdict = "not supported"
        else:
            verdict = "inconclusive"
        out.append(Finding("recovery", text, claim, verdict))
    return out


def _spectra(t: dict[str, pd.DataFrame]) -> list[Finding]:
    s = t.get("spectrum_sigma")
    if s is None:
        return []
    out = []
    for name, g in s.groupby("spectrum", sort=False):
        g = g.set_index("band")
        sig = float((g["mean_abs_rel_sigma_change"] * g["n_values"]).sum() / g["n_values"].sum())
        ang = g["u_angle_deg"]
        edges = [b for b in ("top 10%", "bottom 10%") if b in ang.index]
        bulk = [b for b in ("10-50%", "50-90%") if b in ang.index]
        text = (f"{name}: singular values moved {sig:.3g} on average (|Δσ/σ|); matched singular vectors turned "
                + ", ".join(f"{b} {ang[b]:.1f}°" for b in ang.index) + ".")
        if float(ang.max()) < ANGLE_RESOLUTION and sig < 1e-6:
            out.append(Finding("spectra", f"{name}: neither singular values nor directions changed measurably "
                                          f"(|Δσ/σ| {sig:.2g}, largest angle {float(ang.max()):.2g}°).",
                               "Directions move most at the top and bottom of the spectrum, the bulk stays (Jin et al.)",
                               "inconclusive"))
        elif edges and bulk:
            e, b = float(ang[edges].mean()), float(ang[bulk].mean())
            verdict = "supported" if e > b else "not supported"
            out.append(Finding("spectra", text + f" Edges {e:.1f}° vs bulk {b:.1f}°.",
                               "Directions move most at the top and bottom of the spectrum, the bulk stays (Jin et al.)",
                               verdict))
        else:
            out.append(Finding("spectra", text))
    return out


def _freezing(t: dict[str, pd.DataFrame]) -> list[Finding]:
    f = t.get("freezing")
    if f is None:
        return []
    out = []
    for group, g in f.groupby("group", sort=False):
        base = g[g["run"] == group].set_index("suite")
        for _run, h in g[g["run"] != group].groupby("run", sort=False):
            h = h.set_index("suite")
            better = [s for s in h.index if s in base.index and h.loc[s, "ci_low"] > base.loc[s, "ci_high"]]
            worse = [s for s in h.index if s in base.index and h.loc[s, "ci_high"] < base.loc[s, "ci_low"]]
            out.append(Finding("freezing", f"{h['label'].iloc[0]} vs {base['label'].iloc[0]}: better on "
                                           f"{', '.join(better) or 'no suite'}, worse on {', '.join(worse) or 'no suite'} "
                                           f"(95% intervals apart); the rest overlap.",
                               "Freezing is inconclusive: better on some suites, worse on others (Rajani et al.)",
                               "supported" if better and worse else ("inconclusive" if not better and not worse
                                                                      else "not supported")))
    return out


def _seeds(t: dict[str, pd.DataFrame]) -> list[Finding]:
    sp = t.get("seed_spread")
    if sp is None or sp["seeds"].max() < 2:
        return []
    scores = t["scores"]
    f = final_scores(accuracy(scores))
    multi = f.groupby("run")["seed"].nunique()
    out = []
    for run in multi[multi > 1].index:
        g = f[f["run"] == run].groupby("suite")["value"].agg(["std", "count"])
        out.append(Finding("seeds", f"{run}: across {int(g['count'].max())} seeds the final accuracy varies by "
                                    f"a standard deviation of {g['std'].mean():.3f} on average over suites."))
    return out
