"""`tunescope organism build`: build (or fetch from the cache) the model organism."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    from tunescope.organism.build import PRESETS  # light: no torch

    parser = subparsers.add_parser("organism", help="build the tiny Llama model organism")
    sub = parser.add_subparsers(dest="organism_command", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="the organism: the shipped one, or pretrained from scratch (cached by configuration)",
                       description="Return the organism of a preset: the one shipped in the package when it matches "
                                   "this code's corpus and recipe, else train a tokenizer and pretrain a tiny Llama on "
                                   "the synthetic world (cached). The result is a Hugging Face model directory with a "
                                   "tunescope.json sidecar.")
    b.add_argument("--preset", default="default",
                   help=f"model size and training recipe, one of: {', '.join(PRESETS)} (default: default)")
    b.add_argument("--seed", type=int, default=0, help="seed of the corpus and the initialisation (default: 0)")
    b.add_argument("--out", type=Path, default=None,
                   help="copy the organism to this new or empty directory (default: print its path)")
    b.add_argument("--rebuild", action="store_true",
                   help="pretrain again from the recipe even when the organism is shipped or cached, and say "
                        "whether the weights are bit-identical to the shipped ones")
    b.set_defaults(func=_build)


def _build(args: argparse.Namespace) -> int:
    from tunescope.organism.build import build

    print(build(preset=args.preset, out=args.out, seed=args.seed, rebuild=args.rebuild))
    return 0
