"""Findings in plain words, computed from the report's tables (never written in advance).

Each finding states what the data shows and, where the original studies made a claim about the same
thing, whether this study's data supports it ("supported", "not supported", "inconclusive"). Claims
come from `report.claims` (Rajani et al. 2025, "Scalpel vs. Hammer"; Jin et al. 2025, "RL is neither a
panacea nor a mirage"); a finding that tests one carries the claim's id, the effect with its interval,
and how many training seeds agree, and the scorecard is made of those findings. Differences between
two models are paired over the items both answered, and over seeds when runs have several
(`report.compare`); a verdict needs the interval of the effect on one side of the claim's threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from tunescope.report.claims import CLAIMS, verdict_of
from tunescope.report.compare import POOLED_OOD, method_pairs, paired_kl, plain_runs
from tunescope.report.tables import accuracy, final_scores
from tunescope.train.config import METHODS, RL_METHODS


@dataclass
class Finding:
    topic: str
    text: str
    claim: str = ""  # the original study's claim this finding tests ("" when none)
    verdict: str = ""  # supported | not supported | inconclusive | ""
    claim_id: str = ""  # its key in report.claims.CLAIMS
    subject: str = ""  # the run or pair of runs the claim is tested on
    effect: float = math.nan  # the claim's measure (report.claims.Claim.effect) and its 95% interval
    ci_low: float = math.nan
    ci_high: float = math.nan
    seeds_agreeing: int | None = None  # training seeds whose own estimate points the claim's way
    seeds: int | None = None


def _claim(topic: str, text: str, claim_id: str, verdict: str, subject: str, effect: float = math.nan,
           low: float = math.nan, high: float = math.nan, agree: int | None = None, seeds: int | None = None) -> Finding:
    return Finding(topic, text, CLAIMS[claim_id].text + f" ({CLAIMS[claim_id].paper})", verdict, claim_id, subject,
                   float(effect), float(low), float(high), agree, seeds)


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
    out += _forgetting(tables)
    out += _ood_peak(tables)
    out += _recoveries(tables)
    out += _spectra(tables)
    out += _freezing(tables)
    out += _seeds(tables)
    return out


def as_table(findings: list[Finding]) -> pd.DataFrame:
    return pd.DataFrame([f.__dict__ for f in findings], columns=list(Finding.__dataclass_fields__))


def _plain(t: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return plain_runs(t.get("runs"))


def _pairs(t: dict[str, pd.DataFrame]) -> list[tuple[str, str]]:
    return method_pairs(t["runs"]) if "runs" in t else []


TINY = 1e-9  # a relative change below this is "did not move" (float32 noise is ~1e-7 relative per entry)
FAR_MORE = 2.0  # "SFT moves the weights far more than GRPO": the ratio above this in every seed
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
        out.append(_claim("weights", f"Q and K are the two most-changed module types in {n} of {len(plain)} runs.",
                          "qk_move_most", verdict, "runs from the base, every tensor trained", n / len(plain)))
    return out


def _final_change(t: dict[str, pd.DataFrame], run: str) -> list[float]:
    """A run's final layer-mean relative weight change, seed by seed (seed order)."""
    traj = t.get("module_trajectory")
    if traj is None:
        return []
    r = traj[(traj["run"] == run) & (traj["module"] == "all")]
    r = r[r["step"] == r.groupby("seed", dropna=False)["step"].transform("max")]
    return list(r.sort_values("seed")["mean_rel_change"].astype(float))


def _update_ratio(t: dict[str, pd.DataFrame]) -> list[Finding]:
    size = t.get("update_size")
    if size is None:
        return []
    by_run = size.set_index("run")
    pairs = _pairs(t) if "runs" in t else [(s, g) for s in size.loc[size["kind"] == "sft", "run"]
                                           for g in size.loc[size["kind"].isin(RL_METHODS), "run"]]
    out = []
    for sr, gr in [(s, g) for s, g in pairs if s in by_run.index and g in by_run.index]:
        s, g = by_run.loc[sr], by_run.loc[gr]
        subject = f"{s['label']} vs {g['label']}"
        if g["mean_rel_change"] < TINY:
            out.append(Finding("weights", f"{g['label']} did not move the weights measurably (layer-mean relative "
                                          f"change {_g(g['mean_rel_change'])}), so the SFT/GRPO ratio is undefined; "
                                          f"{s['label']} moved them by {_g(s['mean_rel_change'])}."))
            continue
        r = s["mean_rel_change"] / g["mean_rel_change"]
        per_s, per_g = _final_change(t, sr), _final_change(t, gr)
        ratios = [a / b for a, b in zip(per_s, per_g) if b >= TINY] or [r]
        agree = sum(x > FAR_MORE for x in ratios)
        verdict = "supported" if agree == len(ratios) else "not supported" if agree == 0 else "inconclusive"
        spread = f"; seed by seed {', '.join(f'{x:.1f}x' for x in ratios)}" if len(ratios) > 1 else ""
        out.append(_claim("weights", f"{s['label']} changed the weights {r:.1f}x as much as {g['label']} "
                                     f"(layer-mean relative change {_g(s['mean_rel_change'])} vs "
                                     f"{_g(g['mean_rel_change'])}{spread}).",
                          "sft_moves_more", verdict, subject, r, min(ratios), max(ratios), agree, len(ratios)))
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


