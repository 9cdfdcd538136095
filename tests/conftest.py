"""Shared fixtures. The smoke organism is built once (cached by config hash) and reused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TUNESCOPE_CACHE", str(REPO / ".cache"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def smoke_organism() -> Path:
    """Directory of the smoke organism (a real HF model dir), built on first use."""
    from tunescope.organism import build

    return build(preset="smoke")


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory, smoke_organism) -> Path:
    """DIR of `tunescope run --preset smoke --out DIR`, run once per session (report, tables, stages)."""
    from tunescope.cli import main

    out = tmp_path_factory.mktemp("study") / "smoke"
    assert main(["run", "--preset", "smoke", "--out", str(out)]) == 0
    return out
