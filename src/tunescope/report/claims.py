"""The claims of the original studies (and of RL's Razor) that a tunescope study tests, and the scorecard.

A claim is data: the paper, what it says, the paper's own number, and what this study measures for
it (`effect`). The findings (`report.findings`) compute the effect, its interval and the verdict
from the report's tables and tag each finding with the claim's id; the scorecard is the table of
those findings, one row per claim and subject (a run, or a pair of runs), and opens the report
(also `tables/scorecard.csv`).

Verdicts: "supported" or "not supported" when the interval of the effect lies on one side of the
claim's threshold (0 for a difference; 50% for a recovery), "inconclusive" when it holds the
threshold. `seeds_agreeing` counts the training seeds whose own estimate points the claim's way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

RAJANI = "Rajani et al. 2025"
JIN = "Jin et al. 2025"
SHENFELD = "Shenfeld et al. 2025 (RL's Razor)"


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str
    text: str
    paper_value: str  # the paper's own number, as reported
    effect: str  # what this study measures for it


CLAIMS = {c.id: c for c in [
    Claim("grpo_gains_id", RAJANI, "GRPO raises in-domain accuracy", "MATH-500 0.352 -> 0.402 (+0.050)",
          "GRPO - base, in-domain accuracy (paired over items)"),
    Claim("sft_forgets_more", RAJANI, "SFT loses more out-of-domain than GRPO",
          "IFEval 0.216-0.333 after SFT vs 0.466 after GRPO (-0.13 to -0.25)",
          "SFT - GRPO, accuracy on all out-of-domain items pooled (paired over items)"),
    Claim("sft_moves_more", RAJANI, "SFT moves the weights far more than GRPO", "4-50x (layer-mean relative change)",
          "SFT / GRPO layer-mean relative weight change; supported above 2x in every seed (the interval is the "
          "range over seeds: the weights are not a sample of items)"),
    Claim("qk_move_most", RAJANI, "Both methods move Q and K most", "q, k first in every run",
          "share of runs whose two most-changed module types are Q and K"),
    Claim("grpo_drifts_less", RAJANI, "GRPO drifts from the base far less than SFT",
          "per-token KL 0.43 (GRPO) vs 3.67-4.69 (SFT)",
          "KL(base||GRPO) - KL(base||SFT), final checkpoints, token-pooled (paired over the KL items)"),
    Claim("freezing_mixed", RAJANI, "Freezing is inconclusive: better on some suites, worse on others",
          "better on GPQA:D, worse elsewhere", "variant - plain run per suite (paired over items)"),
    Claim("ood_peak", JIN, "OOD accuracy rises early in SFT, peaks, then falls while ID keeps rising",
          "Llama-11B OOD 17.52 at the peak -> 8.97 later (-8.6 points)",
          "peak - end OOD accuracy, peak picked on held-out items (paired over seeds and items)"),
    Claim("rl_recovers", JIN, "RL recovers most of the OOD loss", "85% (Llama, PPO), 99% (Qwen)",
          "(OOD after RL - OOD end) / (OOD peak - OOD end)"),
    Claim("surgery_recovers", JIN, "Restoring top-20% directions or resetting the first 25% of layers recovers "
          "70-80% of the OOD loss", "70-80%", "(OOD after edit - OOD end) / (OOD peak - OOD end)"),
    Claim("directions_at_edges", JIN, "Singular directions move most at the top and bottom of the spectrum, the "
          "bulk stays", "qualitative (figures)", "edge - bulk turn of matched singular vectors beyond a random update of the same "
          "size (degrees; interval over matrices)"),
    Claim("rl_kl_minimal", SHENFELD, "RL moves less than SFT in forward KL on the new task's prompts",
          "qualitative (RL's solutions are the KL-closest of those that solve the task)",
          "forward KL(base||RL) - KL(base||SFT) per token along samples of the base, final checkpoints (paired "
          "over the KL prompts)"),
    Claim("kl_predicts_forgetting", SHENFELD, "The forward KL on the new task predicts forgetting better than weight "
          "change", "R² ≈ 0.71 on LLM tasks (as summarised; not verified)",
          "R²(forward KL) - R²(relative weight change) of the OOD drop over every checkpoint of the plain runs "
          "(paired cluster bootstrap over run x seed)"),
]}

SCORECARD_COLUMNS = ["claim", "paper", "subject", "paper_value", "effect", "ci_low", "ci_high", "verdict",
                     "seeds_agreeing", "seeds", "measure"]


def scorecard(findings: list) -> pd.DataFrame:
    """One row per finding that tests a claim, in the order of CLAIMS (the papers' order)."""
    order = {cid: i for i, cid in enumerate(CLAIMS)}
    rows = []
    for f in sorted((f for f in findings if f.claim_id), key=lambda f: order[f.claim_id]):
        c = CLAIMS[f.claim_id]
        rows.append({"claim": c.text, "paper": c.paper, "subject": f.subject, "paper_value": c.paper_value,
                     "effect": f.effect, "ci_low": f.ci_low, "ci_high": f.ci_high, "verdict": f.verdict,
                     "seeds_agreeing": f.seeds_agreeing, "seeds": f.seeds, "measure": c.effect})
    card = pd.DataFrame(rows, columns=SCORECARD_COLUMNS)
    return card.astype({"seeds_agreeing": "Int64", "seeds": "Int64"})


def verdict_of(low: float, high: float, threshold: float = 0.0, sign: int = 1) -> str:
    """The verdict of an effect whose claim says it lies above `threshold` (`sign` 1) or below (-1)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "inconclusive"
    lo, hi = (low - threshold, high - threshold) if sign > 0 else (threshold - high, threshold - low)
    return "supported" if lo > 0 else "not supported" if hi < 0 else "inconclusive"
