"""The synthetic world's tasks: determinism, disjoint splits, scoring, gold answers, bad input."""

from __future__ import annotations

import re
import threading

import pytest

from tunescope.errors import UserError
from tunescope.world import TASKS, get_task
from tunescope.world.facts import LETTERS, TWOHOP_QUESTIONS, VALUES, build_world
from tunescope.world.instruct import check
from tunescope.world.maths import MAX_ADD, MAX_START, MAX_VALUE, direct_solution, math_equal
from tunescope.world.task import Task, format_completion

SAMPLE = {"maths": 400, "maths_hard": 200, "game24": 200, "game24_ood": 150, "facts": 70,
          "twohop": 60, "instruct": 400}


def test_registry_names_and_unknown_suite():
    assert set(TASKS) == {"maths", "maths_hard", "game24", "game24_ood", "facts", "twohop", "instruct"}
    with pytest.raises(UserError, match="known suites: maths"):
        get_task("mmlu")
    with pytest.raises(UserError, match="bad option"):
        get_task("maths", shaped=True)


@pytest.mark.parametrize("name", list(TASKS))
def test_same_seed_same_items_and_gold_scores_one(name):
    task = get_task(name, seed=3)
    assert isinstance(task, Task) and task.name == name
    items = task.items("test", SAMPLE[name])
    assert items == get_task(name, seed=3).items("test", SAMPLE[name])
    assert len({i.id for i in items}) == len(items)
    assert items[:5] == task.items("test", 5)  # first n of one stream
    for item in items:
        completion = format_completion(item.solution, item.answer)
        assert task.score(item, completion) == 1.0, item
        assert task.reward(item, completion) >= 1.0
        assert task.score(item, "") == 0.0


@pytest.mark.parametrize("name", list(TASKS))
def test_train_and_test_never_share_an_item(name):
    task = get_task(name)
    n_train, n_test = min(task.count("train"), 5000), task.count("test")
    train, test = task.items("train", n_train), task.items("test", n_test)
    assert not {i.id for i in train} & {i.id for i in test}
    assert not {i.prompt for i in train} & {i.prompt for i in test}
    # other seeds draw other items but the split of every item stays the same
    other = get_task(name, seed=11).items("train", min(n_train, 500))
    assert not {i.id for i in other} & {i.id for i in test}


def test_too_many_items_is_a_user_error():
    with pytest.raises(UserError, match="only"):
        get_task("facts").items("test", 100000)
    with pytest.raises(UserError, match="only"):
        get_task("game24").items("train", 5000)
    for name in TASKS:  # "all items" is a fixed, finite count for every suite, never a hang
        task = get_task(name)
        with pytest.raises(UserError, match=f"only {task.count('test')} exist"):
            task.items("test", 10**9)


# ----------------------------------------------------------------------------- maths


@pytest.mark.parametrize(
    "pred, ok",
    [("14", True), ("14.0", True), (" 14 ", True), ("$14$", True), ("\\boxed{14}", True),
     ("15", False), ("", False), (None, False), ("fourteen", False), ("1", False), ("-14", False), ("14 + 1", False)],
)
def test_math_verify_scoring(pred, ok):
    assert math_equal("14", pred) is ok


def test_maths_completions_right_wrong_malformed_truncated():
    task = get_task("maths")
    item = task.items("test", 1)[0]
    good = f"<think>{item.solution}</think><answer>{item.answer}</answer>"
    wrong = f"<think>{item.solution}</think><answer>{int(item.answer) + 1}</answer>"
    assert task.score(item, good) == 1.0 and task.reward(item, good) == pytest.approx(1.2)
    assert task.score(item, wrong) == 0.0 and task.reward(item, wrong) == pytest.approx(0.2)
    assert task.score(item, f"<answer>{item.answer}") == 1.0  # truncated after the number
    assert task.reward(item, f"<answer>{item.answer}") == 1.0  # ...but no format bonus
    assert task.score(item, f"{item.solution} so {item.answer}") == 0.0  # no answer tag
    assert task.score(item, "<think>" + item.solution) == 0.0  # truncated before the answer
    assert get_task("maths", format_reward=0.0).reward(item, good) == 1.0


def test_math_verify_from_a_worker_thread():
    results: list[bool] = []
    worker = threading.Thread(target=lambda: results.extend([math_equal("14", "14.0"), math_equal("14", "13")]))
    worker.start()
    worker.join()
    assert results == [True, False]


def test_maths_levels_and_hard_levels():
    easy = get_task("maths").items("test", 300)
    hard = get_task("maths_hard").items("test", 100)
    assert {i.meta["steps"] for i in easy} == {1, 2, 3}
    assert {i.meta["steps"] for i in hard} == {4, 5}
    for item in easy + hard:  # the solution's equations chain to the answer
        eqs = item.solution.split(". ")
        assert len(eqs) == item.meta["steps"]
        assert eqs[-1].rstrip(".").split(" = ")[1] == item.answer


