"""Deterministic train/test assignment by content hash, shared by every domain.

Each candidate problem has a canonical key (its content with surface details stripped: the
arithmetic of a word problem, the card values of a hand, the entity and attribute of a fact
question). The split is a pure function of that key, independent of the seed, so a test item
can never appear in train, in SFT data, or in the pretraining text, whatever seeds are used.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

from tunescope.errors import UserError

T = TypeVar("T")

TEST_FRACTION = 0.2  # share of canonical keys that belong to the test split


def split_of(domain: str, key: str, test_fraction: float = TEST_FRACTION) -> str:
    """'train' or 'test' for a canonical key; stable across seeds, runs and machines."""
    digest = hashlib.sha256(f"{domain}|{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return "test" if u < test_fraction else "train"


def rng_for(*parts: object) -> random.Random:
    """A `random.Random` seeded from any parts (stable: sha256, not Python's salted hash)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def take_finite(pool: Sequence[T], n: int, seed: int, what: str) -> list[T]:
    """The first `n` of `pool` in a seeded shuffled order; UserError when `n` exceeds the pool."""
    if n < 0:
        raise UserError(f"{what}: n must be >= 0, got {n}")
    if n > len(pool):
        raise UserError(f"{what}: asked for {n} items but only {len(pool)} exist; use n <= {len(pool)}")
    order = list(pool)
    rng_for("shuffle", what, seed).shuffle(order)
    return order[:n]


def take_stream(
    make: Callable[[random.Random, int], tuple[Hashable, T]],
    keep: Callable[[Hashable], bool],
    n: int,
    seed: int,
    what: str,
    limit: int,
    max_misses: int = 5000,
) -> list[T]:
    """First `n` distinct candidates from a seeded generator that pass `keep` (the split filter).

    `make(rng, i)` returns (canonical key, item) for slot `i`. Duplicates and other-split
    candidates are skipped. The split holds `limit` items (a fixed size makes "the whole test
    set" well defined); after `max_misses` misses in a row the space is taken as exhausted.
    """
    if n < 0:
        raise UserError(f"{what}: n must be >= 0, got {n}")
    if n > limit:
        raise UserError(f"{what}: asked for {n} items but only {limit} exist; use n <= {limit}")
    rng = rng_for("stream", what, seed)
    seen: set[Hashable] = set()
    out: list[T] = []
    misses = 0
    while len(out) < n:
        key, item = make(rng, len(out))
        if key in seen or not keep(key):
            misses += 1
            if misses > max_misses:
                raise UserError(
                    f"{what}: only {len(out)} distinct items exist at this difficulty; ask for fewer"
                )
            continue
        misses = 0
        seen.add(key)
        out.append(item)
    return out
