"""CPU intra-op threads: one policy for every stage (pretraining, training, evaluation, SVDs).

`TUNESCOPE_THREADS` when set; else every core on an idle machine and one thread on a busy one.
On a shared CPU, processes that each spin `cpu_count` OpenMP threads slow each other far more than
the lost parallelism costs (measured on the 2-core development machine: one thread trained 3x
faster than two at a load average of 10, sampled 64 x 96 tokens in 1.4 s instead of 36 s at load
~13, and ran an SVD 4-10x faster when oversubscribed). The count changes float summation order,
so every artifact records it; set TUNESCOPE_THREADS when bit-exact reruns matter.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


def cpu_threads() -> int:
    """Threads to use now: TUNESCOPE_THREADS, else all cores unless the load leaves less than half a core."""
    if os.environ.get("TUNESCOPE_THREADS"):
        return max(1, int(os.environ["TUNESCOPE_THREADS"]))
    cores = os.cpu_count() or 1
    busy = os.getloadavg()[0] > cores - 0.5
    return 1 if busy else cores


@contextlib.contextmanager
def torch_threads(n: int | None = None) -> Iterator[int]:
    """Set torch's intra-op threads to `n` (default `cpu_threads()`) for the block; restore after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n or cpu_threads())
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
