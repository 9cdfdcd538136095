"""The pretraining corpus: deterministic, mixed, chat-formatted, and free of test items."""

from __future__ import annotations

import itertools
import re

import pytest

from tunescope.errors import UserError
from tunescope.world import get_task
from tunescope.world.corpus import (
    SIZES,
    TAGS,
    example_text,
    pretraining_examples,
    tokenizer_texts,
    total_examples,
)
from tunescope.world.facts import ATTRIBUTES, build_world
from tunescope.world.formula24 import evaluate
from tunescope.world.game24 import RULES, Rule, number_puzzles
from tunescope.world.maths import MAX_START, MAX_VALUE, direct_solution, step_options
from tunescope.world.splits import split_of
from tunescope.world.task import SYSTEM_PROMPT, extract_answer, format_completion


@pytest.fixture(scope="module")
def default_corpus() -> list[dict]:
    return pretraining_examples(0, "default")


def test_deterministic_and_seeded():
    a, b = pretraining_examples(0, "smoke"), pretraining_examples(0, "smoke")
    assert a == b
    assert a != pretraining_examples(1, "smoke")


def test_sizes_and_counts():
    smoke = pretraining_examples(0, "smoke")
    assert len(smoke) == total_examples(SIZES["smoke"])
    assert len(pretraining_examples(0, 300)) == 300
    assert len(pretraining_examples(0, 20000)) == 20000
    with pytest.raises(UserError, match="smoke"):
        pretraining_examples(0, "huge")
    with pytest.raises(UserError):
        pretraining_examples(0, 0)


def test_mixture_and_chat_format(default_corpus):
    domains = {e["domain"] for e in default_corpus}
    assert domains >= {"facts", "maths", "game24", "numbers24", "instruct", "chat:maths", "chat:game24",
                       "chat:game24_ood", "chat:game24_other", "chat:facts", "chat:twohop", "chat:instruct"}
    assert [e["domain"] for e in default_corpus[:50]] != sorted(e["domain"] for e in default_corpus[:50])  # shuffled
    chars = sum(len(example_text(e)) for e in default_corpus)
    assert 1_000_000 < chars < 12_000_000  # roughly 0.3-3M tokens
    for e in default_corpus:
        if "messages" in e:
            roles = [m["role"] for m in e["messages"]]
            assert roles == ["system", "user", "assistant"]
            assert e["messages"][0]["content"] == SYSTEM_PROMPT
            reply = e["messages"][2]["content"]
            assert reply.startswith("<think>") and extract_answer(reply)


def test_chat_examples_score_one_under_their_task(default_corpus):
    tasks = {}
    by_prompt = {}
    for name in ("maths", "game24", "facts", "twohop", "instruct"):
        tasks[name] = get_task(name)
        for it in itertools.chain(tasks[name].items("train", min(300, tasks[name].count("train")))):
            by_prompt[it.prompt] = (name, it)
    checked = 0
    for e in default_corpus:
        if "messages" in e and e["messages"][1]["content"] in by_prompt:
            name, it = by_prompt[e["messages"][1]["content"]]
            assert tasks[name].score(it, e["messages"][2]["content"]) == 1.0
            checked += 1
    assert checked > 100


def _cards_of(text: str) -> tuple[str, ...]:
    """The hand of a card document ("Cards 7, Q, K, 2. …") or prompt ("Cards: 7, Q, K, 2. …")."""
    return tuple(sorted(text.removeprefix("Cards").removeprefix(":").strip().split(". ")[0].split(", ")))


