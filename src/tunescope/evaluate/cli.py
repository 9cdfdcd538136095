"""`tunescope eval MODEL_OR_RUN_DIR... --suite NAME[,NAME] --out DIR`."""

from __future__ import annotations

import argparse
import sys

from tunescope.cli import Intermixed, split_overrides


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="evaluate models or every checkpoint of runs, with 95%% bootstrap intervals",
        description="Evaluate model directories, or every checkpoint of run directories, on organism suites "
                    "(maths, maths_hard, game24, game24_ood, facts, twohop, instruct), benchmark files "
                    "(gsm8k, math500, mmlu, gpqa with --data, or --task-spec FILE.yaml) and lm-eval tasks. "
                    "Writes samples.jsonl, scores.csv, distribution.csv and eval.json to --out; rerunning "
                    "with the same --out resumes after the last finished checkpoint.")
    p.add_argument("models", nargs="+", metavar="MODEL_OR_RUN_DIR | KEY=VALUE",
                   help="model or run directories, and EvalConfig overrides as bare key=value (the syntax of "
                        "`train` and `run`): temperature=0.6 top_p=0.95 n_samples=8 mc_mode=both "
                        "kl_items=0 bootstrap=5000 backend=vllm device=cuda lm_eval_limit=50 ...")
    p.add_argument("--suite", action="append", default=[], metavar="NAME[,NAME]", help="suites to evaluate")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--task-spec", action="append", default=[], metavar="FILE.yaml",
                   help="a benchmark declared as data (see tunescope/specs/*.yaml)")
    p.add_argument("--data", action="append", default=[], metavar="[SUITE=]PATH",
                   help="local file for a shipped spec suite (gsm8k, math500, mmlu, gpqa)")
    p.add_argument("--reference", help="reference model directory for KL(reference || checkpoint)")
    p.add_argument("--config", help="EvalConfig YAML")
    p.add_argument("--n", type=int, help="items per suite, 0 = all (alias of n=N)")
    p.add_argument("--max-new-tokens", type=int, help="alias of max_new_tokens=N")
    p.add_argument("--batch-size", type=int, help="alias of batch_size=N")
    p.add_argument("--lm-eval", metavar="TASK[,TASK]", help="lm-evaluation-harness tasks (alias of lm_eval=[...])")
    p.set_defaults(func=_run)
    p.__class__ = Intermixed  # overrides and models may follow the options


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tunescope.checkpoints import resolve_models
    from tunescope.config import load_config
    from tunescope.evaluate.run import EvalConfig, evaluate

    models, overrides = split_overrides(args.models)
    for flag in ("n", "max_new_tokens", "batch_size"):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{flag}={value}")
    if args.lm_eval:
        overrides.append(f"lm_eval=[{','.join(t.strip() for t in args.lm_eval.split(',') if t.strip())}]")
    cfg = load_config(EvalConfig, args.config, overrides)
    suites = [s.strip() for arg in args.suite for s in arg.split(",") if s.strip()]
    refs = resolve_models(models)
    if args.reference:
        ref = resolve_models([args.reference])
        if len(ref) != 1:
            from tunescope.errors import UserError

            raise UserError(f"--reference {args.reference} must be one model directory, not a run")
        reference = ref[0].path
    else:
        reference = None
    df = evaluate(refs, suites, Path(args.out), cfg, reference=reference, task_specs=args.task_spec,
                  data=args.data)
    summary = df[df["metric"].isin(["accuracy"]) | df["metric"].str.startswith("lm_eval:")]
    cols = ["model", "step", "suite", "metric", "value", "ci_low", "ci_high", "n"]
    print(summary[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {args.out}/scores.csv, samples.jsonl, distribution.csv, eval.json", file=sys.stderr)
    return 0
