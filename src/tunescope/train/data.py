"""Training data: the problem pool, the shared prompt stream and the per-method datasets.

The pool comes from a `tunescope.world` task (`task=maths`) or from a file (`dataset=PATH`, JSONL or a
Hugging Face dataset directory with `prompt`, `solution`, `answer` columns, or a benchmark file read
by its spec, `dataset_spec=gsm8k`), through the one file task of `tunescope.filetasks`. Items whose prompt or
gold completion is longer than the budget's limits are dropped for both methods (the study applied
a 4,096-token filter to OpenR1-Math the same way).

The *prompt stream* is the order in which problems are seen: a fresh seeded permutation of the pool
per epoch, concatenated and cut to `max_steps * prompts_per_step` items. Both trainers read it with a
sequential sampler, so step t of SFT and step t of GRPO see exactly `stream[t*P:(t+1)*P]`:
SFT as (prompt, gold completion) pairs, GRPO as prompts whose samples the task's reward scores.
Both use the same chat-formatted prompt: `SYSTEM_PROMPT`, then the problem as the user turn.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from tunescope.errors import UserError
from tunescope.world.task import SYSTEM_PROMPT, Item, format_completion


def load_pool(task: str | None, dataset: str | None, n: int, task_options: dict[str, Any] | None = None,
              columns: dict[str, str] | None = None, dataset_spec: str | None = None,
              need_solution: bool = False, skip: int = 0) -> tuple[Any, list[Item]]:
    """(task object, training items `skip` to `skip + n`) for a task name or a dataset path.

    A dataset is read by the one file task (`tunescope.filetasks`): with `dataset_spec` (a shipped
    benchmark such as gsm8k, or a spec file) by that spec, else as prompt/solution/answer columns.
    `need_solution`: every item must have a gold solution (SFT trains on it).
    """
    if dataset is not None:
        from tunescope.filetasks import FileTask, load_spec, shipped_specs, training_spec

        if dataset_spec is not None:
            spec_file = shipped_specs().get(dataset_spec, dataset_spec)
            if not Path(spec_file).is_file():
                raise UserError(f"dataset_spec: {dataset_spec!r} is neither a shipped benchmark "
                                f"({', '.join(shipped_specs())}) nor a spec file")
            spec = load_spec(spec_file, data=dataset)
            spec.split = "train"  # a saved DatasetDict or a hub id: train on its train split
            t: Any = FileTask(spec)
        else:
            t = FileTask(training_spec(dataset, columns))
    else:
        from tunescope.world import get_task

        t = get_task(task, **(task_options or {}))
    items = t.items("train", skip + n)[skip:]
    if not items:
        raise UserError(f"task {t.name} gave no training items" + (f" after skipping {skip}" if skip else ""))
    if need_solution:
        missing = next((it for it in items if not it.solution.strip()), None)
        if missing is not None:
            raise UserError(f"dataset {dataset or task}: item {missing.id} has no gold solution, which SFT trains "
                            "on; add a solution column (or map one with dataset_columns)")
    return t, items


def prompt_messages(item: Item) -> list[dict[str, str]]:
    """The chat prompt both methods use."""
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": item.prompt}]


def gold_message(item: Item) -> list[dict[str, str]]:
    """The SFT target: the gold solution and answer as one assistant turn."""
    return [{"role": "assistant", "content": format_completion(item.solution, item.answer)}]


def filter_by_length(items: list[Item], tokenizer: Any, max_prompt: int, max_completion: int) -> list[Item]:
    """Items whose chat prompt and gold completion fit the budget's token limits."""
    keep = []
    for it in items:
        p = tokenizer.apply_chat_template(prompt_messages(it), add_generation_prompt=True, tokenize=True,
                                          return_dict=False)
        c = tokenizer(format_completion(it.solution, it.answer), add_special_tokens=False)["input_ids"]
        if len(p) <= max_prompt and len(c) + 1 <= max_completion:  # + 1: end-of-turn token
            keep.append(it)
    if not keep:
        raise UserError(f"no training item fits max_prompt_length={max_prompt} and max_completion_length="
                        f"{max_completion}; raise them")
    return keep


def prompt_stream(items: list[Item], length: int, seed: int) -> list[Item]:
    """`length` items: seeded permutations of `items`, one per epoch, concatenated."""
    rng = random.Random(seed)
    out: list[Item] = []
    while len(out) < length:
        order = list(items)
        rng.shuffle(order)
        out.extend(order)
    return out[:length]


def sft_dataset(stream: list[Item]):  # -> datasets.Dataset
    """Conversational prompt-completion rows: TRL masks the loss to the completion (assistant) tokens."""
    import datasets

    return datasets.Dataset.from_list([{"prompt": prompt_messages(it), "completion": gold_message(it),
                                        "item_id": it.id} for it in stream])


def grpo_dataset(stream: list[Item]):  # -> datasets.Dataset
    """Conversational prompts; `item_id` reaches the reward functions as a dataset column."""
    import datasets

    return datasets.Dataset.from_list([{"prompt": prompt_messages(it), "item_id": it.id} for it in stream])