def _diff_text(row: pd.Series) -> str:
    return (f"{row['a_label']} {row['a_value']:.2f} vs {row['b_label']} {row['b_value']:.2f}: "
            f"{row['diff']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}] over {int(row['n_items'])} items"
            + (f" and {max(int(row['seeds_a']), int(row['seeds_b']))} seeds" if max(row['seeds_a'], row['seeds_b']) > 1
               else ""))


def _agreeing(row: pd.Series, sign: int = 1) -> int:
    """Training seeds whose own difference (the row's per_seed) points the claim's way (`sign`)."""
    return sum(sign * float(x) > 0 for x in str(row["per_seed"]).split())


def _seed_count(row: pd.Series) -> int:
    return int(max(row["seeds_a"], row["seeds_b"]))


def _versus_base(t: dict[str, pd.DataFrame]) -> list[Finding]:
    """Final accuracy against the base's and SFT's against GRPO's, paired over items (and seeds)."""
    c, runs = t.get("comparisons"), t.get("runs")
    if c is None or runs is None:
        return []
    vs_base = c[c["comparison"] == "vs base"].set_index(["a", "suite"])
    out = []
    plain = _plain(t)
    for g in plain[plain["method"].isin(RL_METHODS)].itertuples():
        if (g.run, g.task) not in vs_base.index:
            continue
        row = vs_base.loc[(g.run, g.task)]
        verdict = verdict_of(row["ci_low"], row["ci_high"])
        out.append(_claim("accuracy", f"In-domain ({g.task}), final against the base: {_diff_text(row)}.",
                          "grpo_gains_id", verdict, f"{g.label} vs base, {g.task}", row["diff"], row["ci_low"],
                          row["ci_high"], _agreeing(row), _seed_count(row)))
    pooled = c[(c["comparison"] == "sft vs grpo") & (c["suite"] == POOLED_OOD)].set_index("a")
    runs = runs.set_index("run")
    for s_run, g_run in _pairs(t):
        worse = {}
        for r in (s_run, g_run):
            rows = [vs_base.loc[(r, x)] for x in runs.loc[r, "ood_suites"].split() if (r, x) in vs_base.index]
            worse[r] = [f"{x.name[1]} {x['diff']:+.2f}" for x in rows if x["ci_high"] < 0]
        text = (f"Out-of-domain, below the base at the end (paired intervals): {runs.loc[s_run, 'label']} on "
                f"{', '.join(worse[s_run]) or 'no suite'}; {runs.loc[g_run, 'label']} on "
                f"{', '.join(worse[g_run]) or 'no suite'}.")
        if s_run not in pooled.index:
            out.append(Finding("accuracy", text))
            continue
        row = pooled.loc[[s_run]]
        row = row[row["b"] == g_run].iloc[0] if (row["b"] == g_run).any() else None
        if row is None:
            out.append(Finding("accuracy", text))
            continue
        text += f" All out-of-domain items pooled, {_diff_text(row)}."
        out.append(_claim("accuracy", text, "sft_forgets_more", verdict_of(row["ci_low"], row["ci_high"], sign=-1),
                          f"{runs.loc[s_run, 'label']} vs {runs.loc[g_run, 'label']}", row["diff"], row["ci_low"],
                          row["ci_high"], _agreeing(row, -1), _seed_count(row)))
    return out


