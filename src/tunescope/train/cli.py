"""`tunescope train sft|grpo --model DIR --out RUN [--config BUDGET] [key=value ...] [--resume]`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="post-train a model with SFT or GRPO under a shared budget",
                       description="Train from one base model with SFT or GRPO on the shared prompt stream; "
                                   "checkpoints go to OUT/checkpoints, the step log to OUT/log.jsonl.")
    p.add_argument("method", choices=["sft", "grpo"])
    p.add_argument("--model", required=True, help="base model: a model directory (any checkpoint) or hub id")
    p.add_argument("--out", required=True, help="run directory to create (or to continue with --resume)")
    p.add_argument("--config", default=None,
                   help="budget YAML, or a packaged name: smoke, default (defaults: BudgetConfig)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--stop-after", type=int, default=None, metavar="STEP",
                   help="end this session after checkpoint STEP; continue later with --resume")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. lr=1e-5 grpo.beta=0.04")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tunescope.train.config import load_budget
    from tunescope.train.run import train

    cfg = load_budget(args.config, args.overrides)
    run = train(args.method, args.model, Path(args.out), cfg, resume=args.resume, stop_after=args.stop_after)
    print(run)
    return 0
