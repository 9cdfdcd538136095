"""The Task interface: one object owns a domain's prompt, gold answer, extraction, scoring and reward.

Pretraining text, SFT targets, GRPO rewards and evaluation all come from the same Task, so they
cannot drift apart. Every completion uses one format, for SFT and GRPO alike:

    <think>step-by-step reasoning</think><answer>final answer</answer>

and the system prompt `SYSTEM_PROMPT` asks for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

SYSTEM_PROMPT = (
    "You are a careful assistant. Think step by step inside <think> </think>, "
    "then give only the final answer inside <answer> </answer>."
)

Split = Literal["train", "test"]

_ANSWER_RE = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.DOTALL)
_FORMAT_RE = re.compile(r"^\s*<think>.*?</think>\s*<answer>.*?</answer>\s*$", re.DOTALL)


@dataclass(frozen=True)
class Item:
    """One problem. `id` is unique and stable within its task; train and test never share one."""

    id: str
    prompt: str  # the user turn
    solution: str  # gold reasoning, the body of <think>
    answer: str  # gold final answer, the body of <answer>
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. choices, cards, constraints, level


def format_completion(solution: str, answer: str) -> str:
    """The gold assistant turn in the shared format."""
    return f"<think>{solution}</think><answer>{answer}</answer>"


def extract_answer(completion: str) -> str | None:
    """The body of the last <answer> tag (an unclosed final tag counts: truncated output), stripped."""
    found = _ANSWER_RE.findall(completion or "")
    if not found:
        return None
    text = found[-1].strip()
    return text or None


def follows_format(completion: str) -> bool:
    """True when the completion is exactly <think>…</think><answer>…</answer>."""
    return bool(_FORMAT_RE.match(completion or ""))


@runtime_checkable
class Task(Protocol):
    """What every domain provides. Suites are tasks; see `tunescope.world.TASKS`."""

    name: str
    kind: Literal["generate", "choice"]  # "choice": items carry meta["choices"], answer is a letter

    def count(self, split: Split) -> int:
        """How many items the split holds."""
        ...

    def items(self, split: Split, n: int) -> list[Item]:
        """The first `n` items of a split, deterministic for the task's seed."""
        ...

    def extract(self, completion: str) -> str | None:
        """The model's final answer (None when there is none)."""
        ...

    def score(self, item: Item, completion: str) -> float:
        """1.0 when correct, 0.0 otherwise."""
        ...

    def reward(self, item: Item, completion: str) -> float:
        """The RL reward for this completion."""
        ...


@runtime_checkable
class Diagnosed(Protocol):
    """A task that also says *how* a completion went wrong: one of `DIAGNOSES` per completion.
    Evaluation records it per sample and scores the share of each class (`outcome:<class>`)."""

    DIAGNOSES: tuple[str, ...]

    def diagnose(self, item: Item, completion: str) -> str:
        """The completion's class, one of `DIAGNOSES`."""
        ...

