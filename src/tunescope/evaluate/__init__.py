"""Evaluation: every checkpoint on organism suites and benchmark files, with 95% bootstrap intervals.

`evaluate(models, suites, out, EvalConfig(...))` is the Python entry point; `tunescope eval` the CLI.
Imports are lazy so that `tunescope --help` stays instant.
"""

from typing import Any

__all__ = ["EvalConfig", "evaluate"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from tunescope.evaluate import run

        return getattr(run, name)
    raise AttributeError(name)
