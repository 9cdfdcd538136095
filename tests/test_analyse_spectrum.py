"""`tunescope spectrum`: every metric against float64 numpy / scipy, on random matrices and on tiny
checkpoints of each architecture family (fused and transposed layouts included)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.linalg as sla
import torch
from test_analyse import ARCHS, build, expected_parts, load64

from tunescope.analyse.spectrum import (
    matrix_metrics,
    null_angles,
    null_seed,
    null_update,
    principal_angles,
    spectrum,
)
from tunescope.cli import main


def numpy_metrics(wr: np.ndarray, wt: np.ndarray, frac: float) -> dict[str, float]:
    """The per-matrix metrics, computed the long way in float64."""
    ur, sr, vhr = np.linalg.svd(wr, full_matrices=False)
    ut, st, vht = np.linalg.svd(wt, full_matrices=False)
    vr, vt = vhr.T, vht.T
    r = len(sr)
    k = min(r, max(1, round(frac * r)))
    out = {"k": k}
    for side, a, b in (("u", ur, ut), ("v", vr, vt)):
        ang = np.degrees(sla.subspace_angles(a[:, :k], b[:, :k]))
        out[f"angle_{side}_mean"], out[f"angle_{side}_max"] = ang.mean(), ang.max()
        pa, pb = a[:, :k] @ a[:, :k].T, b[:, :k] @ b[:, :k].T
        out[f"proj_dist_{side}"] = np.linalg.norm(pa - pb)
        out[f"matched_{side}"] = np.mean([max(abs(a[:, i] @ b[:, j]) for j in range(k)) for i in range(k)])
        bands = {"head": (0, k), "bulk": (k, r - k), "tail": (r - k, r)}
        for band, (lo, hi) in bands.items():
            out[f"rot_{band}_{side}"] = (np.degrees(sla.subspace_angles(a[:, lo:hi], b[:, lo:hi])).mean()
                                         if hi > lo else math.nan)
    dw = wt - wr
    c = ur.T @ dw @ vr
    e = np.sum(dw**2)
    out["energy_in_basis_diag"] = np.sum(np.diag(c) ** 2) / e
    out["energy_in_basis_offdiag"] = (np.sum(c**2) - np.sum(np.diag(c) ** 2)) / e
    out["energy_in_basis_total"] = np.sum(c**2) / e
    ck = c[:k, :k]
    out["energy_topk_diag"] = np.sum(np.diag(ck) ** 2) / e
    out["energy_topk_offdiag"] = (np.sum(ck**2) - np.sum(np.diag(ck) ** 2)) / e
    out["mean_abs_rel_sigma_change"] = np.mean(np.abs(st - sr) / sr)
    return out


def check_row(row: dict, expect: dict, rel: float, angle_abs: float, other_abs: float = 1e-9) -> None:
    for key, want in expect.items():
        got = row[key]
        if isinstance(want, float) and math.isnan(want):
            assert math.isnan(got), key
        elif key.startswith(("angle_", "rot_")):
            assert got == pytest.approx(want, rel=rel, abs=angle_abs), key
        else:
            assert got == pytest.approx(want, rel=rel, abs=other_abs), key


@pytest.mark.parametrize("shape", [(24, 16), (16, 24), (20, 20)])
def test_matrix_metrics_match_float64_numpy(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    wr = rng.standard_normal(shape)
    wt = wr + 0.3 * rng.standard_normal(shape)
    fracs = [0.05, 0.25, 0.5, 1.0]
    per_rank, rows = matrix_metrics(torch.from_numpy(wr), torch.from_numpy(wt), fracs, dtype=torch.float64)
    for frac, row in zip(fracs, rows):
        check_row(row, numpy_metrics(wr, wt, frac), rel=1e-7, angle_abs=1e-7)
    sr, st = np.linalg.svd(wr, compute_uv=False), np.linalg.svd(wt, compute_uv=False)
    np.testing.assert_allclose(per_rank["sigma_ref"].numpy(), sr, rtol=1e-10)
    np.testing.assert_allclose(per_rank["rel_sigma_change"].numpy(), (st - sr) / sr, rtol=1e-8)
    ur, ut = np.linalg.svd(wr)[0], np.linalg.svd(wt)[0]
    r = min(shape)
    np.testing.assert_allclose(per_rank["u_align"].numpy(), np.abs(np.sum(ur[:, :r] * ut[:, :r], 0)), rtol=1e-7)
    # the float32 default agrees to float32 accuracy
    _, rows32 = matrix_metrics(torch.from_numpy(wr).float(), torch.from_numpy(wt).float(), fracs)
    for frac, row in zip(fracs, rows32):
        check_row(row, numpy_metrics(wr, wt, frac), rel=2e-3, angle_abs=2e-3, other_abs=1e-4)


def _old_subspace_columns(a: torch.Tensor, b: torch.Tensor, k: int) -> dict[str, float]:
    """The U (or V) columns for subspace size k by the direct formula: principal_angles on (m, k) slices."""
    r = a.shape[1]

    def band(lo: int, hi: int) -> float:
        return math.degrees(float(principal_angles(a[:, lo:hi], b[:, lo:hi]).mean())) if hi > lo else math.nan

    ang = principal_angles(a[:, :k], b[:, :k])
    return {"angle_mean": math.degrees(float(ang.mean())), "angle_max": math.degrees(float(ang.max())),
            "proj_dist": math.sqrt(2.0 * float((torch.sin(ang) ** 2).sum())),
            "matched": float((a[:, :k].mT @ b[:, :k]).abs().amax(1).mean()),
            "rot_bulk": band(k, r - k), "rot_tail": band(max(r - k, 0), r)}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(40, 24), (24, 40), (30, 30)])
def test_sliced_cross_products_equal_the_direct_formula(shape: tuple[int, int], dtype: torch.dtype) -> None:
    """Angles from slices of one U_R^T U_T per side (and the complement for square bulks) equal
    principal_angles on the (m, k) slices of the singular vectors, for small and large updates."""
    g = torch.Generator().manual_seed(3)
    wr = torch.randn(shape, generator=g, dtype=torch.float64)
    fracs = [0.05, 0.2, 0.34, 0.5, 1.0]
    for scale in (0.3, 1e-4):
        wt = wr + scale * torch.randn(shape, generator=g, dtype=torch.float64)
        _, rows = matrix_metrics(wr.to(dtype), wt.to(dtype), fracs, dtype=dtype)
        u_r, _, vh_r = torch.linalg.svd(wr.to(dtype), full_matrices=False)
        u_t, _, vh_t = torch.linalg.svd(wt.to(dtype), full_matrices=False)
        tol = 1e-9 if dtype == torch.float64 else 2e-4  # degrees; float32: the direct formula's own noise
        for row in rows:
            for side, a, b in (("u", u_r, u_t), ("v", vh_r.mT, vh_t.mT)):
                for key, want in _old_subspace_columns(a, b, row["k"]).items():
                    got = row[key.replace("_", f"_{side}_", 1) if key.startswith("angle") else f"{key}_{side}"]
                    assert got == pytest.approx(want, abs=tol, nan_ok=True), (side, key, row["k"], scale)


def test_principal_angles_resolve_tiny_rotations_in_float32() -> None:
    """arccos of a float32 cosine cannot see 1e-5 rad; the sine branch (as scipy) can."""
    rng = np.random.default_rng(1)
    a = np.linalg.qr(rng.standard_normal((50, 8)))[0]
    rot = sla.expm(1e-5 * (lambda x: x - x.T)(rng.standard_normal((50, 50))))
    b = rot @ a
    want = sla.subspace_angles(a, b)[::-1]  # ascending
    got = principal_angles(torch.from_numpy(a).float(), torch.from_numpy(b).float()).double().numpy()
    assert want.max() > 1e-6
    np.testing.assert_allclose(got, want, atol=3e-7)
    same = principal_angles(torch.from_numpy(a), torch.from_numpy(a))
    assert float(same.max()) < 1e-7


@pytest.mark.parametrize("arch", ARCHS)
def test_spectrum_on_checkpoints_matches_numpy(tmp_path: Path, arch: str) -> None:
    ref, targets = build(tmp_path, arch, [0.2])
    res = spectrum(ref, targets[0].path, tmp_path / "s.csv", ranks=[0.1, 0.5], dtype=torch.float64,
                   progress=False)
    pm, pr = res["per_matrix"], res["per_rank"]
    assert (tmp_path / "s.per_rank.csv").is_file() and (tmp_path / "s.provenance.json").is_file()
    r64, t64 = expected_parts(arch, load64(ref)), expected_parts(arch, load64(targets[0].path))
    conv1d = arch == "gpt2"
    mats = {k: v for k, v in r64.items() if v[2].ndim == 2}
    assert set(zip(pm["tensor"], pm["part"])) == set(mats)
    for (name, part), (layer, module, wr) in mats.items():
        wt = t64[(name, part)][2]
        if conv1d and layer is not None:  # GPT-2 Conv1D stores (in, out): analyse as (out, in)
            wr, wt = wr.T, wt.T
        rows = pm[(pm["tensor"] == name) & (pm["part"] == part)]
        assert rows["module"].iloc[0] == module and (rows["rows"].iloc[0], rows["cols"].iloc[0]) == wr.shape
        for _, row in rows.iterrows():
            check_row(row.to_dict(), numpy_metrics(wr, wt, row["k_frac"]), rel=1e-6, angle_abs=1e-6)
        ranked = pr[(pr["tensor"] == name) & (pr["part"] == part)]
        np.testing.assert_allclose(ranked["sigma_target"], np.linalg.svd(wt, compute_uv=False), rtol=1e-9)
        assert list(ranked["rank"]) == list(range(min(wr.shape)))


def test_spectrum_select_cli_and_bad_input(tmp_path: Path, capsys) -> None:
    ref, targets = build(tmp_path, "phi3", [0.1])
    out = tmp_path / "s.csv"
    assert main(["spectrum", str(ref), str(targets[0].path), "--out", str(out), "--ranks", "0.25",
                 "--select", "q,gate@1"]) == 0
    pm = pd.read_csv(out)
    assert set(zip(pm["module"], pm["layer"])) == {("q", 1), ("gate", 1)} and (pm["k_frac"] == 0.25).all()
    assert pm["angle_u_mean"].gt(0).all()
    for args in (["--ranks", "0"], ["--select", "k@7"], ["--device", "cuda:0"] if not torch.cuda.is_available()
                 else ["--ranks", "2"]):
        capsys.readouterr()
        assert main(["spectrum", str(ref), str(targets[0].path), "--out", str(out), *args]) == 2
        assert capsys.readouterr().err.startswith("error: ")
    other, _ = build(tmp_path / "o", "llama", [])
    capsys.readouterr()
    assert main(["spectrum", str(ref), str(other), "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("error: tensor model.layers.0.mlp.gate_up_proj.weight ")


def test_nonfinite_matrix_is_flagged_not_fatal(tmp_path: Path, capsys) -> None:
    from safetensors.torch import load_file, save_file

    ref, targets = build(tmp_path, "llama", [0.1])
    f = targets[0].path / "model.safetensors"
    sd = load_file(f)
    sd["model.layers.0.mlp.up_proj.weight"][3, 3] = torch.nan
    save_file(sd, str(f), metadata={"format": "pt"})
    pm = spectrum(ref, targets[0].path, tmp_path / "s.csv", ranks=[0.5], progress=False)["per_matrix"]
    warned = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert warned == ["warning: model.layers.0.mlp.up_proj.weight has non-finite entries (NaN or inf: target 1); "
                      "no spectrum for it (its row has nonfinite=True)"]
    bad = pm[pm["tensor"] == "model.layers.0.mlp.up_proj.weight"]
    assert bad["nonfinite"].all() and bad["angle_u_mean"].isna().all()
    assert (~pm[pm["tensor"] != "model.layers.0.mlp.up_proj.weight"]["nonfinite"]).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_spectrum_matches_cpu(tmp_path: Path) -> None:
    ref, targets = build(tmp_path, "llama", [0.2])
    cpu = spectrum(ref, targets[0].path, tmp_path / "c.csv", device="cpu", progress=False)["per_matrix"]
    gpu = spectrum(ref, targets[0].path, tmp_path / "g.csv", device="cuda", progress=False)["per_matrix"]
    num = cpu.select_dtypes("number").columns
    np.testing.assert_allclose(gpu[num].to_numpy(float, na_value=np.nan), cpu[num].to_numpy(float, na_value=np.nan),
                               rtol=1e-3, atol=1e-3)


def test_null_angles_match_numpy() -> None:
    """The null model: index-matched angles of R against R + random updates of ||T - R||_F, in float64 numpy."""
    rng = np.random.default_rng(0)
    wr = rng.standard_normal((24, 16))
    wt = wr + 0.05 * rng.standard_normal((24, 16))
    u, v = null_angles(torch.from_numpy(wr), torch.from_numpy(wt), "m", 3, torch.float64)
    ur, _, vhr = np.linalg.svd(wr, full_matrices=False)
    norm = np.linalg.norm(wt - wr)
    want_u, want_v = [], []
    for d in range(3):
        g = null_update((24, 16), norm, null_seed("m", d)).numpy()
        assert np.isclose(np.linalg.norm(g), norm)
        un, _, vhn = np.linalg.svd(wr + g, full_matrices=False)
        want_u.append(np.degrees(np.arccos(np.minimum(np.abs((ur * un).sum(0)), 1))))
        want_v.append(np.degrees(np.arccos(np.minimum(np.abs((vhr * vhn).sum(1)), 1))))
    np.testing.assert_allclose(u.numpy(), np.mean(want_u, 0), atol=1e-6)
    np.testing.assert_allclose(v.numpy(), np.mean(want_v, 0), atol=1e-6)
    assert float(u.max()) > 1.0  # the draws do turn vectors
    ranked, _ = matrix_metrics(torch.from_numpy(wr), torch.from_numpy(wt), [0.5], torch.float64, null=("m", 3))
    torch.testing.assert_close(ranked["u_angle_null"], u)  # from matrix_metrics, on its own SVD of R
    torch.testing.assert_close(ranked["v_angle_null"], v)
    same = null_update((4, 3), 1.0, null_seed("m", 0))
    assert torch.equal(same, null_update((4, 3), 1.0, null_seed("m", 0)))
    assert not torch.equal(same, null_update((4, 3), 1.0, null_seed("m", 1)))
    assert not torch.equal(same, null_update((4, 3), 1.0, null_seed("n", 0)))


def _per_rank(pairs: list[tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """The per-rank table `spectrum` writes, for (R, T) pairs, with the null model's columns."""
    frames = []
    for i, (wr, wt) in enumerate(pairs):
        a, b = torch.from_numpy(wr), torch.from_numpy(wt)
        ranked, _ = matrix_metrics(a, b, [0.5], torch.float64, null=(f"m{i}", 3))
        nu, nv = ranked["u_angle_null"], ranked["v_angle_null"]
        r = len(nu)
        frames.append(pd.DataFrame({"tensor": f"m{i}", "part": "", "rank": range(r), "rank_frac": np.arange(r) / r,
                                    "u_align": ranked["u_align"].numpy(), "v_align": ranked["v_align"].numpy(),
                                    "rel_sigma_change": ranked["rel_sigma_change"].numpy(),
                                    "u_angle_null": nu.numpy(), "v_angle_null": nv.numpy()}))
    return pd.read_csv(io.StringIO(pd.concat(frames, ignore_index=True).to_csv(index=False)))  # as the report reads it


