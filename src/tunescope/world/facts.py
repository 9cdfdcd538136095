"""Knowledge: a fixed world of fictional people and four-option questions about it.

The world (invented names, so no pretrained model can know it) gives each person a city, a
profession, a favourite colour, a pet and a mentor (another person). The pretraining text
states every fact in several paraphrases (`fact_sentences`); the questions never appear there.

Suites
    facts   one fact per question, four options (the MMLU analogue)
    twohop  two facts chained through the mentor, "In which city does the mentor of X live?"
            (the GPQA analogue: hard for a small model, near chance is expected)

Both are kind "choice": `meta["choices"]` holds the four option texts, the answer is a letter
(single facts also carry `meta["cloze"]`: each option stated as the fact, the continuation that
log-likelihood scoring compares; two-hop questions have none, since stating the answer needs the
intermediate entity)
A-D, and `extract` reads the letter from <answer> so the same items work in "generated
letter" mode. Distractors are drawn from the same attribute's values, so exactly one option
is right. The world is fixed (WORLD_SEED) whatever the task seed: the seed only orders items
and shuffles options.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from tunescope.world.splits import rng_for, split_of, take_finite
from tunescope.world.task import Item, Split, extract_answer

WORLD_SEED = 20240601
N_ENTITIES = 80  # small enough that a ~3M-parameter organism memorises every fact in minutes
LETTERS = "ABCD"

CITIES = ["Brenhold", "Calvaro", "Dunmere", "Eskavel", "Fordaine", "Glimmerton", "Harrowick",
          "Istrano", "Jorvale", "Kestrel Bay", "Lunmoor", "Marisport"]
PROFESSIONS = ["baker", "pilot", "teacher", "gardener", "doctor", "painter", "sailor", "farmer",
               "librarian", "carpenter", "singer", "engineer"]
COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "white", "black", "grey", "pink"]
PETS = ["cat", "dog", "parrot", "rabbit", "turtle", "goat", "owl", "hamster", "horse", "fox"]
VALUES = {"city": CITIES, "profession": PROFESSIONS, "colour": COLOURS, "pet": PETS}
ATTRIBUTES = ["city", "profession", "colour", "pet", "mentor"]

_FIRST = ["ta", "vo", "mi", "ren", "sa", "lo", "ka", "dri", "el", "bo", "zu", "fen", "ny", "or", "qui", "ar"]
_LAST = ["mor", "lund", "vas", "tel", "quin", "dro", "bel", "sk", "ard", "ven", "holt", "ric", "gan", "wy"]


def _an(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


# Paraphrases used in pretraining text; {e} entity, {v} value.
TEMPLATES = {
    "city": ["{e} lives in {v}.", "{e} has a home in {v}.", "The city where {e} lives is {v}.",
             "{e} is a resident of {v}.", "You can find {e} in the city of {v}."],
    "profession": ["{e} works as {av}.", "{e} is {av} by trade.", "By profession, {e} is {av}.",
                   "The job of {e} is {v}.", "Everyone knows {e} as {av}."],
    "colour": ["The favourite colour of {e} is {v}.", "{e} likes the colour {v} best.",
               "{e} loves the colour {v}.", "Of all colours, {e} prefers {v}."],
    "pet": ["{e} keeps {av} as a pet.", "The pet of {e} is {av}.", "{e} owns a pet {v}.",
            "At home, {e} looks after {av}."],
    "mentor": ["The mentor of {e} is {v}.", "{e} was trained by {v}.", "{v} is the mentor of {e}.",
               "{e} learned the craft from {v}, a mentor."],
}
QUESTIONS = {
    "city": "In which city does {e} live?",
    "profession": "What is the profession of {e}?",
    "colour": "What is the favourite colour of {e}?",
    "pet": "What pet does {e} keep?",
    "mentor": "Who is the mentor of {e}?",
}
TWOHOP_QUESTIONS = {
    "city": "In which city does the mentor of {e} live?",
    "profession": "What is the profession of the mentor of {e}?",
    "colour": "What is the favourite colour of the mentor of {e}?",
    "pet": "What pet does the mentor of {e} keep?",
}


@lru_cache(maxsize=4)
def build_world(n_entities: int = N_ENTITIES, seed: int = WORLD_SEED) -> dict[str, dict[str, str]]:
    """name -> {attribute: value}; mentors are other people in the world."""
    rng = rng_for("world", seed)
    names: list[str] = []
    while len(names) < n_entities:
        first = "".join(rng.choice(_FIRST) for _ in range(2)).capitalize()
        last = (rng.choice(_FIRST) + rng.choice(_LAST)).capitalize()
        name = f"{first} {last}"
        if name not in names:
            names.append(name)
    world = {n: {a: rng.choice(v) for a, v in VALUES.items()} for n in names}
    for n in names:
        world[n]["mentor"] = rng.choice([m for m in names if m != n])
    return world


def fact_sentence(entity: str, attribute: str, value: str, template: int) -> str:
    """One paraphrase (index into TEMPLATES[attribute], taken modulo its length)."""
    options = TEMPLATES[attribute]
    return options[template % len(options)].format(e=entity, v=value, av=_an(value))


def fact_sentences(world: dict[str, dict[str, str]], rng) -> list[str]:
    """Every fact of the world once, each in a random paraphrase (call repeatedly for variety)."""
    return [
        fact_sentence(e, a, attrs[a], rng.randrange(100)) for e, attrs in world.items() for a in ATTRIBUTES
    ]


def _choice_prompt(question: str, choices: list[str]) -> str:
    options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
    return f"{question}\n{options}\nAnswer with the letter of the correct option."


@dataclass
class FactsTask:
    """Four-option questions about the world; `hops` = 1 (facts) or 2 (twohop)."""

    name: str = "facts"
    hops: int = 1
    seed: int = 0
    kind: Literal["generate", "choice"] = "choice"

    def _keys(self) -> list[tuple[str, str]]:
        attrs = ATTRIBUTES if self.hops == 1 else list(TWOHOP_QUESTIONS)
        return [(e, a) for e in build_world() for a in attrs]

    def _item(self, entity: str, attribute: str) -> Item:
        world = build_world()
        if self.hops == 1:
            value = world[entity][attribute]
            question = QUESTIONS[attribute].format(e=entity)
            reasoning = fact_sentence(entity, attribute, value, 0)
        else:
            mentor = world[entity]["mentor"]
            value = world[mentor][attribute]
            question = TWOHOP_QUESTIONS[attribute].format(e=entity)
            reasoning = (
                f"{fact_sentence(entity, 'mentor', mentor, 0)} {fact_sentence(mentor, attribute, value, 0)}"
            )
        pool = list(world) if attribute == "mentor" else VALUES[attribute]
        rng = rng_for("options", self.name, entity, attribute, self.seed)
        choices = rng.sample([v for v in pool if v != value and v != entity], 3) + [value]
        rng.shuffle(choices)
        letter = LETTERS[choices.index(value)]
        return Item(
            id=f"{self.name}:{entity}:{attribute}",
            prompt=_choice_prompt(question, choices),
            solution=f"{reasoning} That is option {letter}.",
            answer=letter,
            meta={"choices": choices, "question": question, "attribute": attribute, "entity": entity,
                  **({"cloze": [f"<think>{fact_sentence(entity, attribute, c, 0)}" for c in choices]}
                     if self.hops == 1 else {})},
        )

    def count(self, split: Split) -> int:
        """How many items the split holds (the suite is finite)."""
        return len([k for k in self._keys() if split_of(self.name, "|".join(k)) == split])

    def items(self, split: Split, n: int) -> list[Item]:
        pool = [k for k in self._keys() if split_of(self.name, "|".join(k)) == split]
        return [self._item(*k) for k in take_finite(pool, n, self.seed, f"{self.name}/{split}")]

    def extract(self, completion: str) -> str | None:
        answer = extract_answer(completion)
        if answer is None:
            return None
        m = re.search(r"(?<![A-Za-z])([ABCD])(?![A-Za-z])", answer)
        return m.group(1) if m else None

    def score(self, item: Item, completion: str) -> float:
        return 1.0 if self.extract(completion) == item.answer else 0.0

    def reward(self, item: Item, completion: str) -> float:
        return self.score(item, completion)


def facts_task(seed: int = 0, **options: object) -> FactsTask:
    return FactsTask(name="facts", hops=1, seed=seed, **options)  # type: ignore[arg-type]


def twohop_task(seed: int = 0, **options: object) -> FactsTask:
    return FactsTask(name="twohop", hops=2, seed=seed, **options)  # type: ignore[arg-type]
