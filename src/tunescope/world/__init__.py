"""The synthetic world: four domains as Task objects, and the pretraining corpus built from them.

Suites (pick by name with `get_task`):
    maths       word problems, levels 1-3 (in-domain)          maths_hard  levels 4-5 (held out)
    game24      24-point game, J/Q/K = 10 (in-distribution)    game24_ood  J/Q/K = 11/12/13
    facts       single-fact 4-option questions (MMLU analogue) twohop      two-fact questions (GPQA analogue)
    instruct    verifiable-constraint prompts (IFEval analogue)
"""

from __future__ import annotations

from collections.abc import Callable

from tunescope.errors import UserError
from tunescope.world.facts import facts_task, twohop_task
from tunescope.world.game24 import game24_ood_task, game24_task
from tunescope.world.instruct import instruct_task
from tunescope.world.maths import maths_hard_task, maths_task
from tunescope.world.task import SYSTEM_PROMPT, Item, Task, extract_answer, format_completion

TASKS: dict[str, Callable[..., Task]] = {
    "maths": maths_task,
    "maths_hard": maths_hard_task,
    "game24": game24_task,
    "game24_ood": game24_ood_task,
    "facts": facts_task,
    "twohop": twohop_task,
    "instruct": instruct_task,
}


def get_task(name: str, seed: int = 0, **options: object) -> Task:
    """The suite called `name`; `options` are task fields (e.g. shaped=True, format_reward=0.0)."""
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; known suites: {', '.join(TASKS)}")
    try:
        return TASKS[name](seed=seed, **options)
    except TypeError as e:
        raise UserError(f"bad option for task {name!r}: {e}") from None


__all__ = ["SYSTEM_PROMPT", "TASKS", "Item", "Task", "extract_answer", "format_completion", "get_task"]
