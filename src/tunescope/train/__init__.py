"""Controlled post-training: SFT, GRPO, RLOO and DPO from one base model, one budget, one prompt stream.

    from tunescope.train import BudgetConfig, load_budget, train
    run = train("grpo", "organism/", Path("runs/grpo"), load_budget("smoke"))

See run.py for the run-directory layout, data.py for the shared prompt stream.

`METHODS` is the registry of training methods. The budget types import light; `train` (torch,
TRL) is imported on first use, so that validating a study or `tunescope --help` stays fast.
"""

from typing import Any

from tunescope.train.config import (
    METHODS,
    BudgetConfig,
    DPOOptions,
    GRPOOptions,
    RLOOOptions,
    RLOptions,
    SFTOptions,
    load_budget,
)

__all__ = ["METHODS", "BudgetConfig", "DPOOptions", "GRPOOptions", "RLOOOptions", "RLOptions", "SFTOptions",
           "load_budget", "train"]


def __getattr__(name: str) -> Any:
    if name == "train":
        from tunescope.train.run import train

        return train
    raise AttributeError(f"module 'tunescope.train' has no attribute {name!r}")