def _kl(t: dict[str, pd.DataFrame]) -> list[Finding]:
    d = t.get("distribution")
    if d is None or d.empty or d["kl"].isna().all():
        return []
    last = d[d["kind"].isin(METHODS)]
    last = last[last["step"] == last.groupby(["run", "seed"])["step"].transform("max")]
    m = last.groupby(["run", "kind"], sort=False)[["kl", "kl_ci_low", "kl_ci_high"]].mean().reset_index()
    if m.empty:
        return []
    text = "; ".join(f"{r.run} {_g(r.kl)} [{_g(r.kl_ci_low)}, {_g(r.kl_ci_high)}]" for r in m.itertuples())
    out = [Finding("distribution", f"Final per-token KL(base || model): {text}.")]
    m = m.set_index("run")
    per_seed = last.groupby(["run", "seed"])["kl"].mean()
    for s, g in [(s, g) for s, g in _pairs(t) if s in m.index and g in m.index]:
        ks, kg = per_seed.get(s, pd.Series(dtype=float)), per_seed.get(g, pd.Series(dtype=float))
        agree = sum(a < b for a, b in zip(kg.to_numpy(), ks.to_numpy()))
        paired = paired_kl(last[last["run"] == g], last[last["run"] == s])
        if paired is not None:
            diff, lo, hi = paired
            verdict = verdict_of(lo, hi, sign=-1)
            how = f"{diff:+.3g} [{lo:+.3g}, {hi:+.3g}], paired over the KL items"
        else:  # artifacts without per-item KL: the marginal intervals
            diff, lo, hi = m.loc[g, "kl"] - m.loc[s, "kl"], math.nan, math.nan
            apart = bool(m.loc[g, "kl_ci_high"] < m.loc[s, "kl_ci_low"])
            above = bool(m.loc[g, "kl_ci_low"] > m.loc[s, "kl_ci_high"])
            verdict = "supported" if apart else "not supported" if above else "inconclusive"
            how = "marginal 95% intervals " + ("apart" if apart or above else "overlapping") + " (no per-item KL)"
        out.append(_claim("distribution", f"{g} KL {_g(m.loc[g, 'kl'])} against {s} {_g(m.loc[s, 'kl'])}: "
                                          f"difference {how}.", "grpo_drifts_less", verdict, f"{g} vs {s}", diff,
                          lo, hi, agree=agree, seeds=min(len(ks), len(kg))))
    if "fkl" in last and last["fkl"].notna().any():
        out += _forward_kl(last, [(s, g) for s, g in _pairs(t) if s in m.index and g in m.index])
    return out


def _forward_kl(last: pd.DataFrame, pairs: list[tuple[str, str]]) -> list[Finding]:
    """RL's Razor: the RL run's forward KL along samples of the base below the SFT run's, paired over
    the KL prompts (only where both were scored along the same samples)."""
    out = []
    mean, per_seed = last.groupby("run")["fkl"].mean(), last.groupby(["run", "seed"])["fkl"].mean()
    for s, g in pairs:
        paired = paired_kl(last[last["run"] == g], last[last["run"] == s], "fkl")
        if paired is None:
            continue
        diff, lo, hi = paired
        ks, kg = per_seed.get(s, pd.Series(dtype=float)), per_seed.get(g, pd.Series(dtype=float))
        agree = sum(a < b for a, b in zip(kg.to_numpy(), ks.to_numpy()))
        out.append(_claim("distribution", f"{g} forward KL {_g(mean[g])} against {s} {_g(mean[s])} along samples of "
                                          f"the base: difference {diff:+.3g} [{lo:+.3g}, {hi:+.3g}], paired over the "
                                          "KL prompts.", "rl_kl_minimal", verdict_of(lo, hi, sign=-1), f"{g} vs {s}",
                          diff, lo, hi, agree=agree, seeds=min(len(ks), len(kg))))
    return out


