"""Test helpers shared across test files (not fixtures)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from scipy.special import log_softmax
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


def float64_logprobs(model_dir: Path, ids: list[int]) -> np.ndarray:
    """Unbatched, unpadded forward pass; log-softmax in float64. (S, V)"""
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double().numpy()
    return log_softmax(logits, axis=-1)
