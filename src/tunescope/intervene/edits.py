"""Weight edits: pure functions from (REF, TARGET) tensors to one edited tensor.

Intuition. Fine-tuning moves a weight matrix from REF (R, e.g. the checkpoint with the best
out-of-distribution score) to TARGET (T, a later, over-fitted checkpoint). Write each as an SVD,
W = U diag(σ) Vᵀ. Jin et al. ("RL is neither a panacea nor a mirage", 2025) find that σ barely moves
while the singular *directions* rotate, mostly at the top and the tail of the spectrum, and that
putting R's directions back recovers much of the lost skill. The edits below are theirs:

    direction restore   W' = [U_R[:, :k] | U_T[:, k:]] diag(σ_T) [V_R[:, :k] | V_T[:, k:]]ᵀ
                        (optionally R's tail k columns too; the spliced basis is NOT re-orthonormalised)
    full restore        the same splice, with σ_R in the restored positions as well
    value restore       U_T diag(σ_R) V_Tᵀ   (T's directions, R's spectrum)
    interpolation       (1 − α)·T + α·R      (α = 0 gives T, α = 1 gives R; a common baseline)

Layer reset (R's tensor verbatim) needs no function: `restore.py` copies the tensor.

k is a fraction of the rank r = min(m, n): the number of restored directions is round(k·r)
(half up), the tail gets the same count but never overlaps the top. Deviation from the authors'
code: they take integer counts and return T unchanged for k = 0; here k = 0 still goes through the
SVD, so it returns T up to the round-trip error (bounded in the tests). SVD runs in float32 by default
(float64 on request) and the result is cast back to T's stored dtype.
"""

from __future__ import annotations

import math

import torch


def n_directions(k: float, rank: int) -> int:
    """Number of singular directions for a fraction `k` of `rank` (round half up)."""
    return min(rank, math.floor(k * rank + 0.5))


def svd(w: torch.Tensor, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD in `dtype`: U (m, r), σ (r,), V (n, r) with w = U diag(σ) Vᵀ, r = min(m, n).

    A wide matrix (m < n, e.g. down_proj) is decomposed through its transpose, wᵀ = V diag(σ) Uᵀ:
    LAPACK is about 2x faster on the tall shape (measured on CPU, torch 2.13).
    """
    if w.shape[0] < w.shape[1]:
        v, s, uh = torch.linalg.svd(w.mT.to(dtype), full_matrices=False)  # (n, r), (r,), (r, m)
        return uh.mT, s, v
    u, s, vh = torch.linalg.svd(w.to(dtype), full_matrices=False)  # (m, r), (r,), (r, n)
    return u, s, vh.mT


def svdvals(w: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Singular values (r,), descending; through the transpose for wide matrices, as `svd`."""
    return torch.linalg.svdvals((w.mT if w.shape[0] < w.shape[1] else w).to(dtype))


def restored_positions(rank: int, k: float, tail: bool) -> torch.Tensor:
    """Boolean mask (r,) of the singular positions taken from REF: the top k, and the tail k if asked."""
    top = n_directions(k, rank)
    mask = torch.zeros(rank, dtype=torch.bool)
    mask[:top] = True
    if tail:
        bottom = min(top, rank - top)
        if bottom:
            mask[rank - bottom:] = True
    return mask


def _splice(ref: torch.Tensor, target: torch.Tensor, k: float, tail: bool, values_from_ref: bool,
            dtype: torch.dtype) -> torch.Tensor:
    if ref.shape != target.shape or ref.ndim != 2:
        raise ValueError(f"need two 2-D tensors of one shape, got {tuple(ref.shape)} and {tuple(target.shape)}")
    u_r, s_r, v_r = svd(ref, dtype)
    u_t, s_t, v_t = svd(target, dtype)
    mask = restored_positions(s_t.numel(), k, tail).to(s_t.device)  # (r,)
    u = torch.where(mask, u_r, u_t)  # (m, r): column j from REF where mask[j]
    v = torch.where(mask, v_r, v_t)  # (n, r)
    s = torch.where(mask, s_r, s_t) if values_from_ref else s_t  # (r,)
    return ((u * s) @ v.mT).to(target.dtype)  # (m, n)


def direction_restore(ref: torch.Tensor, target: torch.Tensor, k: float, *, tail: bool = False,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """TARGET with REF's singular vectors (U and V) in the top-k (and tail-k) positions, TARGET's σ.

    ref, target: (m, n). Returns (m, n) in target's dtype.
    """
    return _splice(ref, target, k, tail, values_from_ref=False, dtype=dtype)


def full_restore(ref: torch.Tensor, target: torch.Tensor, k: float, *, tail: bool = False,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """TARGET with REF's singular triplets (u, σ, v) in the top-k (and tail-k) positions."""
    return _splice(ref, target, k, tail, values_from_ref=True, dtype=dtype)


def value_restore(ref: torch.Tensor, target: torch.Tensor, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """U_T diag(σ_R) V_Tᵀ: TARGET's directions with REF's singular values."""
    if ref.shape != target.shape or ref.ndim != 2:
        raise ValueError(f"need two 2-D tensors of one shape, got {tuple(ref.shape)} and {tuple(target.shape)}")
    s_r = svdvals(ref, dtype)  # (r,)
    u_t, _, v_t = svd(target, dtype)
    return ((u_t * s_r) @ v_t.mT).to(target.dtype)


def interpolate(ref: torch.Tensor, target: torch.Tensor, alpha: float, *,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(1 − α)·T + α·R, any shape; exact at α = 0 (T) and α = 1 (R) for finite weights."""
    if ref.shape != target.shape:
        raise ValueError(f"need tensors of one shape, got {tuple(ref.shape)} and {tuple(target.shape)}")
    return ((1.0 - alpha) * target.to(dtype) + alpha * ref.to(dtype)).to(target.dtype)
