"""Training data: the problem pool, the shared prompt stream and the per-method datasets.

The pool comes from a `tunescope.world` task (`task=maths`) or from a file (`dataset=PATH`, JSONL or a
Hugging Face dataset directory with `prompt`, `solution`, `answer` columns). Items whose prompt or
gold completion is longer than the budget's limits are dropped for both methods (the study applied
a 4,096-token filter to OpenR1-Math the same way).

The *prompt stream* is the order in which problems are seen: a fresh seeded permutation of the pool
per epoch, concatenated and cut to `max_steps * prompts_per_step` items. Both trainers read it with a
sequential sampler, so step t of SFT and step t of GRPO see exactly `stream[t*P:(t+1)*P]`:
SFT as (prompt, gold completion) pairs, GRPO as prompts whose samples the task's reward scores.
Both use the same chat-formatted prompt: `SYSTEM_PROMPT`, then the problem as the user turn.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tunescope.errors import UserError
from tunescope.world.task import SYSTEM_PROMPT, Item, Split, extract_answer, follows_format, format_completion

FIELDS = ("prompt", "solution", "answer")


@dataclass
class FileTask:
    """A Task over rows of a file: maths-style scoring (math-verify) plus an optional format bonus."""

    name: str
    rows: list[Item]
    format_reward: float = 0.2
    kind: Literal["generate", "choice"] = "generate"

    def items(self, split: Split, n: int) -> list[Item]:
        return self.rows[:n]

    def extract(self, completion: str) -> str | None:
        return extract_answer(completion)

    def score(self, item: Item, completion: str) -> float:
        from tunescope.world.maths import math_equal

        return 1.0 if math_equal(item.answer, self.extract(completion)) else 0.0

    def reward(self, item: Item, completion: str) -> float:
        return self.score(item, completion) + (self.format_reward if follows_format(completion) else 0.0)


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file or a Hugging Face dataset directory (saved with `save_to_disk`)."""
    path = Path(path)
    if not path.exists() and len(str(path).split("/")) == 2 and not str(path).endswith(".jsonl"):
        import datasets  # a hub id such as open-r1/OpenR1-Math-220k (needs network or the HF cache)

        try:
            return [dict(r) for r in datasets.load_dataset(str(path), split="train")]
        except Exception as e:  # noqa: BLE001 - any hub/cache failure is the user's to fix
            raise UserError(f"cannot load dataset {path} ({type(e).__name__}); pass a JSONL file, a saved "
                            f"dataset directory or a reachable hub id") from None
    if path.is_dir():
        import datasets

        try:
            ds = datasets.load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as e:
            raise UserError(f"{path} is not a Hugging Face dataset directory ({e}); save it with save_to_disk "
                            f"or pass a JSONL file") from None
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise UserError(f"dataset {path} has splits {list(ds)} but no 'train' split")
            ds = ds["train"]
        return [dict(r) for r in ds]
    if not path.is_file():
        raise UserError(f"dataset {path} does not exist; pass a JSONL file or a dataset directory")
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"{path} line {i} is not valid JSON") from None
        if not isinstance(row, dict):
            raise UserError(f"{path} line {i} must be a JSON object with {', '.join(FIELDS)}")
        rows.append(row)
    return rows


def file_task(path: str | Path, columns: dict[str, str] | None = None) -> FileTask:
    """A FileTask from a dataset file; a row missing a field is an error naming row and field.

    `columns` maps our fields to the dataset's column names, e.g. {"prompt": "problem"}.
    """
    columns = columns or {}
    bad = sorted(set(columns) - set(FIELDS) - {"id"})
    if bad:
        raise UserError(f"dataset_columns: unknown field {bad[0]!r}; map {', '.join(FIELDS)} or id")
    items = []
    for i, raw in enumerate(read_rows(path)):
        row = {f: raw.get(columns.get(f, f)) for f in (*FIELDS, "id")}
        for f in FIELDS:
            if not isinstance(row[f], str) or not row[f].strip():
                raise UserError(f"dataset {path}: row {i} has no '{columns.get(f, f)}' (need non-empty text "
                                f"in {', '.join(columns.get(g, g) for g in FIELDS)})")
        items.append(Item(id=str(row["id"] if row["id"] is not None else f"row-{i}"), prompt=row["prompt"], solution=row["solution"],
                          answer=row["answer"]))
    if not items:
        raise UserError(f"dataset {path} has no rows")
    if len({it.id for it in items}) != len(items):
        raise UserError(f"dataset {path}: the 'id' column has duplicates; make ids unique or drop the column")
    return FileTask(name=f"file:{Path(path).name}", rows=items)


def load_pool(task: str | None, dataset: str | None, n: int, task_options: dict[str, Any] | None = None,
              columns: dict[str, str] | None = None) -> tuple[Any, list[Item]]:
    """(task object, first `n` training items) for a task name or a dataset path."""
    if dataset is not None:
        t = file_task(dataset, columns)
    else:
        from tunescope.world import get_task

        t = get_task(task, **(task_options or {}))
    items = t.items("train", n)
    if not items:
        raise UserError(f"task {t.name} gave no training items")
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
