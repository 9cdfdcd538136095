"""The 24-point card game (Chu et al. 2025, "SFT memorizes, RL generalizes"; BRIEF study 2).

Four cards from A..K (A = 1). Use each card's value exactly once with + - * / and brackets to
make exactly 24. In-distribution rule: J, Q, K count as 10. Out-of-distribution rule: J, Q, K
count as 11, 12, 13, and every hand holds at least one face card. Unsolvable hands are dropped
(the original redraws them; enumerating all hands and keeping the solvable ones is equivalent).

Answer format (one line inside <answer>), card values in the order shown in the prompt:

    cards: 3, 8, 8, 3; formula: 8/(3-8/3)=24

The solver, the safe formula evaluator and the judge live in `tunescope.world.formula24`.
Outcomes and the shaped reward of the original code:

    correct        +5   well-formed, numbers = card values (as a multiset), value exactly 24
    partial        +1   well-formed, right numbers, value is not 24
    no_solution    -1   no answer, or an answer without a formula
    wrong_numbers  -2   well-formed, but the numbers are not the card values
    illegal        -3   does not parse (bad syntax, unary minus, division by zero)

Gold reasoning (the <think> body) maps each card to its value under the stated rule, sorts the
values and lists the formula's steps:

    The values are 13, 5, 4, 2. In order: 2, 4, 5, 13. 13 - 5 = 8. ...

Rules are stated in the prompt. Besides the two suites' rules, `Rule` covers any face values
(J, Q, K each worth 1-13): the pretraining corpus shows card games under many such rules and
plain number puzzles over 1-13 (`number_puzzles`), so the organism, like a real base model, has
arithmetic over every value the OOD rule uses and a habit of reading the rule (docs/world.md).

Deviation: the original judged the stated cards as well; here only the formula is judged.
The split key is the hand (the sorted multiset of ranks), so train and test never share a hand.
Under the in-distribution rule J, Q and K are all worth 10, so a test hand holding a face card
can share its values with a train hand that holds another face card (K, 5, 5, 4 and J, 5, 5, 4):
as in the original study, where hands were drawn at random, in-distribution accuracy mixes
recall of arithmetic seen in training with new arithmetic, while the OOD rule (J, Q, K distinct)
makes every OOD hand new arithmetic. `values_seen_in_train(item)` tells the two kinds apart.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cache
from typing import Literal

from tunescope.world.formula24 import FormulaError, evaluate, formula_of, formula_steps, judge, solve
from tunescope.world.splits import rng_for, split_of, take_finite
from tunescope.world.task import Item, Split, extract_answer

RANKS = ["A", "2", "3", "4", "5", "6", "7", "8", "9", "10", "J", "Q", "K"]
FACES = {"J", "Q", "K"}
SHAPED = {"correct": 5.0, "partial": 1.0, "no_solution": -1.0, "wrong_numbers": -2.0, "illegal": -3.0}


@dataclass(frozen=True)
class Rule:
    """How the face cards count: the values of J, Q and K (A is always 1, number cards their number)."""

    faces: tuple[int, int, int]

    def value(self, rank: str) -> int:
        if rank == "A":
            return 1
        if rank in FACES:
            return self.faces["JQK".index(rank)]
        return int(rank)

    def text(self) -> str:
        """The rule as the prompt states it."""
        j, q, k = self.faces
        if j == q == k:
            return f"A counts as 1 and J, Q and K count as {j}"
        return f"A counts as 1 and J counts as {j}, Q as {q} and K as {k}"


RULES = {"id": Rule((10, 10, 10)), "ood": Rule((11, 12, 13))}  # the two suites' rules


def card_value(rank: str, rule: str | Rule) -> int:
    """Value of a rank under rule 'id' (J/Q/K = 10), 'ood' (J/Q/K = 11/12/13) or any `Rule`."""
    return (RULES[rule] if isinstance(rule, str) else rule).value(rank)


# ----------------------------------------------------------------------------- task


@cache
def _hands(rule: str) -> dict[str, list[tuple[str, ...]]]:
    """All solvable hands (rank multisets) of a rule, split by the hash of the hand."""
    out: dict[str, list[tuple[str, ...]]] = {"train": [], "test": []}
    for hand in itertools.combinations_with_replacement(RANKS, 4):
        if rule == "ood" and not FACES & set(hand):
            continue
        if solve([card_value(r, rule) for r in hand]) is None:
            continue
        out[split_of(f"game24-{rule}-hand", ",".join(hand))].append(hand)
    return out


@cache
def _train_values(rule: str) -> frozenset[tuple[int, ...]]:
    return frozenset(tuple(sorted(card_value(r, rule) for r in hand)) for hand in _hands(rule)["train"])


def values_seen_in_train(item: Item) -> bool:
    """Whether some train hand of the item's rule has the same card values (another face card)."""
    return tuple(sorted(item.meta["values"])) in _train_values(item.meta["rule"])


