"""Filesystem helpers: write a directory completely or not at all."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from tunescope.errors import UserError


def sha256_file(path: Path) -> str:
    """The sha256 of a file's bytes, read in 1 MB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# a full disk, a quota, a file-size limit: as an OSError's errno, or in the text of a library's own
# error (safetensors: "I/O error: No space left on device (os error 28)")
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def out_of_space(e: BaseException) -> bool:
    """Whether `e` is a write that failed for want of space."""
    return (isinstance(e, OSError) and e.errno in _NO_SPACE) or any(
        f"(os error {n})" in str(e) or os.strerror(n) in str(e) for n in _NO_SPACE)


def whole_lines(path: Path) -> list[str]:
    """The non-empty lines of an append-only file, without what follows its last newline: the
    half-written row a writer killed mid-append leaves (every earlier line is whole)."""
    text = path.read_text()
    return [ln for ln in text[:text.rfind("\n") + 1].splitlines() if ln.strip()]


def check_writable_parent(path: Path) -> None:
    """Fail with a one-line error when `path` cannot be created."""
    parent = path.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output directory {path}: {e.strerror}; choose a writable --out") from None
    if not os.access(parent, os.W_OK):
        raise UserError(f"output directory {path} is not writable; choose a writable --out")


def check_outside(out: str | Path, inputs: dict[str, str | Path | None]) -> None:
    """Fail with a one-line error when the output directory `out` is, or lies inside, one of the
    local `inputs` (label -> path; hub ids and None are skipped): writing there would mix outputs
    into a model or run directory that other stages read as input."""
    o = Path(out).expanduser().resolve()
    for label, path in inputs.items():
        if path is None or not Path(path).expanduser().exists():
            continue
        p = Path(path).expanduser().resolve()
        if o == p or p in o.parents:
            raise UserError(f"--out {out} is inside {label} {path}; write outputs to a directory outside the inputs")


@contextlib.contextmanager
def atomic_dir(final: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; rename it to `final` when the block succeeds.

    On error the temporary directory is removed and `final` is untouched. A non-empty `final`
    is an error unless `overwrite` is set.
    """
    final = Path(final)
    check_writable_parent(final)
    if final.exists() and any(final.iterdir()) and not overwrite:
        raise UserError(f"output directory {final} exists and is not empty; remove it or choose another --out")
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