def _forgetting(t: dict[str, pd.DataFrame]) -> list[Finding]:
    """Which predictor of the OOD drop fits the checkpoints better (report/forgetting.py)."""
    f = t.get("forgetting_fit")
    if f is None:
        return []
    f = f[f["r2"].notna()].set_index("predictor")
    if f.empty:
        return []
    parts = [f"{f.loc[p, 'what']} R² {f.loc[p, 'r2']:.2f} [{f.loc[p, 'r2_ci_low']:.2f}, {f.loc[p, 'r2_ci_high']:.2f}]"
             for p in f.index]
    text = (f"Forgetting predictor, over {int(f['points'].max())} checkpoints of {int(f['runs'].max())} runs: the OOD "
            f"drop from the base against {' and against '.join(parts)} (RL's Razor reports R² ≈ 0.71 for forward KL "
            "on LLM tasks).")
    ranked = [p for p in ("fkl", "kl") if p in f.index and pd.notna(f.loc[p, "r2_minus_rel_change"])]
    if ranked:  # the forward KL on samples of the base (RL's Razor) when measured, else the gold-solution KL
        k, name = f.loc[ranked[0]], {"fkl": "forward KL", "kl": "KL"}[ranked[0]]
        diff = (f"R²({name}) − R²(weight change) {k['r2_minus_rel_change']:+.2f} "
                f"[{k['diff_ci_low']:+.2f}, {k['diff_ci_high']:+.2f}]")
        verdict = verdict_of(k["diff_ci_low"], k["diff_ci_high"])
        text += (f" {diff}, paired over the same resamples: " +
                 {"supported": f"the {name} predicts it better.",
                  "not supported": "the weight change predicts it better."}.get(
                     verdict, "this study cannot rank the two predictors."))
        if ranked[0] == "fkl":  # RL's Razor's own predictor: a claim on the scorecard
            return [_claim("distribution", text, "kl_predicts_forgetting", verdict,
                           f"{int(k['points'])} checkpoints of {int(k['runs'])} runs", k["r2_minus_rel_change"],
                           k["diff_ci_low"], k["diff_ci_high"])]
    return [Finding("distribution", text)]


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
        flat = g["ood"].max() == g["ood"].min()
        text = (f"{run}: the out-of-distribution score peaks at step {int(p['step'])} ({_pct(p['fraction'])} of "
                f"training) at {p['ood']:.2f} [{p['ood_ci_low']:.2f}, {p['ood_ci_high']:.2f}], from "
                f"{first['ood']:.2f} at the start to {last['ood']:.2f} at the end, while in-distribution goes "
                f"{p['id']:.2f} -> {last['id']:.2f}.")
        known = row is not None and math.isfinite(row["fall_low"]) and math.isfinite(row["rise_low"])
        if known:
            text += (f" Held out from the choice of the peak ({int(row['n_items'])} items, {int(row['seeds'])} "
                     f"seed(s), peak step {row['peak_steps_held_out']}): peak − start {row['rise']:+.3f} "
                     f"[{row['rise_low']:+.3f}, {row['rise_high']:+.3f}], peak − end {row['fall']:+.3f} "
                     f"[{row['fall_low']:+.3f}, {row['fall_high']:+.3f}].")
        if flat:
            text += (f" The out-of-distribution score is {p['ood']:.2f} at every checkpoint, so this run cannot show "
                     "a peak (the model never solves, or always solves, these items).")
        text += _faces_as_10(t.get("ood_outcomes"), run, int(p["step"]), int(last["step"]))
        if not known:
            out.append(Finding("ood peak", text + " No per-item scores, so no paired test."))
            continue
        id_up = last["id"] >= p["id"]
        verdict = ("supported" if row["rise_low"] > 0 and row["fall_low"] > 0 and id_up else
                   "not supported" if row["rise_high"] < 0 or row["fall_high"] < 0 else "inconclusive")
        out.append(_claim("ood peak", text, "ood_peak", "inconclusive" if flat else verdict, run, row["fall"],
                          row["fall_low"], row["fall_high"], int(row["seeds_agreeing"]), int(row["seeds"])))
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


def _loss_caveat(row: Any) -> str:
    """What a recovery ratio is a share of: nothing when the reference does not score above the
    target, or a loss (reference − target, `loss_low`/`loss_high`) its items do not resolve."""
    if row.ood_reference <= row.ood_target:
        return (" On these items the reference scores no higher than the target: nothing was lost, so the ratio"
                " does not measure a recovery.")
    if math.isfinite(row.loss_low) and row.loss_low <= 0:
        return (f" The loss it is a share of (reference − target {row.loss:+.3f} [{row.loss_low:+.3f}, "
                f"{row.loss_high:+.3f}] on the same items) is not resolved, so neither is the share.")
    return ""


