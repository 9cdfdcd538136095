"""tunescope: a controlled comparison of SFT and GRPO from one base model.

    import tunescope as ts; ts.diff("models/base", "runs/my_trl_run")   # the notebook API: tunescope.api

Pipeline, one sub-package per stage:
world -> organism -> train -> evaluate -> analyse -> intervene -> report, with `study` running them.
"""

__version__ = "0.1.0"

_API = ("Study", "diff", "evaluate", "load_study", "restore", "run_study", "spectrum")


def __getattr__(name: str):
    """The notebook API (`tunescope.api`), imported on first use so that `import tunescope` stays light."""
    if name == "evaluate":  # the evaluation package, callable as the API's evaluate
        import tunescope.evaluate

        return tunescope.evaluate
    if name in _API:
        from tunescope import api

        return getattr(api, name)
    raise AttributeError(f"module 'tunescope' has no attribute {name!r}")


__all__ = ["__version__", *_API]
