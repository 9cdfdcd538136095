"""Zero-copy row blocks of safetensors tensors, for one streaming pass over a model.

`WeightFiles.rows` copies the bytes it reads; the diff only needs to look at them once, so here
each shard is memory-mapped and a row block is a tensor *view* of the mapping: no copy, and the
arithmetic reads the page cache directly. Two `madvise` calls keep this streaming:

    willneed(block)  ask the kernel to start reading the next block from disk (readahead)
    release(block)   drop the block's pages from this process once done (the page cache keeps
                     them), so resident memory stays one block, not the whole file

The mapping is private copy-on-write (writable as far as torch is concerned, never written).
"""

from __future__ import annotations

import json
import math
import mmap
from pathlib import Path

import torch

from tunescope.weights import _TORCH_DTYPES, WeightFiles

_PAGE = mmap.PAGESIZE


class MappedWeights:
    """Row blocks of the tensors of one model directory, as views of memory-mapped shards."""

    def __init__(self, weights: WeightFiles):
        self.w = weights
        self._maps: dict[Path, tuple[mmap.mmap, dict[str, int]]] = {}

    def _map(self, f: Path) -> tuple[mmap.mmap, dict[str, int]]:
        if f not in self._maps:
            with open(f, "rb") as h:
                n = int.from_bytes(h.read(8), "little")
                header = json.loads(h.read(n))
                m = mmap.mmap(h.fileno(), 0, access=mmap.ACCESS_COPY)
            starts = {k: 8 + n + v["data_offsets"][0] for k, v in header.items() if k != "__metadata__"}
            self._maps[f] = (m, starts)
        return self._maps[f]

    def _span(self, name: str, start: int, stop: int) -> tuple[mmap.mmap, int, int, torch.dtype]:
        m, starts = self._map(self.w.file_of[name])
        dtype = _TORCH_DTYPES[self.w.dtype(name)]
        shape = self.w.shape(name) or (1,)
        row = math.prod(shape[1:]) * torch.empty((), dtype=dtype).element_size()
        return m, starts[name] + start * row, (stop - start) * row, dtype

    def rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Rows start:stop (stored dtype), a view of the mapped file: (stop - start, *shape[1:])."""
        m, off, n, dtype = self._span(name, start, stop)
        shape = self.w.shape(name) or (1,)
        if n == 0:
            return torch.empty((0, *shape[1:]), dtype=dtype)
        t = torch.frombuffer(m, dtype=torch.uint8, count=n, offset=off)
        return t.view(dtype).reshape(stop - start, *shape[1:])

    def _advise(self, advice: int, name: str, start: int, stop: int) -> None:
        m, off, n, _ = self._span(name, start, stop)
        lo = off - off % _PAGE
        if n > 0:
            m.madvise(advice, lo, min(off + n, len(m)) - lo)

    def willneed(self, name: str, start: int, stop: int) -> None:
        self._advise(mmap.MADV_WILLNEED, name, start, stop)

    def release(self, name: str, start: int, stop: int) -> None:
        self._advise(mmap.MADV_DONTNEED, name, start, stop)