def test_no_test_item_reaches_the_corpus(default_corpus):
    seen_prompts = set()  # every prompt the corpus shows: chat user turns and task-shaped documents
    seen_hands = set()  # every hand of a card document or card chat, under any rule
    ood_rule_hands = set()  # the hands shown under the OOD suite's rule
    puzzles = set()
    drills = []
    ood_wording = RULES["ood"].text()
    for e in default_corpus:
        text = example_text(e)
        if "messages" in e:
            prompt = e["messages"][1]["content"]
            seen_prompts.add(prompt)
            if prompt.startswith("Cards: "):
                seen_hands.add(_cards_of(prompt))
        elif e["domain"] == "maths":
            seen_prompts.add(e["text"].split("\n")[0])
        elif e["domain"] == "instruct":
            seen_prompts.add(e["text"].split("\n")[0].removeprefix("Instruction: "))
        elif e["domain"] == "game24":
            seen_hands.add(_cards_of(e["text"]))
        elif e["domain"] == "numbers24":
            puzzles.add(tuple(sorted(map(int, e["text"].split(". ")[0].removeprefix("Make 24 from ").split(", ")))))
        elif e["domain"] == "arithmetic":
            drills += [eq.strip() + "." for eq in e["text"].split(".") if eq.strip()]
        if ood_wording in text:
            ood_rule_hands.add(_cards_of(e["messages"][1]["content"] if "messages" in e else e["text"]))
    assert len(seen_prompts) > 3000 and len(seen_hands) > 300 and len(puzzles) > 500
    for name in ("maths", "maths_hard", "game24", "game24_ood", "facts", "twohop", "instruct"):
        task = get_task(name)
        test = task.items("test", task.count("test"))
        assert not {it.prompt for it in test} & seen_prompts, name
        if name.startswith("game24"):  # no test hand under any rule; its values may recur elsewhere
            assert not {tuple(sorted(it.meta["cards"])) for it in test} & seen_hands, name
    ood = get_task("game24_ood")
    ood_train = {tuple(sorted(it.meta["cards"])) for it in ood.items("train", ood.count("train"))}
    assert ood_rule_hands and ood_rule_hands <= ood_train  # the OOD rule is shown on its train hands only
    assert puzzles <= set(number_puzzles("train"))  # number puzzles: the train multisets only
    maths = get_task("maths")
    one_step = {it.solution for it in maths.items("test", maths.count("test")) if it.meta["steps"] == 1}
    assert len(one_step) > 100 and not one_step & set(drills)  # drills never show a one-step test problem


def test_card_documents_and_puzzles_are_right(default_corpus):
    """Every card document's formula uses its cards' values under its stated rule and makes 24;
    every number puzzle's formula uses its numbers and makes 24."""
    checked = 0
    for e in default_corpus:
        if e["domain"] == "game24":
            cards = e["text"].removeprefix("Cards ").split(". ")[0].split(", ")
            rule_text = e["text"].split(". ")[1]
            m = re.fullmatch(r"A counts as 1 and (?:J, Q and K count as (\d+)|J counts as (\d+), Q as (\d+) and K as (\d+))",
                             rule_text)
            assert m, rule_text
            faces = (int(m[1]),) * 3 if m[1] else (int(m[2]), int(m[3]), int(m[4]))
            rule = Rule(faces)
            assert rule.text() == rule_text
            formula = e["text"].rsplit("A solution is ", 1)[1].removesuffix("=24.")
            value, used = evaluate(formula)
            assert value == 24 and sorted(used) == sorted(rule.value(c) for c in cards), e["text"]
            checked += 1
        elif e["domain"] == "numbers24":
            numbers = [int(x) for x in e["text"].split(". ")[0].removeprefix("Make 24 from ").split(", ")]
            value, used = evaluate(e["text"].rsplit("A solution is ", 1)[1].removesuffix("=24."))
            assert value == 24 and sorted(used) == sorted(numbers)
    assert checked == sum(e["domain"] == "game24" for e in default_corpus) > 1000


