"""tunescope: a controlled comparison of SFT and GRPO from one base model.

Pipeline, one sub-package per stage:
world -> organism -> train -> evaluate -> analyse -> intervene -> report, with `study` running them.
"""

__version__ = "0.1.0"
