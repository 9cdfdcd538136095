"""How far a checkpoint's hidden representations moved: linear CKA to the reference, layer by layer.

Jin et al. 2025 (RL Heals SFT, `analysis/model_dynamics_plot.py`) compare the hidden states of a
checkpoint with those of its base on a set of prompts: each prompt is one point, the mean hidden
state over its last K = 8 prompt tokens; over N prompts the two (N, H) matrices X (reference) and
Y (checkpoint) are compared with linear CKA (Kornblith et al. 2019),

    CKA(X, Y) = ||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F),    X_c = X - mean over prompts,

which is 1 when Y is X up to rotation and isotropic scaling, and falls as the geometry of the
prompts' representations changes. 1 - CKA is reported as representation drift. The hidden states
come from `HFEngine.pooled_hidden_states`; the comparison is done here, in float64.
Jin et al. anchor the K tokens at the end of the user turn. The organism's prompts of a suite end in
the same words (a shared closing instruction, then the template's end of turn and assistant header),
which would give every prompt the same pooled state in the first layers, so here the anchor is the
end of each prompt once the suffix all of the suite's prompts share is cut (`anchored`): the last K
tokens in which the prompts differ. A causal model's states there do not depend on what follows.
Deviation: every layer is compared, not only the last: `hidden_states` index j is the embeddings
(j = 0), then the output of block j - 1; transformers returns the last block's output after the final
norm (what feeds the LM head, Jin et al.'s `hidden_into_head`).
"""

from __future__ import annotations

import numpy as np

K_LAST = 8  # tokens pooled per prompt, as in Jin et al.


def anchored(prompts: list[list[int]]) -> list[list[int]]:
    """Each prompt without the longest suffix that every prompt shares (kept whole when that is all of one)."""
    if len(prompts) < 2:
        return prompts
    shortest = min(len(p) for p in prompts)
    k = 0
    while k < shortest and len({p[-1 - k] for p in prompts}) == 1:
        k += 1
    return prompts if k == 0 or k == shortest else [p[:len(p) - k] for p in prompts]


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of two (N, H) representations of the same N inputs (feature-space form, float64)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    x, y = x - x.mean(0), y - y.mean(0)
    den = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(np.linalg.norm(y.T @ x) ** 2 / den) if den > 0 else float("nan")


def cka_by_layer(ref: np.ndarray, ck: np.ndarray) -> list[float]:
    """CKA at each layer of two (N, layers + 1, H) pooled hidden states of the same prompts."""
    return [linear_cka(ref[:, j], ck[:, j]) for j in range(ref.shape[1])]