def _recoveries(t: dict[str, pd.DataFrame]) -> list[Finding]:
    r = t.get("recovery")
    if r is None:
        return []
    out = []
    for row in r.itertuples():
        interval = (f" [{_pct(row.recovery_low)}, {_pct(row.recovery_high)}]"
                    if math.isfinite(row.recovery_low) and math.isfinite(row.recovery_high) else "")
        text = (f"{row.label}: {row.suite} {row.ood_target:.2f} -> {row.ood_after:.2f} against the peak's "
                f"{row.ood_reference:.2f}, recovering {_pct(row.recovery)}{interval} of the loss"
                + (f" (on the {int(row.n_items)} items the peak was not picked on)." if row.n_items else "."))
        if not math.isfinite(row.recovery):
            text += " Nothing was lost between the peak and the target, so recovery is undefined."
        else:
            text += _loss_caveat(row)
        measurable = math.isfinite(row.recovery) and row.ood_reference > row.ood_target  # something was lost
        verdict = verdict_of(row.recovery_low, row.recovery_high, threshold=0.5) if measurable else "inconclusive"
        raw = getattr(row, "per_seed", None)
        per_seed = [float(x) for x in str(raw).split()] if isinstance(raw, str) else []  # NaN: one model
        if len(per_seed) > 1:  # several seeds: the interval resamples seeds and items
            text += f" Over {len(per_seed)} seeds, paired seed by seed ({', '.join(_pct(x) for x in per_seed)})."
        if per_seed:
            agree = sum(x > 0.5 for x in per_seed)
        else:
            agree = int(row.recovery > 0.5) if math.isfinite(row.recovery) else 0
        out.append(_claim("recovery", text, "rl_recovers" if row.kind == "run" else "surgery_recovers", verdict,
                          row.label, row.recovery, row.recovery_low, row.recovery_high, agree, len(per_seed) or 1))
    return out


def _spectra(t: dict[str, pd.DataFrame]) -> list[Finding]:
    s = t.get("spectrum_sigma")
    if s is None:
        return []
    exc = t.get("spectrum_excess")
    exc = exc.set_index("spectrum") if exc is not None else pd.DataFrame()
    out = []
    for name, g in s.groupby("spectrum", sort=False):
        g = g.set_index("band")
        sig = float((g["mean_abs_rel_sigma_change"] * g["n_values"]).sum() / g["n_values"].sum())
        ang = g["u_angle_deg"]
        text = (f"{name}: singular values moved {sig:.3g} on average (|Δσ/σ|); matched singular vectors turned "
                + ", ".join(f"{b} {ang[b]:.1f}°" for b in ang.index) + ".")
        if float(ang.max()) < ANGLE_RESOLUTION and sig < 1e-6:
            out.append(_claim("spectra", f"{name}: neither singular values nor directions changed measurably "
                                         f"(|Δσ/σ| {sig:.2g}, largest angle {float(ang.max()):.2g}°).",
                              "directions_at_edges", "inconclusive", name))
        elif name in exc.index:
            e = exc.loc[name]
            text += (f" A random update of the same size turns them too, the crowded bulk most; beyond it "
                     f"(U and V, {int(e['n_matrices'])} matrices): edges {e['edge_excess_deg']:+.1f}°, bulk "
                     f"{e['bulk_excess_deg']:+.1f}°, edges − bulk {e['edge_minus_bulk']:+.1f}° "
                     f"[{e['ci_low']:+.1f}, {e['ci_high']:+.1f}] (raw, without the null model: "
                     f"{e['raw_edge_minus_bulk']:+.1f}°).")
            out.append(_claim("spectra", text, "directions_at_edges", verdict_of(e["ci_low"], e["ci_high"]), name,
                              e["edge_minus_bulk"], e["ci_low"], e["ci_high"], seeds=1))
        else:
            out.append(_claim("spectra", text + " No null model (spectrum run with null_draws 0), so the edge and "
                                                "bulk angles cannot be compared.", "directions_at_edges",
                              "inconclusive", name))
    return out


def _freezing(t: dict[str, pd.DataFrame]) -> list[Finding]:
    c = t.get("comparisons")
    if c is None:
        return []
    c = c[c["comparison"] == "variant vs plain"]
    out = []
    for (_a, _b), g in c.groupby(["a", "b"], sort=False):
        better = [f"{r.suite} {r.diff:+.2f}" for r in g.itertuples() if r.ci_low > 0]
        worse = [f"{r.suite} {r.diff:+.2f}" for r in g.itertuples() if r.ci_high < 0]
        verdict = "supported" if better and worse else ("inconclusive" if not better and not worse else "not supported")
        out.append(_claim("freezing", f"{g['a_label'].iloc[0]} vs {g['b_label'].iloc[0]}, paired over items: better "
                                      f"on {', '.join(better) or 'no suite'}, worse on {', '.join(worse) or 'no suite'}; "
                                      "the rest hold 0 in their interval.", "freezing_mixed", verdict,
                          f"{g['a_label'].iloc[0]} vs {g['b_label'].iloc[0]}", seeds=_seed_count(g.iloc[0])))
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
