"""Interventions: weight surgery that restores what fine-tuning took, and the recovery it buys.

`edits` holds the pure tensor -> tensor edits, `restore` streams them over a model directory,
`recovery` scores the result. See docs/intervene.md. Imports are lazy so `tunescope --help` stays fast.
"""

from __future__ import annotations

from typing import Any

METHODS = ("direction", "full", "values", "reset", "interpolate")

_LAZY = {"restore": "restore", "RestoreOptions": "restore", "recovery": "recovery", "Recovery": "recovery",
         "Score": "recovery"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"tunescope.intervene.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'tunescope.intervene' has no attribute {name!r}")


__all__ = ["METHODS", "Recovery", "RestoreOptions", "Score", "recovery", "restore"]
