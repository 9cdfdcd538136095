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
                      batch_size: int = 8, ref_lp: list[torch.Tensor] | None = None) -> tuple[list[float], list[int]]:
    """Per item: (sum of per-token KL over its response tokens, number of response tokens).
    `ref_lp`: the reference's log-probs per item, computed once for a sweep (`reference_logprobs`)."""
    sums, counts = [0.0] * len(contexts), [len(r) for r in responses]
    ck_side = ck.continuation_logprobs(contexts, responses, batch_size)
    pairs = (zip(ref.continuation_logprobs(contexts, responses, batch_size), ck_side, strict=True) if ref_lp is None
             else (((j, ref_lp[j]), (j, c_lp)) for j, c_lp in ck_side))
    for (i, r_lp), (j, c_lp) in pairs:
        assert i == j, "both models must see the items in the same order"
        if r_lp.shape != c_lp.shape:
            raise UserError(f"{ck.path}: vocabulary size {c_lp.shape[-1]} differs from the reference's "
                            f"{r_lp.shape[-1]}; KL needs checkpoints of the same base model")
        sums[i] = float(kl_rows(r_lp, c_lp).sum())
    return sums, counts


def reference_logprobs(ref: HFEngine, contexts: list[list[int]], responses: list[list[int]], batch_size: int = 8,
                       max_floats: int = 2**26) -> list[torch.Tensor] | None:
    """The reference's (L, V) log-probs of every item, to reuse at each checkpoint of a sweep, or None
    when they would take more than `max_floats` floats (256 MB; a 7B vocabulary over long responses):
    then each checkpoint computes them again, in lockstep with its own."""
    vocab = ref.model.get_output_embeddings().weight.shape[0]
    if sum(map(len, responses)) * vocab > max_floats:
        return None
    out: list[torch.Tensor | None] = [None] * len(contexts)
    for i, lp in ref.continuation_logprobs(contexts, responses, batch_size):
        out[i] = lp
    return out  # type: ignore[return-value]


def pooled_kl(sums: list[float], counts: list[int], *, seed: int, n_resamples: int) -> tuple[float, float, float]:
    """Token-pooled mean KL and its item-bootstrap 95% interval."""
    import numpy as np

    n = np.asarray(counts, dtype=np.float64)
    per_item = np.divide(sums, n, out=np.zeros_like(n), where=n > 0)
    return bootstrap_ci(per_item, weights=n, seed=seed, n_resamples=n_resamples)