def _rotate_edges(rng: np.random.Generator, n: int = 30, theta: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """R with distinct singular values, and T that turns only its top-10% and bottom-10% singular vectors."""
    q1, _ = np.linalg.qr(rng.standard_normal((n, n)))
    q2, _ = np.linalg.qr(rng.standard_normal((n, n)))
    s = np.geomspace(10, 0.1, n)
    c, si = np.cos(theta), np.sin(theta)
    rot = np.eye(n)
    for i, j in ((0, 1), (n - 2, n - 1)):  # plane rotations inside the top and the bottom band
        rot[np.ix_([i, j], [i, j])] = [[c, -si], [si, c]]
    return q1 @ np.diag(s) @ q2.T, (q1 @ rot) @ np.diag(s) @ q2.T


def test_excess_over_the_null_tells_edge_rotation_from_a_random_update() -> None:
    from tunescope.report.tables import spectrum_excess

    rng = np.random.default_rng(1)
    edges = spectrum_excess(_per_rank([_rotate_edges(rng) for _ in range(8)]))
    assert edges["n_matrices"] == 8 and edges["ci_low"] > 0 and edges["edge_excess_deg"] > edges["bulk_excess_deg"]
    noise = []
    for _ in range(8):
        wr = rng.standard_normal((30, 30))
        noise.append((wr, wr + 0.02 * rng.standard_normal((30, 30))))
    rand = spectrum_excess(_per_rank(noise))  # an update like the null model's has no excess anywhere
    assert rand["ci_low"] < 0 < rand["ci_high"] and rand["raw_edge_minus_bulk"] < 0
    assert spectrum_excess(_per_rank(noise).drop(columns=["u_angle_null", "v_angle_null"])) is None


def test_estimate_is_printed_before_the_work(tmp_path: Path, capsys) -> None:
    """One stderr line "about N s|min for M matrices on T threads", M the matrices to analyse."""
    import re

    from tunescope.analyse.spectrum import estimate, svd_work

    ref, targets = build(tmp_path, "llama", [0.1])
    res = spectrum(ref, targets[0].path, tmp_path / "s.csv", ranks=[0.5], threads=1, null_draws=1)
    n = len(res["per_matrix"])  # one row per matrix with one k
    line = next(x for x in capsys.readouterr().err.splitlines() if x.startswith("about"))
    assert re.fullmatch(rf"about \d+ (s|min) for {n} matrices on 1 threads", line), line
    assert spectrum(ref, targets[0].path, tmp_path / "s.csv", ranks=[0.5], progress=False) and not capsys.readouterr().err
    # 224 matrices of an 8B-shaped model at a rate that makes one 4096 x 4096 SVD take 10 s
    rate = 10 / svd_work(4096, 4096)
    assert estimate([(4096, 4096)] * 224, 3, rate, "2 threads") == "about 213 min for 224 matrices on 2 threads"
