"""`tunescope train sft|grpo|rloo|chord|dpo --model DIR --out RUN [--config BUDGET] [key=value ...] [--resume]`."""

from __future__ import annotations

import argparse

from tunescope.cli import Intermixed


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="post-train a model with SFT, GRPO, RLOO or DPO under a shared budget",
                       description="Train from one base model with SFT, GRPO, RLOO or DPO on the shared prompt stream; "
                                   "checkpoints go to OUT/checkpoints, the step log to OUT/log.jsonl.")
    p.add_argument("words", nargs="+", metavar="{sft,grpo,rloo,dpo} [key=value ...]",
                   help="the method, then config overrides, e.g. sft lr=1e-5 grpo.beta=0.04")
    p.add_argument("--model", required=True, help="base model: a model directory (any checkpoint) or hub id")
    p.add_argument("--out", required=True, help="run directory to create (or to continue with --resume)")
    p.add_argument("--config", default=None,
                   help="budget YAML, or a packaged name: smoke, default (defaults: BudgetConfig)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--stop-after", type=int, default=None, metavar="STEP",
                   help="end this session after checkpoint STEP; continue later with --resume")
    p.set_defaults(func=_run)
    p.__class__ = Intermixed  # overrides may follow the options: `train sft --model M lr=1e-5`


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tunescope.errors import UserError
    from tunescope.train.config import METHODS, load_budget
    from tunescope.train.run import train

    method, overrides = args.words[0], args.words[1:]
    if method not in METHODS:
        raise UserError(f"method must be {' or '.join(METHODS)}, got {method!r}: "
                        f"tunescope train {'|'.join(METHODS)} --model ...")
    cfg = load_budget(args.config, overrides)
    run = train(method, args.model, Path(args.out), cfg, resume=args.resume, stop_after=args.stop_after)
    print(run)
    return 0
