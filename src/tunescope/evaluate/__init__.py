"""Evaluation: every checkpoint on organism suites and benchmark files, with 95% bootstrap intervals.

`evaluate(models, suites, out, EvalConfig(...))` is the Python entry point; `tunescope eval` the CLI.
Imports are lazy so that `tunescope --help` stays instant.

The package itself is callable as the notebook API's evaluate (`tunescope.evaluate("runs/grpo",
suites=["maths"], n=64)`, see `tunescope.api.evaluate`): the name `tunescope.evaluate` is this
package once anything imported it, so the top-level call and the package are one object.
"""

import sys
import types
from typing import Any

__all__ = ["EvalConfig", "evaluate"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from tunescope.evaluate import run

        return getattr(run, name)
    raise AttributeError(name)


class _Callable(types.ModuleType):
    def __call__(self, *models: Any, **kw: Any) -> Any:
        from tunescope.api import evaluate

        return evaluate(*models, **kw)


sys.modules[__name__].__class__ = _Callable
