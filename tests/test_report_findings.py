"""Findings are computed from the tables, and say when the data does not support an original claim."""

from __future__ import annotations

import numpy as np
import pandas as pd

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


def test_ood_peak_supported_when_it_rises_then_falls():
    f = compute({"ood_curve": _curve([0.10, 0.30, 0.20, 0.12], [0.1, 0.3, 0.5, 0.7])})
    (peak,) = [x for x in f if x.topic == "ood peak"]
    assert peak.verdict == "supported" and "step 10" in peak.text and "0.30" in peak.text


def test_ood_peak_not_supported_when_ood_only_falls():
    f = compute({"ood_curve": _curve([0.30, 0.25, 0.20, 0.10], [0.1, 0.3, 0.5, 0.7])})
    (peak,) = [x for x in f if x.topic == "ood peak"]
    assert peak.verdict == "not supported"


def test_ood_peak_inconclusive_within_intervals():
    f = compute({"ood_curve": _curve([0.20, 0.22, 0.21, 0.20], [0.1, 0.3, 0.5, 0.7], half_width=0.1)})
    (peak,) = [x for x in f if x.topic == "ood peak"]
    assert peak.verdict == "inconclusive"


def test_ood_peak_inconclusive_when_flat():
    f = compute({"ood_curve": _curve([0.0, 0.0, 0.0, 0.0], [0.1, 0.3, 0.5, 0.7], half_width=0.0)})
    (peak,) = [x for x in f if x.topic == "ood peak"]
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
    (qk,) = [x for x in f if x.claim.startswith("Both methods move Q and K")]
    assert qk.verdict == "inconclusive" and "1 of 2" in qk.text


def test_recovery_verdicts():
    rec = pd.DataFrame({"source": "sft24", "kind": ["run", "intervention"], "name": ["grpo24", "restore"],
                        "label": ["GRPO", "restore"], "suite": "game24_ood", "ood_reference": [0.3, 0.3],
                        "ood_target": [0.1, 0.1], "ood_after": [0.28, 0.1], "ood_after_ci_low": [0.27, 0.09],
                        "ood_after_ci_high": [0.29, 0.11], "id_after": [0.5, 0.5], "recovery": [0.9, 0.0],
                        "recovery_low": [0.8, -0.1], "recovery_high": [1.0, 0.1], "interval": "x"})
    f = [x for x in compute({"recovery": rec}) if x.topic == "recovery"]
    assert [x.verdict for x in f] == ["supported", "not supported"]
    assert "90%" in f[0].text


def _final_and_runs(grpo_maths, grpo_instruct, sft_instruct=(0.1, 0.0, 0.2)) -> dict[str, pd.DataFrame]:
    """Final tables of one SFT-GRPO pair on maths, instruct out-of-domain; cells are (value, ci_low, ci_high)."""
    rows = {("base", "maths"): (0.3, 0.2, 0.4), ("base", "instruct"): (0.4, 0.3, 0.5),
            ("sft", "maths"): (0.8, 0.7, 0.9), ("sft", "instruct"): sft_instruct,
            ("grpo", "maths"): grpo_maths, ("grpo", "instruct"): grpo_instruct}
    final = pd.DataFrame([{"run": r, "suite": s, "value": v, "ci_low": lo, "ci_high": hi, "label": r}
                          for (r, s), (v, lo, hi) in rows.items()])
    runs = pd.DataFrame([{"run": r, "label": r.upper(), "method": r, "task": "maths", "init": "base",
                          "ood_suites": "instruct", "freeze": "", "train_only": ""} for r in ("sft", "grpo")])
    return {"final": final, "runs": runs}


def _verdicts(tables: dict[str, pd.DataFrame], claim: str) -> list[str]:
    return [x.verdict for x in compute(tables) if x.claim.startswith(claim)]


def test_in_domain_gain_and_out_of_domain_loss_against_the_base_intervals():
    tables = _final_and_runs((0.6, 0.5, 0.7), (0.4, 0.3, 0.5))
    texts = " ".join(x.text for x in compute(tables))
    assert "GRPO 0.60 [0.50, 0.70] against the base's 0.30 [0.20, 0.40], above" in texts
    assert "SFT on instruct; GRPO on no suite" in texts
    assert _verdicts(tables, "GRPO raises") == ["supported"] and _verdicts(tables, "SFT loses") == ["supported"]
    # touching intervals are not apart
    assert _verdicts(_final_and_runs((0.5, 0.4, 0.6), (0.4, 0.3, 0.5)), "GRPO raises") == ["inconclusive"]
    assert _verdicts(_final_and_runs((0.1, 0.0, 0.15), (0.4, 0.3, 0.5)), "GRPO raises") == ["not supported"]
    # GRPO losing more than SFT contradicts the claim; neither losing leaves it open
    assert _verdicts(_final_and_runs((0.6, 0.5, 0.7), (0.1, 0.0, 0.2), (0.4, 0.3, 0.5)), "SFT loses") == ["not supported"]
    assert _verdicts(_final_and_runs((0.6, 0.5, 0.7), (0.4, 0.3, 0.5), (0.4, 0.3, 0.5)), "SFT loses") == ["inconclusive"]


def test_ood_peak_finding_reports_faces_read_as_10():
    curve = _curve([0.10, 0.30, 0.20, 0.12], [0.1, 0.3, 0.5, 0.7])
    mix = pd.DataFrame({"run": "sft24", "seed": 0, "step": curve["step"], "faces_as_10": [0.0, 0.05, 0.2, 0.6]})
    (peak,) = [x for x in compute({"ood_curve": curve, "ood_outcomes": mix}) if x.topic == "ood peak"]
    assert "5% at the peak, 60% at the end" in peak.text
