"""The one CPU thread policy: TUNESCOPE_THREADS wins; a busy machine gets one thread; the block restores."""

from __future__ import annotations

import os

import torch

from tunescope.threads import cpu_threads, torch_threads


def test_env_override_busy_machine_and_restore(monkeypatch):
    monkeypatch.setenv("TUNESCOPE_THREADS", "3")
    assert cpu_threads() == 3
    monkeypatch.delenv("TUNESCOPE_THREADS")
    cores = os.cpu_count() or 1
    monkeypatch.setattr(os, "getloadavg", lambda: (cores + 1.0, 0.0, 0.0))
    assert cpu_threads() == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert cpu_threads() == cores
    before = torch.get_num_threads()
    try:
        with torch_threads(1) as n:
            assert n == torch.get_num_threads() == 1
            raise RuntimeError("a failing stage")
    except RuntimeError:
        pass
    assert torch.get_num_threads() == before
