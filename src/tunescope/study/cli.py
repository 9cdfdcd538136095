"""`tunescope run`: one study file (or the built-in default) -> every stage -> DIR/report.html."""

from __future__ import annotations

import argparse

from tunescope.cli import Intermixed, split_overrides
from tunescope.study.config import PRESETS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a whole study (train, evaluate, analyse, intervene, report)",
                       description="Run a study: the built-in default (organism, both original studies), "
                                   "--preset smoke, or STUDY.yaml. Finished stages are cached in DIR and reused; "
                                   "an interrupted run resumes where it stopped.")
    p.add_argument("study", nargs="?", help="study YAML (default: the built-in study of --preset)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. runs.sft.budget.lr=1e-4")
    p.add_argument("--out", required=True, help="study directory (stages, report.html, tables/)")
    p.add_argument("--preset", default="default", choices=PRESETS,
                   help="built-in study when no STUDY.yaml is given (smoke: every stage, tiny)")
    p.add_argument("--check", action="store_true", help="validate the study and list its stages; do no work")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="run up to N independent stages at once, each in its own process with "
                        "TUNESCOPE_THREADS threads (default 1; on CPU, N x threads = cores is fastest; "
                        "keep 1 on a single GPU)")
    p.set_defaults(func=_run)
    p.__class__ = Intermixed  # overrides may follow the options: `run --out DIR a=b`


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tunescope.study.config import load_study

    if args.jobs < 1:
        from tunescope.errors import UserError

        raise UserError(f"--jobs {args.jobs}: give 1 or more stages to run at once")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        from tunescope.errors import UserError

        raise UserError(f"--out {out} is a file; give a study directory (new, or one a run wrote before)")

    words, overrides = split_overrides([w for w in (args.study, *args.overrides) if w is not None])
    words += [w for w in overrides if _is_file(w)]  # a study file whose name holds '='
    overrides = [w for w in overrides if not _is_file(w)]
    if len(words) > 1:
        from tunescope.errors import UserError

        raise UserError(f"give one study file, not {len(words)} ({', '.join(words)}); overrides are key=value")
    study = words[0] if words else None
    cfg = load_study(study, overrides, preset=args.preset)
    from tunescope.study.plan import resolve
    from tunescope.study.runner import build_stages, check_out, run_study
    from tunescope.study.stages import StageRunner

    if args.check:
        check_out(cfg, Path(args.out))
        todo = StageRunner(args.out).plan(build_stages(resolve(cfg), Path(args.out)))
        print(f"study '{cfg.name}' is valid: {len(cfg.runs)} runs, {len(todo)} stages "
              f"({sum(c for _, _, c in todo)} cached)")
        for st, key, cached in todo:
            print(f"  {st.name:<36} {key}  {'cached' if cached else 'to run'}")
        return 0
    report = run_study(cfg, args.out, jobs=args.jobs)
    print(f"report: {report}")
    return 0


def _is_file(word: str) -> bool:
    """Whether a command-line word names an existing file (a long override is not a path: no OSError)."""
    from pathlib import Path

    try:
        return Path(word).is_file()
    except OSError:
        return False
