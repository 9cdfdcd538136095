"""The `tunescope` command line: one sub-command per pipeline stage.

Each stage owns a light `cli` module with `register(subparsers)`; heavy imports (torch,
transformers) happen inside the handlers so that `tunescope --help` is instant.
A `UserError` anywhere becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

from tunescope import __version__
from tunescope.errors import UserError

# Stage modules, in pipeline order. Each exposes register(subparsers).
STAGES = (
    "tunescope.organism.cli",
    "tunescope.train.cli",
    "tunescope.evaluate.cli",
    "tunescope.analyse.cli",
    "tunescope.intervene.cli",
    "tunescope.study.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunescope",
        description="What did SFT and what did RL do to my model? Train, evaluate, diff, restore, report.",
    )
    parser.add_argument("--version", action="version", version=f"tunescope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in STAGES:
        importlib.import_module(name).register(sub)
    return parser


_OVERRIDE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*=")


def split_overrides(words: list[str]) -> tuple[list[str], list[str]]:
    """(other words, overrides): words that start with `key=` are config overrides (train, eval, run)."""
    overrides = [w for w in words if _OVERRIDE.match(w)]
    return [w for w in words if not _OVERRIDE.match(w)], overrides


class Intermixed(argparse.ArgumentParser):
    """A sub-command parser whose positionals (models, `key=value` overrides) may come before and
    after its options: `tunescope train sft --model M lr=1e-5`, `tunescope run --out D a=b`."""

    _inner = False

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        if self._inner:  # parse_known_intermixed_args calls back into parse_known_args
            return super().parse_known_args(args, namespace)
        self._inner = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inner = False


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; finished artifacts are kept, rerun with --resume where offered", file=sys.stderr)
        return 130
    except OSError as e:
        from tunescope.fsutil import out_of_space

        if not out_of_space(e):
            raise
        print(f"error: could not write {e.filename or 'the output'} ({e.strerror}); free disk space and rerun "
              "(finished artifacts are kept)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
