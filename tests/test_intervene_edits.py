"""The weight edits against an independent float64 numpy reconstruction of the authors' formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tunescope.intervene import edits


def _pair(m: int, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ref = torch.randn(m, n, generator=g) / n**0.5
    target = ref + 0.3 * torch.randn(m, n, generator=g) / n**0.5  # a large move: directions rotate
    return ref, target


def _numpy_edit(ref: np.ndarray, target: np.ndarray, top: int, tail: int, what: str) -> np.ndarray:
    """W' by explicit column concatenation, as in the authors' code, in float64."""
    ur, sr, vrh = np.linalg.svd(ref.astype(np.float64), full_matrices=False)
    ut, st, vth = np.linalg.svd(target.astype(np.float64), full_matrices=False)
    r = st.size
    if what == "values":
        return ut @ np.diag(sr) @ vth
    u = np.concatenate([ur[:, :top], ut[:, top:r - tail], ur[:, r - tail:]], axis=1)
    vh = np.concatenate([vrh[:top], vth[top:r - tail], vrh[r - tail:]], axis=0)
    s = st if what == "direction" else np.concatenate([sr[:top], st[top:r - tail], sr[r - tail:]])
    return u @ np.diag(s) @ vh


@pytest.mark.parametrize("shape", [(48, 32), (24, 72)])
@pytest.mark.parametrize("what, k, tail", [("direction", 0.25, False), ("direction", 0.2, True),
                                           ("full", 0.25, False), ("full", 0.1, True), ("values", 0.0, False)])
def test_edits_match_numpy_float64(shape, what, k, tail):
    ref, target = _pair(*shape)
    r = min(shape)
    top = edits.n_directions(k, r)
    bottom = min(top, r - top) if tail else 0
    want = _numpy_edit(ref.numpy(), target.numpy(), top, bottom, what)
    scale = np.abs(want).max()
    for dtype, tol in ((torch.float32, 2e-5), (torch.float64, 1e-11)):
        if what == "values":
            got = edits.value_restore(ref.to(dtype), target.to(dtype), dtype=dtype)
        else:
            fn = edits.direction_restore if what == "direction" else edits.full_restore
            got = fn(ref.to(dtype), target.to(dtype), k, tail=tail, dtype=dtype)
        assert got.dtype == dtype and got.shape == target.shape
        assert np.abs(got.double().numpy() - want).max() / scale < tol
    # the edit really changed TARGET (the test can fail)
    assert np.abs(want - target.double().numpy()).max() / scale > 1e-2


def test_k0_is_target_up_to_svd_roundtrip():
    ref, target = _pair(64, 48)
    for dtype, bound in ((torch.float32, 50 * torch.finfo(torch.float32).eps),
                         (torch.float64, 50 * torch.finfo(torch.float64).eps)):
        t = target.to(dtype)
        for fn in (edits.direction_restore, edits.full_restore):
            got = fn(ref.to(dtype), t, 0.0, tail=True, dtype=dtype)
            rel = float(torch.linalg.matrix_norm(got - t) / torch.linalg.matrix_norm(t))
            assert rel < bound, (fn.__name__, dtype, rel)


def test_k1_full_restore_is_ref_and_direction_keeps_target_spectrum():
    ref, target = _pair(40, 40, seed=3)
    full = edits.full_restore(ref, target, 1.0, dtype=torch.float64)
    assert torch.allclose(full, ref, atol=1e-12)
    uv = edits.direction_restore(ref.double(), target.double(), 1.0, dtype=torch.float64)
    # R's directions, T's values: same singular values as T, same singular vectors as R
    assert torch.allclose(torch.linalg.svdvals(uv), torch.linalg.svdvals(target.double()), atol=1e-12)
    assert not torch.allclose(uv, ref.double(), atol=1e-3)


def test_bf16_result_stays_bf16_and_close():
    ref, target = _pair(32, 32)
    got = edits.direction_restore(ref.bfloat16(), target.bfloat16(), 0.0)
    assert got.dtype == torch.bfloat16
    # k = 0 round trip: within one bf16 rounding step of TARGET
    diff = (got.float() - target.bfloat16().float()).abs()
    assert (diff <= target.bfloat16().float().abs() * 2**-7 + 1e-6).all()


def test_interpolate_endpoints_exact_and_midpoint():
    ref, target = _pair(8, 6)
    ref16, target16 = ref.bfloat16(), target.bfloat16()
    assert torch.equal(edits.interpolate(ref16, target16, 0.0), target16)
    assert torch.equal(edits.interpolate(ref16, target16, 1.0), ref16)
    mid = edits.interpolate(ref.double(), target.double(), 0.25, dtype=torch.float64)
    want = 0.75 * target.double().numpy() + 0.25 * ref.double().numpy()
    assert np.allclose(mid.numpy(), want, atol=1e-15)


@pytest.mark.parametrize("k, rank, top, tail", [(0.2, 64, 13, 13), (0.2, 10, 2, 2), (0.6, 10, 6, 4),
                                                (0.0, 10, 0, 0), (1.0, 10, 10, 0), (0.05, 4, 0, 0)])
def test_restored_positions(k, rank, top, tail):
    mask = edits.restored_positions(rank, k, tail=True)
    assert edits.n_directions(k, rank) == top
    assert mask[:top].all() and int(mask.sum()) == top + tail
    assert mask[rank - tail:].all() if tail else int(mask.sum()) == top


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="one shape"):
        edits.direction_restore(torch.zeros(3, 4), torch.zeros(4, 3), 0.2)


@pytest.mark.parametrize("shape", [(12, 30), (30, 12), (16, 16)])
def test_svd_reconstructs_for_wide_and_tall(shape):
    w = torch.randn(*shape, dtype=torch.float64)
    u, s, v = edits.svd(w, torch.float64)
    r = min(shape)
    assert u.shape == (shape[0], r) and v.shape == (shape[1], r) and s.shape == (r,)
    assert torch.allclose((u * s) @ v.mT, w, atol=1e-12)
    assert torch.allclose(u.mT @ u, torch.eye(r, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(v.mT @ v, torch.eye(r, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(edits.svdvals(w, torch.float64), torch.from_numpy(np.linalg.svd(w.numpy(), compute_uv=False)))
