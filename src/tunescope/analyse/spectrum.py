"""Spectra: did fine-tuning change singular *values* or singular *directions*?

For every 2-D weight matrix (fused tensors split, GPT-2 Conv1D transposed to (out, in); see
`layout`), with reference R and target T of shape (m, n), r = min(m, n), and the thin SVDs
R = U_R diag(s_R) V_R^T, T = U_T diag(s_T) V_T^T, ΔW = T - R:

Per rank i (table `per_rank`):
    rel_sigma_change_i = (s_T,i - s_R,i) / s_R,i
    u_align_i = |u_R,i^T u_T,i|,  v_align_i = |v_R,i^T v_T,i|      (index-matched, sign-free)

Per matrix and subspace size k = max(1, round(k_frac * r)) (table `per_matrix`):
    principal angles θ_1..θ_k between span(U_R[:, :k]) and span(U_T[:, :k]) (same for V):
        cos θ = svdvals(U_R,k^T U_T,k); small angles from sin θ = svdvals(U_T,k - U_R,k U_R,k^T U_T,k),
        as scipy.linalg.subspace_angles does, so that float32 resolves tiny rotations;
        reported as mean and max, in degrees (angle_u_mean, angle_u_max, angle_v_...)
    proj_dist_u = ||U_R,k U_R,k^T - U_T,k U_T,k^T||_F = sqrt(2 Σ sin² θ)
    matched_u   = mean_i max_j |u_R,i^T u_T,j|, i, j < k       (1 = every top vector kept)
    rotation split: mean principal angle of the head (ranks [0, k)), bulk ([k, r-k)) and tail
        ([r-k, r)) subspaces, R against T (rot_head_u, rot_bulk_u, rot_tail_u, and for V;
        the bulk is NaN when 2k >= r)
    energy of the update inside R's singular basis, C = U_R^T ΔW V_R (r x r):
        energy_in_basis_diag    = Σ_i C_ii² / ||ΔW||_F²      (pure singular-value change)
        energy_in_basis_offdiag = Σ_{i≠j} C_ij² / ||ΔW||_F²  (mixing of directions)
        energy_in_basis_total   = ||C||_F² / ||ΔW||_F²       (< 1 only for non-square matrices)
        energy_topk_diag / energy_topk_offdiag: the same restricted to C[:k, :k]
    mean_abs_rel_sigma_change = mean_i |Δs_i| / s_R,i (the same on every k row)

Null model (per-rank columns u_angle_null, v_angle_null): how far an index-matched singular vector
turns depends on the gaps around its singular value, so any update turns the crowded bulk of the
spectrum more than its well-separated edges. For each matrix, `null_draws` random updates
G * ||ΔW||_F / ||G||_F (G i.i.d. standard normal, seeded by the matrix name) are added to R and the
same index-matched angle arccos|u_R,i^T u_N,i| is taken, in degrees, averaged over the draws. A
claim that fine-tuning turns the edges most is a claim about the excess over this baseline.

These are the diagnostics of "RL is neither a panacea nor a mirage" (Jin et al., 2025) as their
code computes them (SVD in float32, principal angles from U_R,k^T U_T,k, projection distance,
matched alignment, diagonal/off-diagonal energy). Deviations: principal angles also use the sine
formula for small angles (the arccos of a float32 cosine cannot resolve angles below ~0.03°), the
projection distance is computed from the angles instead of forming m x m projectors, and the
head/bulk/tail split is made explicit as principal angles of rank bands. The SVD runs on CUDA when
available; float32 by default, float64 on request.

Cost: after the two SVDs, every band and k is a slice of one cross-product U_Rᵀ U_T per side (and,
for the longer side of a non-square matrix, the R factor of the part of U_T outside span U_R), see
`_Cross`; the square side's bulk comes from its complement, the head and tail (CS decomposition).
"""

from __future__ import annotations

import math
import os
import sys
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from tunescope.analyse.diff import check_same_layout
from tunescope.analyse.layout import Part, parts, read_config
from tunescope.errors import UserError
from tunescope.naming import Selector, depth_of, parse_selector
from tunescope.provenance import provenance, write_json
from tunescope.threads import cpu_threads
from tunescope.weights import WeightFiles

DEFAULT_RANKS = (0.01, 0.05, 0.1, 0.2, 0.5)
NULL_DRAWS = 3  # random updates of the same size per matrix (the null model of the angles)
NULL_SEED = 20250  # with the matrix name, the seed of its random updates
REST_IN_SVDS = 0.7  # a matrix's metrics besides its SVDs, in SVDs of it (measured: bench_analyse, 1 thread)


