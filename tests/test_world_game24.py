"""24-point game: solver against brute force, verifier on hand-made answers, shaped reward."""

from __future__ import annotations

import itertools
import random
from fractions import Fraction

import pytest

from tunescope.world.formula24 import FormulaError, evaluate, judge, solve
from tunescope.world.game24 import (
    RULES,
    SHAPED,
    Rule,
    card_value,
    free_hands,
    game24_ood_task,
    game24_task,
    is_test_hand,
    number_puzzles,
    other_rule_items,
    puzzle_text,
    values_seen_in_train,
)
from tunescope.world.task import format_completion


def _brute_force_solvable(values: list[int]) -> bool:
    """Independent check: every ordering x every bracket shape x every operator triple."""
    def ap(op: str, a: Fraction | None, b: Fraction | None) -> Fraction | None:
        if a is None or b is None:
            return None
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        return None if b == 0 else a / b

    for a, b, c, d in set(itertools.permutations(Fraction(v) for v in values)):
        for o1, o2, o3 in itertools.product("+-*/", repeat=3):
            shapes = [
                ap(o3, ap(o2, ap(o1, a, b), c), d),  # ((a b) c) d
                ap(o3, ap(o1, a, ap(o2, b, c)), d),  # (a (b c)) d
                ap(o2, ap(o1, a, b), ap(o3, c, d)),  # (a b) (c d)
                ap(o1, a, ap(o3, ap(o2, b, c), d)),  # a ((b c) d)
                ap(o1, a, ap(o2, b, ap(o3, c, d))),  # a (b (c d))
            ]
            if Fraction(24) in shapes:
                return True
    return False


def test_solver_matches_brute_force_on_random_hands():
    rng = random.Random(7)
    hands = [[rng.randint(1, 13) for _ in range(4)] for _ in range(60)] + [[3, 3, 8, 8], [1, 1, 1, 1], [1, 5, 5, 5]]
    for values in hands:
        formula = solve(values)
        assert (formula is not None) == _brute_force_solvable(values), values
        if formula is not None:
            value, numbers = evaluate(formula)
            assert value == 24 and sorted(numbers) == sorted(values)


def test_solvable_count_over_all_hands_is_the_known_1362():
    # 1820 multisets of four values in 1..13; 1362 of them make 24 (a standard figure)
    hands = list(itertools.combinations_with_replacement(range(1, 14), 4))
    assert len(hands) == 1820
    assert sum(solve(list(h)) is not None for h in hands) == 1362


def test_known_hard_hands():
    assert evaluate(solve([3, 3, 8, 8]))[0] == 24  # 8/(3-8/3)
    assert evaluate(solve([1, 5, 5, 5]))[0] == 24  # 5*(5-1/5)
    assert solve([1, 1, 1, 1]) is None


@pytest.mark.parametrize(
    "answer, outcome",
    [
        ("cards: 3, 8, 8, 3; formula: 8/(3-8/3)=24", "correct"),
        ("8 / (3 - 8 / 3)", "correct"),
        ("cards: 3, 8, 8, 3; formula: (3+3)*8-8=24", "partial"),  # value 40
        ("cards: 3, 8, 8, 3; formula: 8*3*(8/8)=24", "wrong_numbers"),  # reuses 8, drops a 3
        ("cards: 3, 8, 8, 3; formula: 8*3=24", "wrong_numbers"),  # missing cards
        ("cards: 3, 8, 8, 3; formula: 8/(3-8/3=24", "illegal"),  # unbalanced
        ("cards: 3, 8, 8, 3; formula: 8//3*3+8=24", "illegal"),
        ("cards: 3, 8, 8, 3; formula: -3+8*3+3=24", "illegal"),  # unary minus
        ("cards: 3, 8, 8, 3; formula: 8/(3-3)*8=24", "illegal"),  # division by zero
        ("cards: 3, 8, 8, 3; formula: 8/(3-8/3)=25", "illegal"),
        ("cards: 3, 8, 8, 3; formula: 8^3", "illegal"),
        ("cards: 3, 8, 8, 3; formula:", "no_solution"),
        (None, "no_solution"),
    ],
)
def test_judge_hand_made(answer, outcome):
    assert judge([3, 8, 8, 3], answer) == outcome


def test_evaluate_is_exact_and_never_evaluates_code():
    assert evaluate("1/3+1/3+1/3") == (Fraction(1), [1, 3, 1, 3, 1, 3])
    assert evaluate("2*(3+4)") == (Fraction(14), [2, 3, 4])
    for bad in ["__import__('os')", "", "()", "3 4", "(3))"]:
        with pytest.raises(FormulaError):
            evaluate(bad)


def test_task_scores_and_shaped_rewards_from_completions():
    task = game24_task(shaped=True)
    item = task.items("test", 1)[0]
    values = item.meta["values"]
    gold = format_completion(item.solution, item.answer)
    assert task.score(item, gold) == 1.0 and task.reward(item, gold) == SHAPED["correct"] == 5.0
    assert task.reward(item, "") == -1.0
    assert task.reward(item, "<think>let me see") == -1.0  # truncated before the answer
    assert task.reward(item, "<think>x</think><answer>formula: (" + "+".join(map(str, values))) == -3.0  # truncated
    assert task.reward(item, "<answer>formula: 1+1</answer>") == -2.0
    plain = game24_task()
    assert plain.reward(item, gold) == 1.0 and plain.reward(item, "") == 0.0


