"""How far a checkpoint's next-token distribution moved: KL to a reference, entropy, length.

KL follows the analysis of Rajani et al. 2025 ("Scalpel vs. Hammer"): teacher-force held-out gold
completions (prompt + `<think>solution</think><answer>answer</answer>`) through the reference R and
the checkpoint C and average, over the *response* tokens only, the full-vocabulary

    KL(R || C)_t = sum_v p_R(v | x_<t) (log p_R(v | x_<t) - log p_C(v | x_<t)).

The average is pooled over tokens (sum of per-token KL / number of tokens); its 95% interval
resamples items. The two models' log-probs are computed in lockstep, batch by batch, so no
(tokens x vocabulary) table is kept. Entropy and completion length come from the generations.
"""

from __future__ import annotations

import torch

from tunescope.errors import UserError
from tunescope.evaluate.engine import HFEngine
from tunescope.evaluate.stats import bootstrap_ci


def kl_rows(ref_lp: torch.Tensor, ck_lp: torch.Tensor) -> torch.Tensor:
    """Per-position KL(R || C) from log-probs (L, V) -> (L,), accumulated in float64."""
    r, c = ref_lp.double(), ck_lp.double()
    return (r.exp() * (r - c)).sum(-1)


def teacher_forced_kl(ref: HFEngine, ck: HFEngine, contexts: list[list[int]], responses: list[list[int]],
                      batch_size: int = 8) -> tuple[list[float], list[int]]:
    """Per item: (sum of per-token KL over its response tokens, number of response tokens)."""
    sums, counts = [0.0] * len(contexts), [len(r) for r in responses]
    pairs = zip(ref.continuation_logprobs(contexts, responses, batch_size),
                ck.continuation_logprobs(contexts, responses, batch_size), strict=True)
    for (i, r_lp), (j, c_lp) in pairs:
        assert i == j, "both models must see the items in the same order"
        if r_lp.shape != c_lp.shape:
            raise UserError(f"{ck.path}: vocabulary size {c_lp.shape[-1]} differs from the reference's "
                            f"{r_lp.shape[-1]}; KL needs checkpoints of the same base model")
        sums[i] = float(kl_rows(r_lp, c_lp).sum())
    return sums, counts


def pooled_kl(sums: list[float], counts: list[int], *, seed: int, n_resamples: int) -> tuple[float, float, float]:
    """Token-pooled mean KL and its item-bootstrap 95% interval."""
    import numpy as np

    n = np.asarray(counts, dtype=np.float64)
    per_item = np.divide(sums, n, out=np.zeros_like(n), where=n > 0)
    return bootstrap_ci(per_item, weights=n, seed=seed, n_resamples=n_resamples)
