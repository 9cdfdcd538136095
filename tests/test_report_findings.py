"""Findings are computed from the tables, and say when the data does not support an original claim."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tunescope.report.claims import CLAIMS, SCORECARD_COLUMNS, scorecard, verdict_of
from tunescope.report.compare import COLUMNS, POOLED_OOD
from tunescope.report.findings import compute


def _curve(ood: list[float], idv: list[float], half_width: float = 0.02) -> pd.DataFrame:
    steps = np.arange(len(ood)) * 10
    ood_a, id_a = np.asarray(ood), np.asarray(idv)
    after0 = ood_a[1:]
    peak = 1 + int(np.argmax(after0))
    return pd.DataFrame({"run": "sft24", "step": steps, "fraction": steps / steps[-1], "id": id_a,
                         "id_ci_low": id_a - half_width, "id_ci_high": id_a + half_width, "ood": ood_a,
                         "ood_ci_low": ood_a - half_width, "ood_ci_high": ood_a + half_width,
                         "is_peak": steps == steps[peak]})


def _peak(rise: tuple[float, float, float], fall: tuple[float, float, float], seeds: int = 3) -> pd.DataFrame:
    """An ood_peak row: held-out rise and fall, each (value, low, high)."""
    return pd.DataFrame([{"run": "sft24", "suite": "game24_ood", "rise": rise[0], "rise_low": rise[1],
                          "rise_high": rise[2], "fall": fall[0], "fall_low": fall[1], "fall_high": fall[2],
                          "n_items": 100, "seeds": seeds, "peak_steps_held_out": "10 10 20",
                          "interval": "paired seeds x items", "seeds_agreeing": seeds}])


def _peak_finding(tables: dict[str, pd.DataFrame]):
    (peak,) = [x for x in compute(tables) if x.topic == "ood peak"]
    return peak


def test_ood_peak_verdict_follows_the_held_out_paired_intervals():
    curve = _curve([0.10, 0.30, 0.20, 0.12], [0.1, 0.3, 0.5, 0.7])
    peak = _peak_finding({"ood_curve": curve, "ood_peak": _peak((0.15, 0.08, 0.22), (0.12, 0.05, 0.2))})
    assert peak.verdict == "supported" and "step 10" in peak.text and "0.30" in peak.text
    assert (peak.claim_id, peak.effect, peak.ci_low, peak.ci_high, peak.seeds) == ("ood_peak", 0.12, 0.05, 0.2, 3)
    assert "peak − end +0.120 [+0.050, +0.200]" in peak.text
    # the curve's own peak is the best of many checkpoints: it decides nothing without the held-out row
    bare = _peak_finding({"ood_curve": curve})
    assert bare.verdict == "" and "no paired test" in bare.text
    # a fall below zero contradicts the claim; one interval holding zero leaves it open
    assert _peak_finding({"ood_curve": curve, "ood_peak": _peak((0.1, 0.05, 0.2), (-0.1, -0.2, -0.05))}).verdict \
        == "not supported"
    assert _peak_finding({"ood_curve": curve, "ood_peak": _peak((0.1, 0.05, 0.2), (0.02, -0.03, 0.07))}).verdict \
        == "inconclusive"


def test_ood_peak_inconclusive_when_id_falls_after_the_peak():
    curve = _curve([0.10, 0.30, 0.20, 0.12], [0.1, 0.5, 0.4, 0.3])
    assert _peak_finding({"ood_curve": curve, "ood_peak": _peak((0.15, 0.08, 0.22), (0.12, 0.05, 0.2))}).verdict \
        == "inconclusive"


def test_ood_peak_inconclusive_when_flat():
    curve = _curve([0.0, 0.0, 0.0, 0.0], [0.1, 0.3, 0.5, 0.7], half_width=0.0)
    peak = _peak_finding({"ood_curve": curve, "ood_peak": _peak((0.0, 0.0, 0.0), (0.0, 0.0, 0.0))})
    assert peak.verdict == "inconclusive" and "cannot show a peak" in peak.text


def test_update_ratio_and_module_ranking_come_from_the_numbers():
    size = pd.DataFrame({"run": ["sft", "grpo"], "label": ["SFT", "GRPO"], "kind": ["sft", "grpo"],
                         "mean_rel_change": [0.05, 0.001], "pooled_rel_change": [0.05, 0.001]})
    mods = ["q", "k", "v", "o", "gate", "up", "down"]
    vals = {"sft": [5, 6, 1, 1, 2, 2, 2], "grpo": [1, 1, 3, 1, 1, 1, 1]}
    rank = pd.concat([pd.DataFrame({"run": r, "label": r, "kind": r, "module": mods, "mean_rel_change": v})
                      for r, v in vals.items()])
    rank["rank"] = rank.groupby("run")["mean_rel_change"].rank(ascending=False, method="first").astype(int)
    f = compute({"update_size": size, "module_ranking": rank})
    texts = " ".join(x.text for x in f)
    assert "50.0x" in texts and "sft: k moved most" in texts and "grpo: v moved most" in texts
    assert _verdicts({"update_size": size}, "sft_moves_more") == ["supported"]
    # "far more" needs more than twice GRPO's change: 1.5x is not
    close = size.assign(mean_rel_change=[0.0015, 0.001], pooled_rel_change=[0.0015, 0.001])
    assert _verdicts({"update_size": close}, "sft_moves_more") == ["not supported"]
    (qk,) = [x for x in f if x.claim_id == "qk_move_most"]
    assert qk.verdict == "inconclusive" and "1 of 2" in qk.text


def test_recovery_verdicts():
    rec = pd.DataFrame({"source": "sft24", "kind": ["run", "intervention"], "name": ["grpo24", "restore"],
                        "label": ["GRPO", "restore"], "suite": "game24_ood", "ood_reference": [0.3, 0.3],
                        "ood_target": [0.1, 0.1], "ood_after": [0.28, 0.1], "ood_after_ci_low": [0.27, 0.09],
                        "ood_after_ci_high": [0.29, 0.11], "id_after": [0.5, 0.5], "recovery": [0.9, 0.0],
                        "recovery_low": [0.8, -0.1], "recovery_high": [1.0, 0.1], "interval": "x", "n_items": 86,
                        "loss": [0.2, 0.2], "loss_low": [0.1, 0.1], "loss_high": [0.3, 0.3]})
    f = [x for x in compute({"recovery": rec}) if x.topic == "recovery"]
    assert [x.verdict for x in f] == ["supported", "not supported"]
    assert "90%" in f[0].text and "on the 86 items the peak was not picked on" in f[0].text
    assert "not resolved" not in f[0].text  # a loss of 0.2 [0.1, 0.3]: resolved
    # the reference no higher than the target on the held-out items: the ratio measures nothing
    low = rec.assign(ood_reference=[0.10, 0.3], recovery=[12.0, 0.0])
    f = [x for x in compute({"recovery": low}) if x.topic == "recovery"]
    assert "nothing was lost, so the ratio does not measure a recovery" in f[0].text and f[0].verdict == "inconclusive"
    # a loss whose interval holds 0: named, with its interval
    f = [x for x in compute({"recovery": rec.assign(loss=0.02, loss_low=-0.01, loss_high=0.05)}) if x.topic == "recovery"]
    assert "The loss it is a share of (reference − target +0.020 [-0.010, +0.050] on the same items) is not resolved" \
        in f[0].text


def _comparisons(grpo_maths, pooled, grpo_instruct=(0.0, -0.05, 0.05), sft_instruct=(-0.2, -0.3, -0.1)):
    """Paired comparison rows of one SFT-GRPO pair on maths, instruct out-of-domain, against the base
    and against each other; cells are (diff, ci_low, ci_high)."""
    rows = [("vs base", "sft", "base", "maths", (0.5, 0.4, 0.6)), ("vs base", "sft", "base", "instruct", sft_instruct),
            ("vs base", "grpo", "base", "maths", grpo_maths), ("vs base", "grpo", "base", "instruct", grpo_instruct),
            ("sft vs grpo", "sft", "grpo", POOLED_OOD, pooled)]
    c = pd.DataFrame([{"comparison": k, "a": a, "b": b, "a_label": a.upper(), "b_label": b.upper(), "suite": s,
                       "a_value": 0.5 + d / 2, "b_value": 0.5 - d / 2, "diff": d, "ci_low": lo, "ci_high": hi,
                       "n_items": 200, "seeds_a": 3, "seeds_b": 3 if b != "base" else 1,
                       "interval": "seeds x items", "per_seed": " ".join(f"{d + e:.3f}" for e in (-0.01, 0, 0.01)),
                       "seeds_agreeing": 3 if d > 0 else 0}
                      for k, a, b, s, (d, lo, hi) in rows], columns=COLUMNS)
    runs = pd.DataFrame([{"run": r, "label": r.upper(), "method": r, "task": "maths", "init": "base",
                          "ood_suites": "instruct", "freeze": "", "train_only": ""} for r in ("sft", "grpo")])
    return {"comparisons": c, "runs": runs}


def _verdicts(tables: dict[str, pd.DataFrame], claim: str) -> list[str]:
    return [x.verdict for x in compute(tables) if x.claim_id == claim]


def test_in_domain_gain_and_out_of_domain_loss_come_from_the_paired_comparisons():
    tables = _comparisons((0.3, 0.2, 0.4), (-0.2, -0.3, -0.1))
    f = compute(tables)
    texts = " ".join(x.text for x in f)
    assert "GRPO 0.65 vs BASE 0.35: +0.300 [+0.200, +0.400] over 200 items and 3 seeds" in texts
    assert "SFT on instruct -0.20; GRPO on no suite" in texts
    assert _verdicts(tables, "grpo_gains_id") == ["supported"] and _verdicts(tables, "sft_forgets_more") == ["supported"]
    (gain,) = [x for x in f if x.claim_id == "grpo_gains_id"]
    assert (gain.effect, gain.ci_low, gain.ci_high, gain.seeds_agreeing, gain.seeds) == (0.3, 0.2, 0.4, 3, 3)
    # an interval touching zero decides nothing; one below it contradicts the claim
    assert _verdicts(_comparisons((0.1, 0.0, 0.2), (-0.2, -0.3, -0.1)), "grpo_gains_id") == ["inconclusive"]
    assert _verdicts(_comparisons((-0.1, -0.2, -0.05), (-0.2, -0.3, -0.1)), "grpo_gains_id") == ["not supported"]
    (loss,) = [x for x in compute(_comparisons((-0.1, -0.2, -0.05), (-0.2, -0.3, -0.1))) if x.claim_id == "grpo_gains_id"]
    assert loss.seeds_agreeing == 0  # seeds agree with the claim, not with the estimate's sign
    assert _verdicts(_comparisons((0.3, 0.2, 0.4), (0.2, 0.1, 0.3)), "sft_forgets_more") == ["not supported"]
    assert _verdicts(_comparisons((0.3, 0.2, 0.4), (-0.05, -0.1, 0.02)), "sft_forgets_more") == ["inconclusive"]


def test_scorecard_has_one_row_per_claim_finding_in_the_papers_order():
    tables = _comparisons((0.3, 0.2, 0.4), (-0.2, -0.3, -0.1))
    tables["ood_curve"] = _curve([0.10, 0.30, 0.20, 0.12], [0.1, 0.3, 0.5, 0.7])
    tables["ood_peak"] = _peak((0.15, 0.08, 0.22), (0.12, 0.05, 0.2))
    f = compute(tables)
    card = scorecard(f)
    assert list(card.columns) == SCORECARD_COLUMNS
    assert list(card["claim"]) == [CLAIMS[c].text for c in ("grpo_gains_id", "sft_forgets_more", "ood_peak")]
    assert list(card["verdict"]) == ["supported"] * 3 and list(card["seeds"]) == [3, 3, 3]
    assert card.iloc[1]["effect"] == -0.2 and card.iloc[1]["ci_high"] == -0.1
    assert len(card) == sum(bool(x.claim_id) for x in f)


def test_verdict_of_needs_the_whole_interval_on_one_side_of_the_threshold():
    assert verdict_of(0.01, 0.2) == "supported" and verdict_of(-0.2, -0.01) == "not supported"
    assert verdict_of(0.0, 0.2) == "inconclusive" and verdict_of(float("nan"), 0.2) == "inconclusive"
    assert verdict_of(-0.2, -0.01, sign=-1) == "supported" and verdict_of(0.6, 0.9, threshold=0.5) == "supported"
    assert verdict_of(0.3, 0.6, threshold=0.5) == "inconclusive"


def test_ood_peak_finding_reports_faces_read_as_10():
    curve = _curve([0.10, 0.30, 0.20, 0.12], [0.1, 0.3, 0.5, 0.7])
    mix = pd.DataFrame({"run": "sft24", "seed": 0, "step": curve["step"], "faces_as_10": [0.0, 0.05, 0.2, 0.6]})
    (peak,) = [x for x in compute({"ood_curve": curve, "ood_outcomes": mix}) if x.topic == "ood peak"]
    assert "5% at the peak, 60% at the end" in peak.text


def test_directions_at_edges_is_judged_against_the_null_model():
    sigma = pd.DataFrame({"spectrum": "sft_vs_base", "band": ["top 10%", "10-50%", "50-90%", "bottom 10%"],
                          "mean_abs_rel_sigma_change": 0.01, "u_angle_deg": [20.0, 40.0, 45.0, 30.0],
                          "n_values": [10, 40, 40, 10]})
    excess = pd.DataFrame([{"spectrum": "sft_vs_base", "edge_excess_deg": 2.0, "bulk_excess_deg": -1.0,
                            "edge_minus_bulk": 3.0, "ci_low": 1.0, "ci_high": 5.0, "raw_edge_minus_bulk": -17.5,
                            "n_matrices": 40}])
    (f,) = compute({"spectrum_sigma": sigma, "spectrum_excess": excess})
    # the raw angles turn the bulk most; beyond a random update of the same size the edges turn more
    assert f.claim_id == "directions_at_edges" and f.verdict == "supported"
    assert (f.effect, f.ci_low, f.ci_high) == (3.0, 1.0, 5.0) and "edges − bulk +3.0° [+1.0, +5.0]" in f.text
    assert [x.verdict for x in compute({"spectrum_sigma": sigma, "spectrum_excess": excess.assign(
        ci_low=-1.0, ci_high=-0.5)})] == ["not supported"]
    (bare,) = compute({"spectrum_sigma": sigma})
    assert bare.verdict == "inconclusive" and "No null model" in bare.text


def test_kl_claim_pairs_the_two_runs_over_the_kl_items():
    rng = np.random.default_rng(0)
    tokens = rng.integers(5, 40, 30)
    sft, grpo = rng.gamma(2.0, 0.3, 30) * tokens, rng.gamma(2.0, 0.1, 30) * tokens  # per-item KL sums

    def row(run, kind, sums, kl):
        return {"run": run, "kind": kind, "seed": 0, "step": 60, "kl": kl, "kl_ci_low": kl * 0.8,
                "kl_ci_high": kl * 1.2, "kl_item_sums": " ".join(f"{x:.9g}" for x in sums),
                "kl_item_tokens": " ".join(map(str, tokens))}
    d = pd.DataFrame([row("sft", "sft", sft, sft.sum() / tokens.sum()), row("grpo", "grpo", grpo, grpo.sum() / tokens.sum())])
    runs = _comparisons((0.3, 0.2, 0.4), (-0.2, -0.3, -0.1))["runs"]
    (f,) = [x for x in compute({"distribution": d, "runs": runs}) if x.claim_id == "grpo_drifts_less"]
    want = (grpo.sum() - sft.sum()) / tokens.sum()  # token-pooled difference, float64
    assert f.effect == pytest.approx(want, rel=1e-9) and f.ci_low < want < f.ci_high < 0
    assert f.verdict == "supported" and "paired over the KL items" in f.text
    # the same runs swapped: GRPO drifts more, the claim fails
    swapped = d.assign(run=["grpo", "sft"], kind=["grpo", "sft"])
    (g,) = [x for x in compute({"distribution": swapped, "runs": runs}) if x.claim_id == "grpo_drifts_less"]
    assert g.verdict == "not supported"
    # without per-item KL the marginal intervals decide, and say so
    (h,) = [x for x in compute({"distribution": d.drop(columns=["kl_item_sums", "kl_item_tokens"]), "runs": runs})
            if x.claim_id == "grpo_drifts_less"]
    assert "no per-item KL" in h.text and math.isnan(h.ci_low)


def test_forward_kl_claim_pairs_along_the_same_base_samples_only():
    rng = np.random.default_rng(1)
    tokens = rng.integers(5, 40, 30)
    sft, grpo = rng.gamma(2.0, 0.3, 30) * tokens, rng.gamma(2.0, 0.2, 30) * tokens  # per-item forward KL sums

    def row(run, sums, counts):
        return {"run": run, "kind": run, "seed": 0, "step": 60, "kl": 0.1, "kl_ci_low": 0.08, "kl_ci_high": 0.12,
                "fkl": sums.sum() / counts.sum(), "fkl_item_sums": " ".join(f"{x:.9g}" for x in sums),
                "fkl_item_tokens": " ".join(map(str, counts))}
    d = pd.DataFrame([row("sft", sft, tokens), row("grpo", grpo, tokens)])
    runs = _comparisons((0.3, 0.2, 0.4), (-0.2, -0.3, -0.1))["runs"]
    (f,) = [x for x in compute({"distribution": d, "runs": runs}) if x.claim_id == "rl_kl_minimal"]
    want = (grpo.sum() - sft.sum()) / tokens.sum()
    assert f.effect == pytest.approx(want, rel=1e-9) and f.ci_low < want < f.ci_high < 0 and f.verdict == "supported"
    assert CLAIMS["rl_kl_minimal"].paper.startswith("Shenfeld")
    # scored along other samples (another machine's draw: other lengths): no paired claim at all
    other = pd.DataFrame([row("sft", sft, tokens), row("grpo", grpo, tokens + 1)])
    assert not [x for x in compute({"distribution": other, "runs": runs}) if x.claim_id == "rl_kl_minimal"]


def test_forgetting_predictor_claim_is_made_on_the_forward_kl_only():
    fit = pd.DataFrame([
        {"predictor": "fkl", "what": "forward KL", "points": 40, "runs": 8, "r2": 0.8, "r2_ci_low": 0.6,
         "r2_ci_high": 0.9, "r2_minus_rel_change": 0.3, "diff_ci_low": 0.1, "diff_ci_high": 0.5},
        {"predictor": "kl", "what": "gold KL", "points": 40, "runs": 8, "r2": 0.5, "r2_ci_low": 0.3,
         "r2_ci_high": 0.7, "r2_minus_rel_change": 0.0, "diff_ci_low": -0.1, "diff_ci_high": 0.1},
        {"predictor": "rel_change", "what": "weight change", "points": 40, "runs": 8, "r2": 0.5, "r2_ci_low": 0.3,
         "r2_ci_high": 0.7, "r2_minus_rel_change": np.nan, "diff_ci_low": np.nan, "diff_ci_high": np.nan}])
    (f,) = [x for x in compute({"forgetting_fit": fit}) if "Forgetting predictor" in x.text]
    assert f.claim_id == "kl_predicts_forgetting" and f.verdict == "supported" and f.effect == pytest.approx(0.3)
    assert (f.ci_low, f.ci_high) == (0.1, 0.5) and "forward KL" in f.text
    (g,) = [x for x in compute({"forgetting_fit": fit[fit["predictor"] != "fkl"]}) if "Forgetting predictor" in x.text]
    assert not g.claim_id  # the gold-solution KL is not RL's Razor's predictor: a finding, not a claim