@pytest.mark.parametrize("factory", [game24_task, game24_ood_task])
def test_all_gold_answers_are_correct_and_splits_disjoint(factory):
    task = factory()
    train = task.items("train", task.count("train"))
    test = task.items("test", task.count("test"))
    for item in train[:200] + test:
        assert task.score(item, format_completion(item.solution, item.answer)) == 1.0
    hand = lambda it: tuple(sorted(it.meta["cards"]))  # noqa: E731
    assert not {hand(i) for i in train} & {hand(i) for i in test}
    assert len(train) + len(test) == len({hand(i) for i in train + test})
    if task.rule == "ood":
        assert all({"J", "Q", "K"} & set(i.meta["cards"]) for i in train + test)
        assert any(v > 10 for i in test for v in i.meta["values"])
    else:
        assert all(v <= 10 for i in train + test for v in i.meta["values"])


def test_values_seen_in_train_finds_the_same_values_under_other_tens():
    """An ID test hand's values appear in train exactly when swapping its 10-valued ranks
    (10, J, Q, K) for others gives a train hand; OOD hands (J, Q, K distinct) are all new."""
    task = game24_task()
    train = {tuple(sorted(i.meta["cards"])) for i in task.items("train", task.count("train"))}
    tens = ["10", "J", "Q", "K"]
    seen = 0
    for item in task.items("test", task.count("test")):
        others = [c for c in item.meta["cards"] if c not in tens]
        n_tens = 4 - len(others)
        variants = {tuple(sorted(others + list(t))) for t in itertools.combinations_with_replacement(tens, n_tens)}
        expected = bool(variants & train)
        assert values_seen_in_train(item) == expected, item.meta["cards"]
        seen += expected
    assert 0 < seen < task.count("test")
    ood = game24_ood_task()
    assert not any(values_seen_in_train(i) for i in ood.items("test", ood.count("test")))


def test_rules_value_cards_and_state_themselves():
    assert [card_value(r, "id") for r in ("A", "7", "J", "Q", "K")] == [1, 7, 10, 10, 10]
    assert [card_value(r, "ood") for r in ("A", "7", "J", "Q", "K")] == [1, 7, 11, 12, 13]
    assert RULES["id"].text() == "A counts as 1 and J, Q and K count as 10"
    assert RULES["ood"].text() == "A counts as 1 and J counts as 11, Q as 12 and K as 13"
    assert [Rule((2, 9, 1)).value(r) for r in ("J", "Q", "K", "10")] == [2, 9, 1, 10]


def test_number_puzzles_split_every_solvable_multiset_once():
    train, test = number_puzzles("train"), number_puzzles("test")
    assert not set(train) & set(test)
    assert len(train) + len(test) == 1362  # every solvable multiset of 1-13 (test above)
    assert all(_brute_force_solvable(list(v)) for v in random.Random(0).sample(train + test, 60))
    value, used = evaluate(puzzle_text([13, 5, 4, 2]).split("A solution is ")[1].removesuffix("=24."))
    assert value == 24 and sorted(used) == [2, 4, 5, 13]


def test_free_hands_are_the_hands_no_suite_tests():
    test = {tuple(sorted(it.meta["cards"])) for f in (game24_task, game24_ood_task)
            for it in f().items("test", f().count("test"))}
    free = {tuple(sorted(h)) for h in free_hands()}
    assert not free & test and len(free) + len(test) == 1820  # all rank multisets
    assert all(is_test_hand(h) for h in test) and not any(is_test_hand(h) for h in free)


def test_other_rule_items_are_solved_under_their_own_rule_on_free_hands():
    items = other_rule_items(300, seed=3)
    assert items == other_rule_items(300, seed=3) and items != other_rule_items(300, seed=4)
    faces = {it.meta["faces"] for it in items}
    assert len(faces) > 50 and not faces & {RULES["id"].faces, RULES["ood"].faces}
    assert sum(len(set(f)) == 1 for f in faces) > 5  # some uniform rules, most mixed
    for it in items:
        rule = Rule(it.meta["faces"])
        assert it.meta["values"] == [rule.value(c) for c in it.meta["cards"]]
        assert rule.text() in it.prompt and not is_test_hand(it.meta["cards"])
        assert {"J", "Q", "K"} & set(it.meta["cards"])
        assert judge(it.meta["values"], it.answer) == "correct"


def test_diagnose_splits_faces_read_as_10_off_wrong_numbers():
    task = game24_ood_task()
    item = next(it for it in task.items("test", task.count("test"))
                if set(it.meta["cards"]) & {"J", "Q", "K"} and solve([card_value(c, "id") for c in it.meta["cards"]]))
    as_ten = [card_value(c, "id") for c in item.meta["cards"]]
    misread = format_completion("x", f"formula: {solve(as_ten)}=24")  # right under J/Q/K = 10, not the stated rule
    assert task.outcome(item, misread) == "wrong_numbers" and task.diagnose(item, misread) == "faces_as_10"
    assert task.diagnose(item, format_completion(item.solution, item.answer)) == "correct"
    assert task.diagnose(item, format_completion("x", "formula: 1+2=24")) == "wrong_numbers"
    assert task.diagnose(item, "no answer") == "no_solution"
    ident = game24_task()
    id_item = ident.items("test", 1)[0]
    assert ident.diagnose(id_item, format_completion("x", "formula: 1+2=24")) == "wrong_numbers"
    assert set(task.DIAGNOSES) == set(SHAPED) | {"faces_as_10"}
