"""`tunescope diff` and `tunescope spectrum`: weight analysis from the command line.

    tunescope diff BASE CKPT_OR_RUN_DIR... --out diff.csv [--tolerance 1e-5] [--parquet]
    tunescope spectrum REF TARGET --out spectrum.csv [--ranks 0.01,0.05,0.1,0.2,0.5] [--select q,k@0-7]
                                  [--null-draws 3]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tunescope.errors import UserError


def _fractions(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of fractions like 0.1,0.2") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("diff", help="relative weight change per tensor, layer and module, per checkpoint",
                       description="Stream BASE and each checkpoint one tensor at a time and write "
                                   "||W_ckpt - W_base||_F / ||W_base||_F per tensor (fused tensors split).")
    p.add_argument("base", type=Path, help="base model directory")
    p.add_argument("models", nargs="+", help="checkpoint directories or run directories (all their checkpoints)")
    p.add_argument("--out", type=Path, required=True, help="CSV to write; summaries go beside it")
    p.add_argument("--tolerance", type=float, default=None,
                   help="absolute per-entry tolerance for frac_changed (default 1e-5)")
    p.add_argument("--parquet", action="store_true", help="also write the long table as Parquet")
    p.set_defaults(func=_diff)

    s = sub.add_parser("spectrum", help="singular values vs singular directions of TARGET against REF",
                       description="SVD every 2-D matrix of REF and TARGET; write singular-value changes by "
                                   "rank and principal angles / projection distance / energy shares per matrix.")
    s.add_argument("ref", type=Path, help="reference model directory (R)")
    s.add_argument("target", type=Path, help="target model directory (T)")
    s.add_argument("--out", type=Path, required=True, help="CSV to write (per matrix); per-rank table beside it")
    s.add_argument("--ranks", type=_fractions, default=None,
                   help="subspace sizes k as fractions of the rank (default 0.01,0.05,0.1,0.2,0.5)")
    s.add_argument("--select", action="append", default=None,
                   help='only these matrices, e.g. "q,k@0-7" (repeatable)')
    s.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    s.add_argument("--float64", action="store_true", help="SVD in float64 (default float32, as the paper)")
    s.add_argument("--null-draws", type=int, default=None,
                   help="random updates of the same size per matrix, the null model of the angles (default 3, 0: none)")
    s.add_argument("--threads", type=int, default=None,
                   help="CPU threads for the SVDs (default: the idle cores; more than idle is much slower)")
    s.set_defaults(func=_spectrum)


def _out_file(path: Path) -> Path:
    if path.is_dir():
        raise UserError(f"--out {path} is a directory; give a file name such as {path / 'diff.csv'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _diff(args: argparse.Namespace) -> int:
    from tunescope.analyse.diff import DEFAULT_TOLERANCE, diff
    from tunescope.checkpoints import resolve_models

    models = resolve_models(args.models)
    tol = DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance
    table = diff(args.base, models, _out_file(args.out), tolerance=tol, parquet=args.parquet)
    print(f"wrote {args.out} ({len(table)} rows, {len(models)} checkpoint(s))")
    return 0


def _spectrum(args: argparse.Namespace) -> int:
    import torch

    from tunescope.analyse.spectrum import DEFAULT_RANKS, NULL_DRAWS, spectrum
    from tunescope.checkpoints import resolve_models

    ref, target = resolve_models([args.ref]), resolve_models([args.target])
    if len(ref) != 1 or len(target) != 1:
        raise UserError("spectrum compares two model directories; pass one checkpoint each, not a run directory")
    res = spectrum(ref[0].path, target[0].path, _out_file(args.out), ranks=args.ranks or DEFAULT_RANKS,
                   select=args.select, device=args.device,
                   dtype=torch.float64 if args.float64 else torch.float32, threads=args.threads,
                   null_draws=NULL_DRAWS if args.null_draws is None else args.null_draws)
    print(f"wrote {args.out} ({len(res['per_matrix'])} rows)")
    return 0
