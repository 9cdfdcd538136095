"""bench/gpu_check.py where there is no GPU: one line, exit 0 (its checks run with --on-cpu or on CUDA)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: run `make gpu-check` itself")
def test_gpu_check_skips_in_one_line_without_cuda(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--out", str(tmp_path)], cwd=repo,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().splitlines() == [
        "gpu_check: skipped, no CUDA GPU here (torch.cuda.is_available() is False)"]
    assert not any(tmp_path.iterdir())  # nothing written
