"""Test helpers shared across test files (not fixtures)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM


def perturb(src: Path, dst: Path, scale: float, seed: int = 0) -> Path:
    """A copy of a model directory with Gaussian noise added to every weight (a stand-in fine-tune)."""
    shutil.copytree(src, dst)
    if scale:
        model = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.float32)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(scale * p.std() * torch.randn(p.shape, generator=g))
        model.save_pretrained(str(dst))
    return dst
