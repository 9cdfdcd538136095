"""Instruction following with verifiable constraints (the IFEval analogue, Zhou et al. 2023).

A prompt asks for a short text about a simple topic under one to three constraints. Each
constraint kind has a checker that reads only the extracted answer; an item scores 1.0 when
every constraint holds (IFEval's "prompt-level strict" accuracy). Gold responses are built from
a topic word bank and then edited until they comply, and the tests check that they do.

Constraint kinds: upper (all capitals), lower (no capitals), words (exactly N words), keyword
(contains word K), end (last word is W), start (first word is W), no_commas.
Deviation from IFEval: a handful of kinds with exact checkers, no loose variant.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from tunescope.world.splits import split_of, take_stream
from tunescope.world.task import Item, Split, extract_answer

TOPICS = {
    "the sea": "the sea is wide and deep waves roll onto the sand fish swim under the blue water "
               "boats sail across the bay at dawn",
    "a cat": "my cat sleeps in the sun all day she chases small mice and drinks warm milk "
             "her soft fur is grey",
    "bread": "fresh bread comes out of the hot oven the crust is brown and the inside is soft "
             "we eat it with butter",
    "rain": "rain falls on the roof all night the streets shine and the river grows "
            "children jump in every puddle",
    "a garden": "the garden is full of flowers bees visit the roses and tall trees give cool shade "
                "in the summer",
    "the moon": "the moon rises over the hills at night it lights the quiet fields with silver "
                "light and the owls call",
    "a train": "the train rolls along the track past farms and towns people read and watch the "
               "fields go by",
    "winter": "winter brings snow and cold wind we wear thick coats and drink hot tea by the fire",
    "a library": "the library is calm and quiet rows of books wait on the shelves and readers "
                 "turn the pages slowly",
    "the market": "the market opens early farmers sell apples and cheese and people talk and laugh "
                  "between the stalls",
    "a river": "the river runs down from the mountains it carries leaves and stones and ducks "
               "float on the water",
    "music": "music fills the room a violin plays a slow song and the drums keep a steady beat",
}

KINDS = ["upper", "lower", "words", "keyword", "end", "start", "no_commas"]
Constraint = tuple[str, str]  # (kind, argument as text; "" when it takes none)


def _words(text: str) -> list[str]:
    return text.split()


def _bare(word: str) -> str:
    return re.sub(r"[^\w]", "", word).lower()


CHECKERS: dict[str, Callable[[str, str], bool]] = {
    "upper": lambda text, arg: any(c.isalpha() for c in text) and text == text.upper(),
    "lower": lambda text, arg: any(c.isalpha() for c in text) and text == text.lower(),
    "words": lambda text, arg: len(_words(text)) == int(arg),
    "keyword": lambda text, arg: arg.lower() in {_bare(w) for w in _words(text)},
    "end": lambda text, arg: bool(_words(text)) and _bare(_words(text)[-1]) == arg.lower(),
    "start": lambda text, arg: bool(_words(text)) and _bare(_words(text)[0]) == arg.lower(),
    "no_commas": lambda text, arg: "," not in text,
}

DESCRIBE: dict[str, str] = {
    "upper": "Write your whole answer in capital letters.",
    "lower": "Write your whole answer in lowercase letters.",
    "words": "Use exactly {arg} words.",
    "keyword": 'Include the word "{arg}".',
    "end": 'End your answer with the word "{arg}".',
    "start": 'Start your answer with the word "{arg}".',
    "no_commas": "Do not use any commas.",
}


def check(text: str | None, constraints: list[Constraint]) -> list[bool]:
    """One bool per constraint: does `text` satisfy it? (None, i.e. no answer, satisfies none.)"""
    return [text is not None and CHECKERS[kind](text, arg) for kind, arg in constraints]


def _draw(rng: random.Random) -> tuple[str, list[Constraint]]:
    topic = rng.choice(sorted(TOPICS))
    bank = [w for w in TOPICS[topic].split() if len(w) > 3]
    kinds = rng.sample(KINDS, rng.randint(1, 3))
    if "upper" in kinds and "lower" in kinds:
        kinds.remove("lower")
    constraints: list[Constraint] = []
    for kind in sorted(kinds):
        arg = ""
        if kind == "words":
            arg = str(rng.randint(4, 10))  # short: a ~3M-parameter organism can count this far
        elif kind in ("keyword", "end", "start"):
            arg = rng.choice(bank)
        constraints.append((kind, arg))
    return topic, constraints


def respond(topic: str, constraints: list[Constraint], rng: random.Random) -> str:
    """A response about `topic` edited to satisfy every constraint."""
    args = dict(constraints)
    source = TOPICS[topic].split()
    start = rng.randrange(len(source) // 2)
    length = int(args["words"]) if "words" in args else rng.randint(6, 14)
    words = (source[start:] + source)[:length]
    if "keyword" in args and args["keyword"] not in words:
        slot = len(words) // 2 if len(words) > 2 else 0
        # never overwrite the first/last slot that start/end constraints will claim
        words[slot] = args["keyword"]
    if "start" in args:
        words[0] = args["start"]
    if "end" in args:
        words[-1] = args["end"]
    if "keyword" in args and args["keyword"] not in words:  # overwritten by start/end: put it back
        words.insert(1, args["keyword"])
        if "words" in args:
            del words[-2]
    if "no_commas" not in args and len(words) > 4 and rng.random() < 0.5:
        words[len(words) // 2 - 1] += ","
    text = " ".join(words) + "."
    text = text[0].upper() + text[1:]
    if "upper" in args:
        text = text.upper()
    if "lower" in args:
        text = text.lower()
    return text


@dataclass
class InstructTask:
    """Short writing prompts with verifiable constraints; score 1.0 when all constraints hold."""

    name: str = "instruct"
    seed: int = 0
    kind: Literal["generate", "choice"] = "generate"
    sizes: tuple[int, int] = (20000, 1000)  # items in (train, test)

    def count(self, split: Split) -> int:
        """How many items the split holds."""
        return self.sizes[0] if split == "train" else self.sizes[1]

    def items(self, split: Split, n: int) -> list[Item]:
        def make(rng: random.Random, i: int) -> tuple[str, Item]:
            topic, constraints = _draw(rng)
            key = topic + "|" + ";".join(f"{k}={a}" for k, a in constraints)
            rules = " ".join(DESCRIBE[k].format(arg=a) for k, a in constraints)
            plan = " ".join(f"- {DESCRIBE[k].format(arg=a)}" for k, a in constraints)
            item = Item(
                id=f"instruct:{key}",
                prompt=f"Write a few words about {topic}. {rules}",
                solution=f"Topic: {topic}. Rules: {plan}",
                answer=respond(topic, constraints, rng),
                meta={"constraints": [list(c) for c in constraints], "topic": topic},
            )
            return key, item

        return take_stream(
            make, lambda key: split_of("instruct", str(key)) == split, n, self.seed, f"{self.name}/{split}",
            limit=self.count(split),
        )

    def extract(self, completion: str) -> str | None:
        return extract_answer(completion)

    def score(self, item: Item, completion: str) -> float:
        constraints = [tuple(c) for c in item.meta["constraints"]]
        return 1.0 if all(check(self.extract(completion), constraints)) else 0.0  # type: ignore[arg-type]

    def reward(self, item: Item, completion: str) -> float:
        return self.score(item, completion)


def instruct_task(seed: int = 0, **options: object) -> InstructTask:
    return InstructTask(name="instruct", seed=seed, **options)  # type: ignore[arg-type]