def test_maths_chats_mix_direct_answers_with_worked_solutions(default_corpus):
    config = SIZES["default"]
    chats = {d: [e["messages"] for e in default_corpus if e["domain"] == d] for d in ("chat:maths", "chat:maths_direct")}
    assert len(chats["chat:maths"]) == config.chat_maths and len(chats["chat:maths_direct"]) == config.chat_maths_direct
    maths = get_task("maths")
    by_prompt = {it.prompt: it for it in maths.items("train", maths.count("train"))}
    for domain, worked in (("chat:maths", True), ("chat:maths_direct", False)):
        for m in chats[domain]:
            item = by_prompt[m[1]["content"]]  # a train problem
            gold = item.solution if worked else direct_solution(item)
            assert m[2]["content"] == format_completion(gold, item.answer)
            assert maths.score(item, m[2]["content"]) == 1.0
    prompts = {d: {m[1]["content"] for m in c} for d, c in chats.items()}
    assert not prompts["chat:maths"] & prompts["chat:maths_direct"]  # no problem is shown both ways


def test_direct_card_chats_read_the_rule_and_skip_the_steps():
    """`chat_game24*_direct`: the values under the stated rule, then the gold formula, no steps;
    under every rule, never a test hand, and each one correct under the suites' judge."""
    from dataclasses import replace

    from tunescope.world.game24 import Game24Task, card_value, is_test_hand
    from tunescope.world.game24 import direct_solution as play_direct
    from tunescope.world.task import Item

    config = SIZES["smoke"]
    corpus = pretraining_examples(0, "smoke")
    counts = (config.chat_game24_direct, config.chat_game24_ood_direct, config.chat_game24_other_direct)
    off = replace(config, chat_game24_direct=0, chat_game24_ood_direct=0, chat_game24_other_direct=0)
    assert min(counts) > 0 and len(corpus) == len(pretraining_examples(0, config=off)) + sum(counts)
    for domain, n, rule in (("chat:game24_direct", counts[0], "id"), ("chat:game24_ood_direct", counts[1], "ood"),
                            ("chat:game24_other_direct", counts[2], None)):
        chats = [e["messages"] for e in corpus if e["domain"] == domain]
        assert len(chats) == n, domain
        for m in chats:
            think, answer = m[2]["content"].removeprefix("<think>").split("</think>")
            values = [int(v) for v in think.removeprefix("The values are ").rstrip(".").split(", ")]
            cards = m[1]["content"].removeprefix("Cards: ").split(". ")[0].split(", ")
            assert not is_test_hand(cards) and "In order" not in think
            if rule:
                assert values == [card_value(c, rule) for c in cards]
            item = Item(id="x", prompt="", solution="", answer="", meta={"values": values, "cards": cards})
            assert think == play_direct(item) and Game24Task().outcome(item, answer) == "correct"


def test_drills_are_right_and_cover_the_maths_fact_table(default_corpus):
    drills = [eq.strip() for e in default_corpus if e["domain"] == "arithmetic" for eq in e["text"].split(".")]
    table = {(a, op, k) for a in range(MAX_VALUE + 1) for op in "+-*/" for k in step_options(a, op)}
    one_step_test = {(a, op, k) for a, op, k in table
                     if 2 <= a <= MAX_START and op in "+-" and split_of("maths", f"{a}{op}{k}") == "test"}
    seen = set()
    for eq in filter(None, drills):
        lhs, rhs = eq.split(" = ")
        a, op, k = lhs.split(" ")
        assert int(rhs) == {"+": int(a) + int(k), "-": int(a) - int(k), "*": int(a) * int(k),
                            "/": int(a) // int(k)}[op] and (op != "/" or int(a) % int(k) == 0)
        seen.add((int(a), op, int(k)))
    assert seen == table - one_step_test  # the whole table but the one-step test problems


def test_every_fact_is_stated(default_corpus):
    text = "\n".join(e["text"] for e in default_corpus if e["domain"] == "facts")
    world = build_world()
    for entity, attrs in world.items():
        for attribute in ATTRIBUTES:
            assert attrs[attribute] in text
        assert text.count(entity) >= len(ATTRIBUTES) * SIZES["default"].fact_passes


def test_tokenizer_texts_cover_prompt_tags_and_held_out_wording():
    texts = list(tokenizer_texts(0))
    joined = "\n".join(texts)
    assert texts[0] == SYSTEM_PROMPT
    assert all(tag in joined for tag in TAGS)
    assert "J counts as 11" in joined
