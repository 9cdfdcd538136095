"""Provenance: what produced an artifact (config, versions, seed, git revision, host, time)."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata as _md
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

_PACKAGES = ("tunescope", "torch", "transformers", "trl", "accelerate", "datasets", "safetensors",
             "tokenizers", "math-verify", "numpy", "vllm", "lm-eval")


def versions() -> dict[str, str]:
    """Installed versions of the packages that matter for reproducing a result."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = _md.version(name)
        except _md.PackageNotFoundError:
            continue
    return out


def git_revision() -> str:
    """The git revision of the tunescope source tree, with '-dirty' when it has uncommitted edits."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux; platform.processor() elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def provenance(config: Any = None, seed: int | None = None, **extra: Any) -> dict[str, Any]:
    """A JSON-ready record of what produced an artifact."""
    return {
        "config": config,
        "seed": seed,
        "versions": versions(),
        "git_revision": git_revision(),
        "host": {"machine": platform.machine(), "cpu": cpu_model(), "cpus": os.cpu_count(), "system": platform.system()},
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        **extra,
    }


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)
