"""Maths word problems: multi-step integer arithmetic told in words (the GSM8K / MATH analogue).

A problem starts with a count of objects and applies 1-5 operations (gain, lose, multiply,
share equally), e.g. "Mira has 12 shells. She finds 7 more. Then she gives 5 away. How many
shells does Mira have now?" The gold reasoning writes one equation per step
("12 + 7 = 19. 19 - 5 = 14.") and the answer is the integer at the end.

Difficulty levels (steps, largest operand, operations):
    1: 1 step,  <= 40,  + -          (in-domain, suite `maths`)
    2: 2 steps, <= 30,  + - *        (in-domain; factors 2-3)
    3: 3 steps, <= 30,  + - * /      (in-domain; factors and divisors 2-3)
    4: 4 steps, <= 100, + - * /      (held out, suite `maths_hard`; factors 2-5)
    5: 5 steps, <= 200, + - * /      (held out)

The split key is the arithmetic alone (start value and operation sequence, not the names or
objects), so no test computation appears in train under another story. Scoring follows the
study: math-verify `verify(parse(gold), parse(pred))`, gold first (it is not symmetric).
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Literal

from tunescope.world.splits import split_of, take_stream
from tunescope.world.task import Item, Split, extract_answer, follows_format

LEVELS: dict[int, tuple[int, int, str]] = {  # level -> (steps, largest number, operations)
    1: (1, 40, "+-"),
    2: (2, 30, "+-*"),
    3: (3, 30, "+-*/"),
    4: (4, 100, "+-*/"),
    5: (5, 200, "+-*/"),
}

NAMES = [
    ("Mira", "she", "her"), ("Tomas", "he", "his"), ("Lena", "she", "her"), ("Omar", "he", "his"),
    ("Sana", "she", "her"), ("Ravi", "he", "his"), ("Ines", "she", "her"), ("Kofi", "he", "his"),
    ("Yuki", "she", "her"), ("Pavel", "he", "his"), ("Noor", "she", "her"), ("Diego", "he", "his"),
]
OBJECTS = ["shells", "stickers", "apples", "coins", "marbles", "books", "stamps", "pencils",
           "cookies", "beads", "cards", "eggs", "buttons", "leaves", "stones", "ribbons"]

_ADD = ["{P} finds {k} more.", "{P} buys {k} more.", "A friend gives {o} {k} more.", "{P} gets {k} more."]
_SUB = ["{P} gives {k} away.", "{P} loses {k}.", "{P} sells {k}.", "{P} uses {k} of them."]
_MUL = {2: "The number of {obj} doubles.", 3: "The number of {obj} triples."}
_MUL_K = "{P} ends up with {k} times as many {obj} as before."
_DIV = "{P} splits the {obj} into {k} equal piles and keeps one pile."


def _step(rng: random.Random, value: int, top: int, ops: str) -> tuple[str, int] | None:
    """One random operation that keeps the count a non-negative integer; None if none fits."""
    op = rng.choice(ops)
    if op == "+":
        return "+", rng.randint(1, top)
    if op == "-" and value >= 1:
        return "-", rng.randint(1, min(value, top))
    big = top > 40  # held-out levels use larger factors
    if op == "*" and value <= (2 * top if big else top):
        return "*", rng.randint(2, 5 if big else 3)
    if op == "/":
        divisors = [k for k in range(2, 6 if big else 4) if value % k == 0 and value > 0]
        if divisors:
            return "/", rng.choice(divisors)
    return None


def _problem(rng: random.Random, level: int) -> tuple[str, Item]:
    steps, top, ops = LEVELS[level]
    start = rng.randint(2, top)
    chain: list[tuple[str, int]] = []
    value = start
    while len(chain) < steps:
        step = _step(rng, value, top, ops)
        if step is None:
            continue
        op, k = step
        value = {"+": value + k, "-": value - k, "*": value * k, "/": value // k}[op]
        chain.append(step)
    key = f"{start}" + "".join(f"{op}{k}" for op, k in chain)

    name, subj, obj = rng.choice(NAMES)
    thing = rng.choice(OBJECTS)
    sentences = [f"{name} has {start} {thing}."]
    equations = []
    value = start
    for i, (op, k) in enumerate(chain):
        P = subj.capitalize() if i else name
        if op == "+":
            s = rng.choice(_ADD).format(P=P, k=k, o="him" if subj == "he" else "her")
            new = value + k
        elif op == "-":
            s = rng.choice(_SUB).format(P=P, k=k)
            new = value - k
        elif op == "*":
            s = (_MUL[k] if k in _MUL and rng.random() < 0.5 else _MUL_K).format(P=P, k=k, obj=thing)
            new = value * k
        else:
            s = _DIV.format(P=P, k=k, obj=thing)
            new = value // k
        sentences.append(("Then " + s[0].lower() + s[1:]) if i and s.startswith(subj.capitalize()) else s)
        equations.append(f"{value} {op} {k} = {new}.")
        value = new
    sentences.append(f"How many {thing} does {name} have now?")
    item = Item(
        id=f"maths:{key}",
        prompt=" ".join(sentences),
        solution=" ".join(equations),
        answer=str(value),
        meta={"level": level, "steps": steps},
    )
    return key, item


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def math_equal(gold: str, pred: str | None) -> bool:
    """math-verify equivalence, gold first. Timeouts use SIGALRM, so they are off outside the main thread."""
    if not pred:
        return False
    from math_verify import parse, verify

    timeout = 5 if _on_main_thread() else None
    gold_parsed = parse(gold, parsing_timeout=timeout)
    pred_parsed = parse(pred, parsing_timeout=timeout)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))


@dataclass
class MathsTask:
    """Word problems at the given levels; reward = correctness + `format_reward` for the tag format."""

    name: str = "maths"
    levels: tuple[int, ...] = (1, 2, 3)
    seed: int = 0
    format_reward: float = 0.2  # the study's format bonus (BRIEF study 1); 0 turns it off
    kind: Literal["generate", "choice"] = "generate"
    sizes: tuple[int, int] = (5000, 1000)  # items in (train, test); level 1 allows ~5,700 / ~1,400

    def count(self, split: Split) -> int:
        """How many items the split holds."""
        return self.sizes[0] if split == "train" else self.sizes[1]

    def items(self, split: Split, n: int) -> list[Item]:
        levels = self.levels

        def make(rng: random.Random, i: int) -> tuple[str, Item]:
            return _problem(rng, levels[i % len(levels)])

        return take_stream(
            make, lambda key: split_of("maths", str(key)) == split, n, self.seed, f"{self.name}/{split}",
            limit=self.count(split),
        )

    def extract(self, completion: str) -> str | None:
        return extract_answer(completion)

    def score(self, item: Item, completion: str) -> float:
        return 1.0 if math_equal(item.answer, self.extract(completion)) else 0.0

    def reward(self, item: Item, completion: str) -> float:
        bonus = self.format_reward if follows_format(completion) else 0.0
        return self.score(item, completion) + bonus


def maths_task(seed: int = 0, **options: object) -> MathsTask:
    return MathsTask(name="maths", levels=(1, 2, 3), seed=seed, **options)  # type: ignore[arg-type]


def maths_hard_task(seed: int = 0, **options: object) -> MathsTask:
    return MathsTask(name="maths_hard", levels=(4, 5), seed=seed, **options)  # type: ignore[arg-type]
