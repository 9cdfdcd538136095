"""Controlled post-training: SFT and GRPO from one base model, one budget, one prompt stream.

    from tunescope.train import BudgetConfig, load_budget, train
    run = train("grpo", "organism/", Path("runs/grpo"), load_budget("smoke"))

See run.py for the run-directory layout, data.py for the shared prompt stream.
"""

from tunescope.train.config import BudgetConfig, GRPOOptions, SFTOptions, load_budget
from tunescope.train.run import train

__all__ = ["BudgetConfig", "GRPOOptions", "SFTOptions", "load_budget", "train"]