_EQUATION = re.compile(r"^(\d+) ([-+*/]) (\d+) = (\d+)$")


@pytest.mark.parametrize("name", ["maths", "maths_hard"])
def test_maths_arithmetic_stays_inside_the_small_fact_table(name):
    task = get_task(name)
    items = task.items("test", task.count("test")) + task.items("train", 600)
    for item in items:
        eqs = [_EQUATION.match(e.rstrip(".")) for e in item.solution.split(". ")]
        assert all(eqs), item.solution
        first = int(eqs[0].group(1))
        assert 2 <= first <= MAX_START and item.prompt.split(" ")[2] == str(first)  # "Mira has 12 ..."
        value = first
        for m in eqs:
            a, op, k, c = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
            assert a == value and 0 <= c <= MAX_VALUE
            if op in "+-":
                assert 1 <= k <= MAX_ADD and c == (a + k if op == "+" else a - k)
            else:
                assert k in (2, 3) and c == (a * k if op == "*" else a / k)
            value = c
        assert str(value) == item.answer


def test_direct_solution_is_the_answer_without_working():
    task = get_task("maths")
    for item in task.items("test", 50):
        completion = format_completion(direct_solution(item), item.answer)
        assert task.score(item, completion) == 1.0
        assert "=" not in direct_solution(item) and item.answer in direct_solution(item)


# ----------------------------------------------------------------------------- facts


@pytest.mark.parametrize("name", ["facts", "twohop"])
def test_choice_items_have_exactly_one_correct_option(name):
    world = build_world()
    task = get_task(name)
    for item in task.items("train", task.count("train")):  # the whole split (328 / 256 questions)
        choices = item.meta["choices"]
        assert len(choices) == 4 == len(set(choices))
        entity, attribute = item.meta["entity"], item.meta["attribute"]
        holder = world[entity]["mentor"] if name == "twohop" else entity
        truth = world[holder][attribute]
        assert [c == truth for c in choices].count(True) == 1
        assert LETTERS[choices.index(truth)] == item.answer
        pool = list(world) if attribute == "mentor" else VALUES[attribute]
        assert set(choices) <= set(pool)
        for letter, text in zip(LETTERS, choices):
            assert f"{letter}. {text}" in item.prompt
    assert set(TWOHOP_QUESTIONS) <= set(VALUES)


def test_choice_extraction_generated_letter_mode():
    task = get_task("facts")
    item = task.items("test", 1)[0]
    wrong = next(x for x in LETTERS if x != item.answer)
    assert task.extract(f"<answer>{item.answer}</answer>") == item.answer
    assert task.extract(f"<answer>({item.answer})</answer>") == item.answer
    assert task.extract(f"<answer>{item.answer}. {item.meta['choices'][0]}</answer>") == item.answer
    assert task.score(item, f"<answer>{wrong}</answer>") == 0.0
    assert task.extract("<answer>Dog</answer>") is None  # a word that merely starts with D is not D
    assert task.extract("") is None


def test_world_is_fixed_and_mentors_are_people():
    world = build_world()
    assert world is build_world() and len(world) == 80
    assert all(attrs["mentor"] in world and attrs["mentor"] != name for name, attrs in world.items())


# ----------------------------------------------------------------------------- instruct


@pytest.mark.parametrize(
    "text, constraints, expected",
    [
        ("THE SEA IS WIDE.", [("upper", "")], [True]),
        ("The sea is wide.", [("upper", "")], [False]),
        ("123", [("upper", "")], [False]),  # no letters at all
        ("the sea is wide.", [("lower", "")], [True]),
        ("one two three four five", [("words", "5")], [True]),
        ("one two three four", [("words", "5")], [False]),
        ("Fish swim in the sea.", [("keyword", "sea")], [True]),
        ("Fish swim in the seaside.", [("keyword", "sea")], [False]),
        ("Fish swim, in the SEA!", [("end", "sea"), ("no_commas", "")], [True, False]),
        ("Fish swim in the sea now.", [("end", "sea"), ("start", "fish")], [False, True]),
        (None, [("no_commas", "")], [False]),
    ],
)
def test_instruction_checkers(text, constraints, expected):
    assert check(text, constraints) == expected


def test_instruct_scores_all_constraints():
    task = get_task("instruct")
    items = task.items("test", 300)
    assert {k for i in items for k, _ in i.meta["constraints"]} >= {"upper", "words", "keyword", "end", "no_commas"}
    item = next(i for i in items if len(i.meta["constraints"]) >= 2)
    assert task.score(item, f"<answer>{item.answer}</answer>") == 1.0
    assert task.score(item, "<answer>X, y</answer>") == 0.0  # breaks every kind of constraint
    assert all(not ok for i in items for ok in check("X, y", [tuple(c) for c in i.meta["constraints"]]))