# --------------------------------------------------------------------------- metrics on one matrix

def principal_angles(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Principal angles (radians, ascending) between the column spans of orthonormal a, b: (m, k)."""
    m = a.mT @ b  # (k, k)
    return _angles(m, _sines(b - a @ m, m.shape[1]))


def _angles(cos_block: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Principal angles (radians, ascending) of a k-dimensional pair from cos θ = svdvals(cos_block), (k, k),
    and the sines `sin` (ascending, k): the sine where θ <= 45° (float32 resolves tiny angles), the cosine
    above. The cosine is skipped when every sine is below sin 45° (then it would not be used)."""
    if sin.numel() == 0 or float(sin[-1]) ** 2 < 0.5 - 1e-3:
        return torch.arcsin(sin)
    cos = torch.linalg.svdvals(cos_block).clamp(max=1.0)  # descending -> angles ascending
    return torch.where(cos**2 >= 0.5, torch.arcsin(sin), torch.arccos(cos))


def _sines(block: torch.Tensor, k: int) -> torch.Tensor:
    """The k singular values of `block` (any, k), ascending, clamped to 1 (zeros where it has fewer rows)."""
    sin = torch.linalg.svdvals(block).clamp(max=1.0) if block.numel() else block.new_zeros(0)
    return torch.cat([sin, sin.new_zeros(k - sin.shape[0])]).flip(0)


class _Cross:
    """One side (U or V) of a matrix pair, as the cross-products every band and k is sliced from.

    With A = U_R, B = U_T (m, r): M = AᵀB (r, r) and F (f, r), a factor of E = B - A M (the part of B
    outside span A; FᵀF = EᵀE). In the orthonormal basis [A, orth(E)], B has coordinates [M; F], so for
    a band S of indices the angles between span A_S and span B_S come from small slices:
    cos θ = svdvals(M_SS), sin θ = svdvals([M_{S^c,S}; F_S]), the same as principal_angles(A_S, B_S).
    A square side (m = r) has E = 0 and M orthogonal; then the nonzero angles of S equal those of its
    complement (CS decomposition), which makes the bulk band cost that of the head and tail.
    In float32 the sines are the square roots of the eigenvalues of [M_{S^c,S}; F_S]'s Gram matrix,
    formed and solved in float64 (half the cost of a float32 svdvals, and as accurate: float64 leaves
    an error of ~1e-8 of the largest sine); in float64 they are svdvals as above.
    """

    def __init__(self, a: torch.Tensor, b: torch.Tensor):
        self.m = a.mT @ b  # (r, r)
        self.square = a.shape[0] == a.shape[1]
        self.f = None if self.square else torch.linalg.qr(b - a @ self.m, mode="r")[1]  # (r, r)
        self.gram = self.m.dtype != torch.float64
        if self.gram:
            self.m64 = self.m.double()
            self.ff = None if self.f is None else (lambda f: f.mT @ f)(self.f.double())  # (r, r) = EᵀE

    def angles(self, idx: torch.Tensor) -> torch.Tensor:
        """Principal angles (radians, ascending) between span A[:, idx] and span B[:, idx]."""
        rest, k = _others(idx, self.m.shape[0]), idx.shape[0]
        if not self.gram:
            rows = [self.m[rest[:, None], idx]] + ([] if self.f is None else [self.f[:, idx]])
            sin = _sines(torch.cat(rows), k)
        else:
            x = self.m64[rest[:, None], idx]  # (r - k, k)
            g = x.mT @ x + (0.0 if self.ff is None else self.ff[idx[:, None], idx])
            sin = torch.linalg.eigvalsh(g).clamp(0.0, 1.0).sqrt().to(self.m.dtype)  # ascending
        return _angles(self.m[idx[:, None], idx], sin)

    def band_mean(self, lo: int, hi: int) -> float:
        """Mean principal angle (degrees) of the band [lo, hi), NaN when empty."""
        r = self.m.shape[0]
        if hi <= lo:
            return math.nan
        band = torch.arange(lo, hi, device=self.m.device)
        if self.square and 2 * (hi - lo) > r:  # the complement is smaller: same nonzero angles
            return math.degrees(float(self.angles(_others(band, r)).sum()) / (hi - lo))
        return math.degrees(float(self.angles(band).mean()))


def _others(idx: torch.Tensor, r: int) -> torch.Tensor:
    """The indices of range(r) not in idx, ascending."""
    keep = torch.ones(r, dtype=torch.bool, device=idx.device)
    keep[idx] = False
    return keep.nonzero().squeeze(1)


def matrix_metrics(w_ref: torch.Tensor, w_tgt: torch.Tensor, k_fracs: Sequence[float],
                   dtype: torch.dtype = torch.float32,
                   null: tuple[str, int] | None = None) -> tuple[dict[str, torch.Tensor], list[dict[str, float]]]:
    """Per-rank arrays and one dict of metrics per k_frac for a pair of (m, n) matrices; with
    `null` = (matrix name, draws), also the null model's angles (`null_angles`, on R's SVD from here)."""
    r_, t_ = w_ref.to(dtype), w_tgt.to(dtype)
    u_r, s_r, vh_r = torch.linalg.svd(r_, full_matrices=False)  # (m, r), (r,), (r, n)
    u_t, s_t, vh_t = torch.linalg.svd(t_, full_matrices=False)
    v_r, v_t = vh_r.mT, vh_t.mT  # (n, r)
    r = s_r.shape[0]
    sides = {"u": _Cross(u_r, u_t), "v": _Cross(v_r, v_t)}
    rel = (s_t - s_r) / s_r  # (r,)
    per_rank = {"sigma_ref": s_r, "sigma_target": s_t, "rel_sigma_change": rel,
                "u_align": sides["u"].m.diagonal().abs(), "v_align": sides["v"].m.diagonal().abs()}
    if null is not None:
        per_rank["u_angle_null"], per_rank["v_angle_null"] = null_angles(w_ref, w_tgt, *null, dtype, basis=(u_r, vh_r))

    dw = t_ - r_  # (m, n)
    dw_sq = float((dw * dw).sum())
    c = u_r.mT @ dw @ v_r  # (r, r) update in R's singular basis
    c_sq = c * c
    diag_sq, tot_sq = float(c_sq.diagonal().sum()), float(c_sq.sum())
    share = (lambda x: x / dw_sq) if dw_sq > 0 else (lambda x: math.nan)
    mean_abs_rel = float(rel.abs().nanmean())

    rows = []
    for frac in k_fracs:
        k = min(r, max(1, round(frac * r)))
        row: dict[str, float] = {"k_frac": frac, "k": k}
        for side, cross in sides.items():
            row |= _subspace_row(side, cross, k)
        ck = c_sq[:k, :k]
        ck_diag = float(ck.diagonal().sum())
        row |= {"energy_in_basis_diag": share(diag_sq), "energy_in_basis_offdiag": share(tot_sq - diag_sq),
                "energy_in_basis_total": share(tot_sq), "energy_topk_diag": share(ck_diag),
                "energy_topk_offdiag": share(float(ck.sum()) - ck_diag),
                "mean_abs_rel_sigma_change": mean_abs_rel}
        rows.append(row)
    return per_rank, rows


def _subspace_row(side: str, cross: _Cross, k: int) -> dict[str, float]:
    """The angle, projection-distance, matching and rotation-split columns of one side for subspace size k."""
    r = cross.m.shape[0]
    head = torch.arange(k, device=cross.m.device)
    ang = cross.angles(head)
    mean = math.degrees(float(ang.mean()))
    return {f"angle_{side}_mean": mean, f"angle_{side}_max": math.degrees(float(ang.max())),
            f"proj_dist_{side}": math.sqrt(2.0 * float((torch.sin(ang) ** 2).sum())),
            f"matched_{side}": float(cross.m[:k, :k].abs().amax(1).mean()),
            f"rot_head_{side}": mean, f"rot_bulk_{side}": cross.band_mean(k, r - k),
            f"rot_tail_{side}": cross.band_mean(max(r - k, 0), r)}


def null_update(shape: tuple[int, int], norm: float, seed: int) -> torch.Tensor:
    """A random (m, n) update of Frobenius norm `norm`: i.i.d. normal entries, rescaled (float64, CPU)."""
    g = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return g * (norm / float(torch.linalg.matrix_norm(g))) if norm > 0 else torch.zeros(shape, dtype=torch.float64)


def null_seed(name: str, draw: int) -> int:
    """The seed of draw `draw` for the matrix called `name` (stable across selections and runs)."""
    return NULL_SEED + zlib.crc32(name.encode()) + 7919 * draw


def null_angles(w_ref: torch.Tensor, w_tgt: torch.Tensor, name: str, draws: int,
                dtype: torch.dtype = torch.float32,
                basis: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Index-matched U and V angles (degrees, (r,), mean over `draws`) of R against R + a random update
    of ||T - R||_F (`null_update`). `basis`: R's (U, V^T) in `dtype` when already computed."""
    r_ = w_ref.to(dtype)
    if basis is None:
        u_r, _, vh_r = torch.linalg.svd(r_, full_matrices=False)
    else:
        u_r, vh_r = basis
    norm = float(torch.linalg.matrix_norm(w_tgt.to(torch.float64) - w_ref.to(torch.float64)))
    u_sum = torch.zeros(u_r.shape[1], dtype=torch.float64)
    v_sum = torch.zeros_like(u_sum)
    for d in range(draws):
        dw = null_update(tuple(r_.shape), norm, null_seed(name, d)).to(device=r_.device, dtype=dtype)
        u_n, _, vh_n = torch.linalg.svd(r_ + dw, full_matrices=False)
        u_sum += torch.rad2deg(torch.arccos((u_r * u_n).sum(0).abs().clamp(max=1.0))).double().cpu()
        v_sum += torch.rad2deg(torch.arccos((vh_r * vh_n).sum(1).abs().clamp(max=1.0))).double().cpu()
    return u_sum / max(draws, 1), v_sum / max(draws, 1)


# --------------------------------------------------------------------------- over a whole model

def _device(device: str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device} asked for but CUDA is not available; use --device cpu")
    return torch.device(device)


def _selected(p: Part, sels: list[Selector]) -> bool:
    if not sels:
        return True
    for s in sels:
        if s.modules is not None and p.module not in s.modules:
            continue
        if s.layers is not None and (p.layer is None or not s.layers[0] <= p.layer <= s.layers[1]):
            continue
        return True
    return False


def svd_work(m: int, n: int) -> float:
    """The flop count of a thin SVD of an (m, n) matrix, up to a constant: LAPACK's gesdd reduces the long
    side with a QR (~ max·r²) and then decomposes r x r (~ 4 r³, measured on MKL), r = min(m, n)."""
    r = min(m, n)
    return r * r * (max(m, n) + 4.0 * r)


def svd_rate(dev: torch.device, dtype: torch.dtype, size: int = 384) -> float:
    """Seconds per unit of `svd_work` here (device, dtype, current threads), timed on one size x size SVD."""
    x = torch.randn(size, size, generator=torch.Generator().manual_seed(0)).to(dev, dtype)
    best = math.inf
    for _ in range(2):  # the first call also pays for workspace and thread start-up
        t = time.perf_counter()
        torch.linalg.svd(x, full_matrices=False)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        best = min(best, time.perf_counter() - t)
    return best / svd_work(size, size)


def estimate(shapes: list[tuple[int, int]], null_draws: int, rate: float, where: str) -> str:
    """One line such as "about 40 min for 224 matrices on 2 threads": each matrix costs 2 + null_draws
    SVDs plus REST_IN_SVDS, at `rate` seconds per unit of `svd_work`."""
    return estimate_line(shapes, 2 + null_draws + REST_IN_SVDS, rate, where)


def estimate_line(shapes: list[tuple[int, int]], svds: float, rate: float, where: str) -> str:
    """"about T for N matrices on WHERE" for work of `svds` SVDs per matrix at `rate` (see `svd_rate`);
    also used by `restore`."""
    sec = rate * svds * sum(svd_work(m, n) for m, n in shapes)
    took = f"{sec / 60:.0f} min" if sec >= 90 else f"{max(sec, 1):.0f} s"
    return f"about {took} for {len(shapes)} matrices on {where}"


def _run(todo: list[Part], ref_w: WeightFiles, tgt_w: WeightFiles, dev: torch.device, ranks: list[float],
         dtype: torch.dtype, progress: bool, null_draws: int) -> tuple[list[dict], list[pd.DataFrame]]:
    """Metrics for every selected matrix: (per-matrix rows, per-rank frames)."""
    mats: list[dict] = []
    per_rank: list[pd.DataFrame] = []
    loaded: tuple[str, torch.Tensor, torch.Tensor] | None = None
    for p in tqdm(todo, desc="spectrum", unit="matrix", disable=not progress):
        if loaded is None or loaded[0] != p.tensor:  # fused tensors: read once for all parts
            loaded = (p.tensor, ref_w.get(p.tensor).to(dev), tgt_w.get(p.tensor).to(dev))
        a, b = p.matrix(loaded[1]), p.matrix(loaded[2])  # (out, in)
        if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
            bad = [f"{side} {int((~torch.isfinite(w)).sum())}" for side, w in (("reference", a), ("target", b))
                   if not bool(torch.isfinite(w).all())]
            print(f"warning: {p.tensor}{f' [{p.part}]' if p.part else ''} has non-finite entries (NaN or inf: "
                  f"{', '.join(bad)}); no spectrum for it (its row has nonfinite=True)", file=sys.stderr)
            mats.append({"tensor": p.tensor, "part": p.part, "layer": p.layer, "module": p.module,
                         "rows": a.shape[0], "cols": a.shape[1], "nonfinite": True})
            continue
        ranked, rows = matrix_metrics(a, b, ranks, dtype, null=(f"{p.tensor}:{p.part}", null_draws) if null_draws else None)
        ids = {"tensor": p.tensor, "part": p.part, "layer": p.layer, "module": p.module}
        r = ranked["sigma_ref"].shape[0]
        pr = pd.DataFrame({k: v.double().cpu().numpy() for k, v in ranked.items()})
        pr.insert(0, "rank_frac", (torch.arange(r, dtype=torch.float64) / r).numpy())
        pr.insert(0, "rank", range(r))
        per_rank.append(pr.assign(**ids)[[*ids, *pr.columns]])
        mats += [ids | {"rows": a.shape[0], "cols": a.shape[1], "nonfinite": False} | row for row in rows]
    return mats, per_rank


def spectrum(ref: Path, target: Path, out: Path, ranks: Sequence[float] = DEFAULT_RANKS,
             select: Sequence[str] | None = None, device: str | None = None,
             dtype: torch.dtype = torch.float32, progress: bool = True,
             threads: int | None = None, null_draws: int = NULL_DRAWS) -> dict[str, pd.DataFrame]:
    """Spectral comparison of every 2-D matrix of `target` against `ref`.

    Writes `out` (CSV, per matrix and k), `<stem>.per_rank.csv` and `<stem>.provenance.json`;
    returns {"per_matrix": ..., "per_rank": ...}. `select` narrows the matrices with selectors
    such as "q,k@0-7" (module types of the split parts). On CPU, `threads` (default: the idle
    cores, see `cpu_threads`) is set for the duration of the call. `null_draws` random updates of
    the same size per matrix give the null model of the angles (0: none; each costs one more SVD).
    """
    ranks = list(ranks)
    if null_draws < 0:
        raise UserError(f"--null-draws must be 0 or more, got {null_draws}")
    if not ranks or any(not 0 < f <= 1 for f in ranks):
        raise UserError(f"--ranks must be fractions in (0, 1], got {ranks}")
    dev = _device(device)
    ref_w, tgt_w = WeightFiles(ref), WeightFiles(target)
    check_same_layout(ref_w, tgt_w)
    config = read_config(ref)
    depth = depth_of(ref_w.names())
    sels = [parse_selector(s) for s in (select or [])]
    sels = [s.resolve(depth) if s.range is not None and depth else s for s in sels]

    todo = [p for n in ref_w.names() if len(ref_w.shape(n)) == 2
            for p in parts(n, ref_w.shape(n), config) if p.param == "weight" and _selected(p, sels)]
    if not todo:
        raise UserError("no 2-D weight matrix matches the selection; check --select")
    threads = threads or (cpu_threads() if dev.type == "cpu" else None)
    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        if progress:
            where = f"{torch.get_num_threads()} threads" if dev.type == "cpu" else str(dev)
            shapes = [p.matrix(torch.empty(ref_w.shape(p.tensor), device="meta")).shape for p in todo]
            print(estimate(shapes, null_draws, svd_rate(dev, dtype), where), file=sys.stderr, flush=True)
        mats, per_rank = _run(todo, ref_w, tgt_w, dev, ranks, dtype, progress, null_draws)
    finally:
        torch.set_num_threads(saved)

    per_matrix = pd.DataFrame(mats)
    per_rank_df = pd.concat(per_rank, ignore_index=True) if per_rank else pd.DataFrame()
    for df in (per_matrix, per_rank_df):
        if "layer" in df:
            df["layer"] = df["layer"].astype("Int64")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for df, path in ((per_matrix, out), (per_rank_df, out.with_name(out.stem + ".per_rank.csv"))):
        tmp = path.with_name(path.name + ".tmp")
        df.to_csv(tmp, index=False)
        os.replace(tmp, path)
    write_json(out.with_name(out.stem + ".provenance.json"), provenance(
        config={"ref": str(ref), "target": str(target), "ranks": ranks, "select": list(select or []),
                "device": str(dev), "svd_dtype": str(dtype).removeprefix("torch."), "threads": threads,
                "null_draws": null_draws, "null_seed": NULL_SEED},
        seed=None, stage="analyse.spectrum", n_matrices=len(todo)))
    return {"per_matrix": per_matrix, "per_rank": per_rank_df}
