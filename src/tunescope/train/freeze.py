"""Freezing by selectors: which parameters the optimiser may touch.

Selectors are `tunescope.naming` strings over parameter names, by module type and layer range:

    freeze=["gate,up,down@19-25"]   the study's "frozen mid-layer MLPs" run
    train_only=["q,k"]              the study's "only Q/K trained" run (everything else frozen)

`train_only=["q,k"]` freezes everything else, the LM head and the embeddings included. Rajani et al.
froze `model.model` only, so their Q/K-only run also trained the (untied) LM head: write
`train_only: ["q,k", "lm_head"]` for that (configs/studies/rajani_olmo2_7b.yaml does). With tied
embeddings (the organism) the LM head is the embedding matrix, and `lm_head` would train it too.

A frozen parameter has `requires_grad=False`, so it gets no gradient and is not handed to the
optimiser (no weight decay, no momentum): its tensor is bit-identical after training.
"""

from __future__ import annotations

import torch

from tunescope.errors import UserError
from tunescope.naming import select


def apply_freeze(model: torch.nn.Module, freeze: list[str], train_only: list[str]) -> dict[str, int]:
    """Set `requires_grad` from the selectors; return counts of trainable and frozen parameters."""
    names = [n for n, _ in model.named_parameters()]
    trainable = set(select(names, train_only)) if train_only else set(names)
    if freeze:
        trainable -= set(select(names, freeze))
    if not trainable:
        raise UserError("the freeze / train_only selectors leave no parameter to train; loosen them")
    for name, p in model.named_parameters():
        p.requires_grad_(name in trainable)
    counts = {"trainable": 0, "frozen": 0, "trainable_tensors": 0, "frozen_tensors": 0}
    for name, p in model.named_parameters():
        key = "trainable" if name in trainable else "frozen"
        counts[key] += p.numel()
        counts[f"{key}_tensors"] += 1
    return counts
