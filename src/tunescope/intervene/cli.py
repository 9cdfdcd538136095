"""`tunescope restore REF TARGET --out DIR --method METHOD`: weight surgery into a new model directory."""

from __future__ import annotations

import argparse

METHODS_HELP = """methods:
  direction    REF's top-k singular directions (U, V) with TARGET's singular values (--k, --tail)
  full         REF's top-k singular triplets (U, sigma, V) (--k, --tail)
  values       TARGET's directions with REF's singular values
  reset        every weight of a layer range taken from REF (--layers, required)
  interpolate  (1 - alpha) * TARGET + alpha * REF (--alpha)

examples:
  tunescope restore runs/sft/checkpoints/step-000140 runs/sft/checkpoints/step-001600 \\
      --out runs/restored-uv20 --method direction --k 0.2
  tunescope restore REF TARGET --out runs/reset25 --method reset --layers 0-25%
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from tunescope.intervene import METHODS

    p = subparsers.add_parser(
        "restore", help="edit TARGET's weights towards REF (singular directions, layer reset, ...)",
        description="Apply a weight edit to TARGET using REF, tensor by tensor, and write a complete "
                    "model directory (weights, config, tokenizer, tunescope.json).",
        epilog=METHODS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ref", help="reference model directory (e.g. the checkpoint with the best OOD score)")
    p.add_argument("target", help="model directory to edit (e.g. a later, over-fitted checkpoint)")
    p.add_argument("--out", required=True, help="new model directory (must not exist or be empty)")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--k", type=float, default=0.2, help="fraction of the rank restored (direction, full)")
    p.add_argument("--tail", action="store_true", help="also restore the bottom k directions (direction, full)")
    p.add_argument("--layers", help="layer range: indices '0-3' or fractions of depth '0-25%%'")
    p.add_argument("--alpha", type=float, default=0.5, help="weight of REF (interpolate): 0 = TARGET, 1 = REF")
    p.add_argument("--select", action="append", metavar="SELECTOR",
                   help="tensors to edit, e.g. 'q,k@0-3' (repeatable); default every block weight")
    p.add_argument("--include-embeddings", action="store_true",
                   help="also edit tensors outside the blocks: embeddings, LM head, final norm")
    p.add_argument("--float64", action="store_true", help="SVD and arithmetic in float64 (default float32)")
    p.add_argument("--device", default="cpu", help="where the SVDs run: cpu (default) or cuda")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads for the SVDs (default: torch's); 1 is often fastest on shared cores")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from tunescope.checkpoints import read_sidecar
    from tunescope.errors import UserError
    from tunescope.intervene.restore import restore

    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads {args.threads}: give a positive number of threads")
        import torch

        torch.set_num_threads(args.threads)

    out = restore(args.ref, args.target, args.out, args.method, k=args.k, tail=args.tail, layers=args.layers,
                  alpha=args.alpha, select=args.select, include_embeddings=args.include_embeddings,
                  precision="float64" if args.float64 else "float32", device=args.device)
    info = read_sidecar(out)["intervention"]
    print(f"wrote {out} ({info['method']}: {info['edited_tensors']} tensors edited)")
    return 0