@cache
def number_puzzles(split: Split) -> list[tuple[int, ...]]:
    """Solvable multisets of four values in 1-13 (sorted), split by the multiset: the plain
    "make 24 from these numbers" puzzles of the pretraining corpus (train) and their held-out rest."""
    return [v for v in itertools.combinations_with_replacement(range(1, 14), 4)
            if solve(list(v)) is not None and split_of("numbers24", ",".join(map(str, v))) == split]


@cache
def test_hands() -> frozenset[tuple[str, ...]]:
    """The test hands of both suites (rank multisets, sorted as `RANKS` orders them)."""
    return frozenset(_hands("id")["test"]) | frozenset(_hands("ood")["test"])


def is_test_hand(cards: list[str] | tuple[str, ...]) -> bool:
    """Whether a hand, in any order, is a test hand of either suite (the corpus shows none)."""
    return tuple(sorted(cards, key=RANKS.index)) in test_hands()


@cache
def free_hands() -> list[tuple[str, ...]]:
    """Hands that are a test hand of neither suite: the only hands shown under other rules."""
    return [h for h in itertools.combinations_with_replacement(RANKS, 4) if h not in test_hands()]


def reasoning(values: list[int], formula: str) -> str:
    """The gold reasoning for a hand's values: the values as shown, sorted, then the formula's steps."""
    shown, ordered = ", ".join(map(str, values)), ", ".join(map(str, sorted(values)))
    return f"The values are {shown}. In order: {ordered}. " + " ".join(f"{e}." for e in formula_steps(formula))


def direct_solution(item: Item) -> str:
    """The reasoning of a player who reads the rule, then answers from memory without the steps."""
    return f"The values are {', '.join(map(str, item.meta['values']))}."


def puzzle_text(values: list[int]) -> str:
    """A number puzzle as the corpus shows it (values in the given order; solvable)."""
    formula = solve(values)
    assert formula is not None
    ordered = ", ".join(map(str, sorted(values)))
    steps = " ".join(f"{e}." for e in formula_steps(formula))
    return f"Make 24 from {', '.join(map(str, values))}. In order: {ordered}. {steps} A solution is {formula}=24."


def hand_item(name: str, hand: tuple[str, ...], rule: Rule, seed: int, rule_name: str = "other") -> Item | None:
    """The item for a hand under a rule (cards shown in a seeded order), or None when unsolvable."""
    shown = list(hand)
    rng_for("deal", name, seed, hand).shuffle(shown)
    values = [rule.value(r) for r in shown]
    formula = solve(values)
    if formula is None:
        return None
    prompt = (
        f"Cards: {', '.join(shown)}. {rule.text()}. "
        "Use each card's value exactly once with + - * / and brackets to make 24. "
        "Answer as: cards: <values>; formula: <formula>=24"
    )
    value_list = ", ".join(map(str, values))
    return Item(
        id=f"{name}:{''.join(sorted(hand))}",
        prompt=prompt,
        solution=reasoning(values, formula),
        answer=f"cards: {value_list}; formula: {formula}=24",
        meta={"cards": shown, "values": values, "rule": rule_name, "faces": rule.faces},
    )


