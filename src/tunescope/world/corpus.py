"""The pretraining corpus of the model organism: a shuffled mixture over the four domains.

Two kinds of example:
    {"text": ...}        plain documents: paraphrased facts about each person, worked maths
                         solutions, solved 24-point hands under stated rules, plain "make 24
                         from these numbers" puzzles over 1-13, instruction/response pairs and
                         arithmetic drills;
    {"messages": [...]}  chat examples (system, user, assistant = format_completion(...)), so the
                         base organism already knows the answer format, like an instruct model.

Most maths chats (`chat_maths_direct`) answer without the working ("The answer is 14."), the
rest (`chat_maths`) with the worked solution that the maths documents always show. The organism
thus has the skill (worked solutions, right about as often as its arithmetic) but not the habit
in chat: a base whose in-domain errors are a choice of strategy that SFT on gold solutions and
a reward on the answer can both change (docs/organism.md). The 24-point chats are built the same
way: half show the steps, half state the card values under the rule and answer from memory
(`game24.direct_solution`), so SFT on worked in-distribution hands first teaches a habit that
carries over to the OOD rule.

Everything task-shaped comes from train-split items only; test items (and the held-out suite
maths_hard) never appear. The 24-point part gives the organism what a real base model brings
to Jin et al.'s study: card games under many stated rules (the in-distribution J/Q/K = 10, the
OOD suite's J/Q/K = 11/12/13 on that suite's train hands only, and random other rules on hands
that are a test hand of neither suite) and number puzzles over every value 1-13, split by the
value multiset (`game24.number_puzzles`). No test hand of either suite is shown under any rule.
Arithmetic drills skip equations whose one-step problem is a test item. The facts are the exception by design: every fact of the world is stated,
because the knowledge suites test recall of pretraining knowledge, while the questions
themselves are split train/test.

Tune the mixture with `CorpusConfig` (counts per source); `SIZES` holds the named presets.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, replace

from tunescope.errors import UserError
from tunescope.world import game24
from tunescope.world.facts import ATTRIBUTES, build_world, fact_sentence
from tunescope.world.game24 import is_test_hand, number_puzzles, other_rule_items, puzzle_text
from tunescope.world.maths import MAX_START, MAX_VALUE, apply, direct_solution, step_options
from tunescope.world.splits import rng_for, split_of
from tunescope.world.task import SYSTEM_PROMPT, Item, format_completion

TAGS = ["<think>", "</think>", "<answer>", "</answer>"]


@dataclass(frozen=True)
class CorpusConfig:
    """How many examples of each source the corpus holds (finite pools repeat when asked for more)."""

    fact_passes: int = 28  # each pass: one document per person, every fact once, random paraphrases
    maths_docs: int = 3000  # worked solutions of train word problems (levels 1-3)
    arithmetic_docs: int = 2500  # drills: 8 one-step equations per document, from the maths fact table
    game24_docs: int = 2000  # solved train hands (J/Q/K = 10)
    game24_ood_docs: int = 1500  # solved train hands of the OOD suite under its rule (J/Q/K = 11/12/13)
    game24_other_docs: int = 1500  # solved hands under other stated rules (`game24.other_rule_items`)
    numbers24_docs: int = 4000  # "make 24 from these numbers" puzzles over 1-13 (`game24.number_puzzles`)
    instruct_docs: int = 2000  # instruction / response pairs
    chat_maths: int = 700  # chat examples per suite, train split only; maths: worked solutions
    chat_maths_direct: int = 650  # maths chats answered without working (maths.direct_solution)
    chat_game24: int = 1000
    chat_game24_ood: int = 500  # OOD-rule chats on the OOD suite's train hands
    chat_game24_other: int = 500  # chats under other rules
    # 24-point chats answered without the steps (`game24.direct_solution`: the values, then the
    # formula), per rule, as many as the worked ones: greedy decoding works the steps on about a
    # quarter of the hands, so SFT on worked ID hands first teaches a habit that carries over to
    # the OOD rule (docs/organism.md)
    chat_game24_direct: int = 1000
    chat_game24_ood_direct: int = 500
    chat_game24_other_direct: int = 500
    chat_facts: int = 1500  # ~5 passes over the 328 train questions
    chat_twohop: int = 200
    chat_instruct: int = 3500

    def scaled(self, factor: float) -> CorpusConfig:
        """Every count times `factor` (at least 1 each, except a source that is off)."""
        return replace(self, **{k: max(1, round(v * factor)) if v else 0 for k, v in self.__dict__.items()})


SIZES: dict[str, CorpusConfig] = {
    "smoke": CorpusConfig().scaled(0.05),
    "default": CorpusConfig(),
}


def _train_items(name: str, n: int, seed: int) -> list[Item]:
    """n train items of a suite, cycling through the whole split when it holds fewer.

    Card suites keep only hands that are a test hand of neither suite: the two suites split
    hands independently, so an ID train hand may be an OOD test hand and vice versa.
    """
    from tunescope.world import get_task

    task = get_task(name, seed)
    available = task.count("train")  # type: ignore[attr-defined]
    if name.startswith("game24"):
        pool = [it for it in task.items("train", available) if not is_test_hand(it.meta["cards"])]
    elif n <= available:
        return task.items("train", n)
    else:
        pool = task.items("train", available)
    return [pool[i % len(pool)] for i in range(n)]


def _chat(item: Item, solution: str | None = None) -> dict:
    """A chat example answering `item` with its gold solution (or `solution` in its place)."""
    return {
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": item.prompt},
            {"role": "assistant", "content": format_completion(solution or item.solution, item.answer)},
        ]
    }


def _fact_docs(passes: int, rng: random.Random) -> list[str]:
    world = build_world()
    docs = []
    for _ in range(passes):
        for entity, attrs in world.items():
            sentences = [fact_sentence(entity, a, attrs[a], rng.randrange(100)) for a in ATTRIBUTES]
            rng.shuffle(sentences)
            docs.append(" ".join(sentences))
    return docs


def _arithmetic_docs(n: int, rng: random.Random) -> list[str]:
    """Equations drawn uniformly from the maths fact table, never a one-step test problem."""
    table = [(a, op, k) for a in range(MAX_VALUE + 1) for op in "+-*/" for k in step_options(a, op)
             if not (2 <= a <= MAX_START and op in "+-" and split_of("maths", f"{a}{op}{k}") == "test")]
    docs = []
    for _ in range(n):
        lines = [f"{a} {op} {k} = {apply(a, op, k)}." for a, op, k in rng.choices(table, k=8)]
        docs.append(" ".join(lines))
    return docs


def _card_doc(item: Item) -> str:
    """A solved hand as a document: the cards, the stated rule, the gold reasoning and formula."""
    rule = item.prompt.split(". ")[1]  # "A counts as 1 and J, Q and K count as 10"
    formula = item.answer.split("formula:")[1].strip()
    return f"Cards {', '.join(item.meta['cards'])}. {rule}. {item.solution} A solution is {formula}."


def total_examples(config: CorpusConfig) -> int:
    """Number of examples a config produces (documents of all fact passes count one each)."""
    counts = dict(config.__dict__)
    return counts.pop("fact_passes") * len(build_world()) + sum(counts.values())


def pretraining_examples(
    seed: int, size: str | int = "default", config: CorpusConfig | None = None
) -> list[dict]:
    """The shuffled pretraining mixture.

    `size` names a preset in SIZES, or is a number of examples: the default mixture scaled to
    slightly more, then cut to exactly that many. `config` overrides both. Every example
    carries a `domain` field naming its source (e.g. "facts", "chat:maths").
    """
    n_total: int | None = None
    if config is None:
        if isinstance(size, int) and not isinstance(size, bool):
            if size < 1:
                raise UserError(f"corpus size must be >= 1 example, got {size}")
            n_total = size
            # a little over, then cut: rounding of per-source counts never leaves it short
            config = SIZES["default"].scaled(1.05 * size / total_examples(SIZES["default"]) + 1e-3)
        elif size in SIZES:
            config = SIZES[size]
        else:
            raise UserError(f"unknown corpus size {size!r}; choose one of: {', '.join(SIZES)} or a count")
    rng = rng_for("corpus", seed)
    texts: list[tuple[str, str]] = []
    texts += [("facts", t) for t in _fact_docs(config.fact_passes, rng)]
    texts += [("arithmetic", t) for t in _arithmetic_docs(config.arithmetic_docs, rng)]
    for it in _train_items("maths", config.maths_docs, seed + 1):
        texts.append(("maths", f"{it.prompt}\n{it.solution} The answer is {it.answer}."))
    card_games = [*_train_items("game24", config.game24_docs, seed + 1),
                  *_train_items("game24_ood", config.game24_ood_docs, seed + 1),
                  *other_rule_items(config.game24_other_docs, seed + 1)]
    texts += [("game24", _card_doc(it)) for it in card_games]
    puzzles = number_puzzles("train")
    for _ in range(config.numbers24_docs):
        values = list(rng.choice(puzzles))
        rng.shuffle(values)
        texts.append(("numbers24", puzzle_text(values)))
    for it in _train_items("instruct", config.instruct_docs, seed + 1):
        texts.append(("instruct", f"Instruction: {it.prompt}\nResponse: {it.answer}"))

    examples: list[dict] = [{"text": t, "domain": d} for d, t in texts]
    for name, n in [
        ("maths", config.chat_maths), ("game24", config.chat_game24),
        ("game24_ood", config.chat_game24_ood), ("facts", config.chat_facts),
        ("twohop", config.chat_twohop), ("instruct", config.chat_instruct),
    ]:
        examples += [{**_chat(it), "domain": f"chat:{name}"} for it in _train_items(name, n, seed)]
    examples += [{**_chat(it), "domain": "chat:game24_other"}
                 for it in other_rule_items(config.chat_game24_other, seed)]
    direct = _train_items("maths", config.chat_maths + config.chat_maths_direct, seed)[config.chat_maths:]
    examples += [{**_chat(it, direct_solution(it)), "domain": "chat:maths_direct"} for it in direct]
    for name, worked, n in [("game24", config.chat_game24, config.chat_game24_direct),
                            ("game24_ood", config.chat_game24_ood, config.chat_game24_ood_direct)]:
        if n:  # the hands after the worked chats' ones
            examples += [{**_chat(it, game24.direct_solution(it)), "domain": f"chat:{name}_direct"}
                         for it in _train_items(name, worked + n, seed)[worked:]]
    if config.chat_game24_other_direct:
        others = other_rule_items(config.chat_game24_other + config.chat_game24_other_direct, seed)
        examples += [{**_chat(it, game24.direct_solution(it)), "domain": "chat:game24_other_direct"}
                     for it in others[config.chat_game24_other:]]
    rng.shuffle(examples)
    return examples if n_total is None else examples[:n_total]


def example_text(example: dict) -> str:
    """All the text of one example (chat turns joined by newlines), e.g. to count characters."""
    if "text" in example:
        return example["text"]
    return "\n".join(m["content"] for m in example["messages"])


def tokenizer_texts(seed: int) -> Iterator[str]:
    """Everything the tokenizer should be trained on: the system prompt, the tags, the default
    corpus, and the train-split prompts of the held-out suites (their rule wording and numbers)."""
    from tunescope.world import get_task

    yield SYSTEM_PROMPT
    yield " ".join(TAGS)
    for example in pretraining_examples(seed, "default"):
        yield example_text(example)
    for name in ("maths_hard", "game24_ood"):
        for it in get_task(name, seed).items("train", 300):
            yield it.prompt
            yield format_completion(it.solution, it.answer)
