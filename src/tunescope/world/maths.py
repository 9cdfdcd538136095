"""Maths word problems: multi-step integer arithmetic told in words (the GSM8K / MATH analogue).

A problem starts with a count of objects and applies 1-5 operations (gain, lose, multiply,
share equally), e.g. "Mira has 12 shells. She finds 7 more. Then she gives 5 away. How many
shells does Mira have now?" The gold reasoning writes one equation per step
("12 + 7 = 19. 19 - 5 = 14.") and the answer is the integer at the end.

Every count stays in 0..MAX_VALUE and every step adds or takes away at most MAX_ADD, or
multiplies or divides by 2 or 3, so the whole table of one-step facts is small (about 1,500
equations) and a tiny model can learn it from the drills: what separates a right answer from a
wrong one is whether the model works through the steps, not which facts it memorised.

Difficulty levels (steps, operations):
    1: 1 step,  + -          (in-domain, suite `maths`)
    2: 2 steps, + - *        (in-domain)
    3: 3 steps, + - * /      (in-domain)
    4: 4 steps, + - * /      (held out, suite `maths_hard`: longer chains of the same arithmetic)
    5: 5 steps, + - * /      (held out)

The split key is the arithmetic alone (start value and operation sequence, not the names or
objects), so no test computation appears in train under another story. Scoring follows the
study: math-verify `verify(parse(gold), parse(pred))`, gold first (it is not symmetric).

`direct_solution(item)` is the same answer without the working ("The answer is 14."): the
organism's pretraining chats answer most problems that way (docs/organism.md), a habit that a
reward on the answer can replace by the worked solutions the organism also knows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from tunescope.world.splits import split_of, take_stream
from tunescope.world.task import Item, Split, extract_answer, follows_format

LEVELS: dict[int, tuple[int, str]] = {  # level -> (steps, operations)
    1: (1, "+-"),
    2: (2, "+-*"),
    3: (3, "+-*/"),
    4: (4, "+-*/"),
    5: (5, "+-*/"),
}
MAX_VALUE = 60  # every count, start and intermediate, stays in 0..MAX_VALUE
MAX_START = 50  # the count a problem starts from is 2..MAX_START
MAX_ADD = 12  # a step adds or takes away 1..MAX_ADD
FACTORS = (2, 3)  # a step multiplies or divides by one of these

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


def step_options(value: int, op: str) -> list[int]:
    """Operands `k` for which `value op k` is a legal step (result an integer in 0..MAX_VALUE)."""
    if op == "+":
        return list(range(1, min(MAX_ADD, MAX_VALUE - value) + 1))
    if op == "-":
        return list(range(1, min(MAX_ADD, value) + 1))
    if op == "*":
        return [k for k in FACTORS if 1 <= value and value * k <= MAX_VALUE]
    return [k for k in FACTORS if value >= k and value % k == 0]  # "/"


def apply(value: int, op: str, k: int) -> int:
    return {"+": value + k, "-": value - k, "*": value * k, "/": value // k}[op]


def _step(rng: random.Random, value: int, ops: str) -> tuple[str, int] | None:
    """One random legal operation on `value`; None when the drawn operation has none."""
    op = rng.choice(ops)
    options = step_options(value, op)
    return (op, rng.choice(options)) if options else None


def _problem(rng: random.Random, level: int) -> tuple[str, Item]:
    steps, ops = LEVELS[level]
    start = rng.randint(2, MAX_START)
    chain: list[tuple[str, int]] = []
    value = start
    while len(chain) < steps:
        step = _step(rng, value, ops)
        if step is None:
            continue
        value = apply(value, *step)
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
        elif op == "-":
            s = rng.choice(_SUB).format(P=P, k=k)
        elif op == "*":
            s = (_MUL[k] if k in _MUL and rng.random() < 0.5 else _MUL_K).format(P=P, k=k, obj=thing)
        else:
            s = _DIV.format(P=P, k=k, obj=thing)
        new = apply(value, op, k)
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


def direct_solution(item: Item) -> str:
    """The answer stated without the working: the reasoning of a model that answers from memory."""
    return f"The answer is {item.answer}."


def math_equal(gold: str, pred: str | None) -> bool:
    """The one answer judge (`tunescope.filetasks.math_equal`: math-verify, gold first, guarded)."""
    from tunescope.filetasks import math_equal as judge  # imported here: filetasks imports the world

    return judge(gold, pred)


@dataclass
class MathsTask:
    """Word problems at the given levels; reward = correctness + `format_reward` for the tag format."""

    name: str = "maths"
    levels: tuple[int, ...] = (1, 2, 3)
    seed: int = 0
    format_reward: float = 0.2  # the study's format bonus (BRIEF study 1); 0 turns it off
    kind: Literal["generate", "choice"] = "generate"
    sizes: tuple[int, int] = (2400, 480)  # items in (train, test); level 1 has only 921 / 197 problems

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