def other_rule_items(n: int, seed: int) -> list[Item]:
    """n solvable items under random rules other than the suites' two, on `free_hands` only.

    Half the rules give the three faces one value (1-13 except 10), half three values drawn
    independently from 1-13 (never 11, 12, 13 in that order), so reading the rule is a skill
    the corpus rewards and neither suite's rule is the only one a face card can follow.
    """
    rng = rng_for("other-rules", seed)
    hands = [h for h in free_hands() if FACES & set(h)]
    out: list[Item] = []
    while len(out) < n:
        if rng.random() < 0.5:
            v = rng.choice([x for x in range(1, 14) if x != 10])
            faces = (v, v, v)
        else:
            faces = (rng.randint(1, 13), rng.randint(1, 13), rng.randint(1, 13))
        if faces in (RULES["id"].faces, RULES["ood"].faces):
            continue
        item = hand_item("other", rng.choice(hands), Rule(faces), rng.randrange(1 << 30))
        if item is not None:
            out.append(item)
    return out


@dataclass
class Game24Task:
    """24-point hands under one rule; `shaped=True` gives the original shaped reward instead of 0/1."""

    name: str = "game24"
    rule: str = "id"  # "id": J/Q/K = 10; "ood": J/Q/K = 11/12/13, at least one face card
    seed: int = 0
    shaped: bool = False
    kind: Literal["generate", "choice"] = "generate"

    def _item(self, hand: tuple[str, ...]) -> Item:
        item = hand_item(self.name, hand, RULES[self.rule], self.seed, self.rule)
        assert item is not None  # _hands keeps solvable hands only
        return item

    def count(self, split: Split) -> int:
        """How many items the split holds (the suite is finite)."""
        return len(_hands(self.rule)[split])

    def items(self, split: Split, n: int) -> list[Item]:
        hands = take_finite(_hands(self.rule)[split], n, self.seed, f"{self.name}/{split}")
        return [self._item(h) for h in hands]

    def extract(self, completion: str) -> str | None:
        return formula_of(extract_answer(completion))

    def outcome(self, item: Item, completion: str) -> str:
        return judge(item.meta["values"], extract_answer(completion))

    DIAGNOSES = ("correct", "partial", "faces_as_10", "wrong_numbers", "illegal", "no_solution")

    def diagnose(self, item: Item, completion: str) -> str:
        """`outcome`, with `faces_as_10` split off `wrong_numbers`: the formula uses the hand's values
        under the in-distribution rule (J, Q and K worth 10) where the stated rule values them otherwise,
        the way SFT on that rule teaches a model to misread another (`tunescope.world.task.Diagnosed`)."""
        outcome = self.outcome(item, completion)
        if outcome != "wrong_numbers" or item.meta.get("faces", RULES["id"].faces) == RULES["id"].faces:
            return outcome
        as_ten = sorted(RULES["id"].value(c) for c in item.meta["cards"])
        try:
            _, numbers = evaluate(self.extract(completion) or "")
        except (FormulaError, ZeroDivisionError):
            return outcome
        return "faces_as_10" if sorted(numbers) == as_ten else outcome

    def score(self, item: Item, completion: str) -> float:
        return 1.0 if self.outcome(item, completion) == "correct" else 0.0

    def reward(self, item: Item, completion: str) -> float:
        if self.shaped:
            return SHAPED[self.outcome(item, completion)]
        return self.score(item, completion)


def game24_task(seed: int = 0, **options: object) -> Game24Task:
    return Game24Task(name="game24", rule="id", seed=seed, **options)  # type: ignore[arg-type]


def game24_ood_task(seed: int = 0, **options: object) -> Game24Task:
    return Game24Task(name="game24_ood", rule="ood", seed=seed, **options)  # type: ignore[arg-type]
