"""What a sweep prepares once, before any checkpoint: each suite's items (the final count, with the
first `n` for the other checkpoints), their prompt ids, the multiple-choice contexts and scored
option continuations, and the prompts and gold responses of the KL analysis."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tunescope.errors import UserError
from tunescope.world.task import Item, Task, format_completion

if TYPE_CHECKING:
    from tunescope.evaluate.run import EvalConfig


@dataclass
class Suite:
    """A suite's items and token ids, prepared once per sweep."""

    name: str
    task: Task
    items: list[Item]
    prompts: list[list[int]]  # rendered prompt ids per item
    contexts: list[list[int]] = field(default_factory=list)  # per (item, option): prompt + template prefix
    options: list[list[int]] = field(default_factory=list)  # per (item, option): scored continuation ids
    n: int = 0  # items for a model that is not final (the first n of `items`, which holds the final count)

    def head(self, final: bool) -> Suite:
        """The suite as a model sees it: every item for a final model, the first `n` for the others."""
        if final or self.n >= len(self.items):
            return self
        k = sum(len(it.meta["choices"]) for it in self.items[:self.n]) if self.contexts else 0
        return Suite(self.name, self.task, self.items[:self.n], self.prompts[:self.n], self.contexts[:k],
                      self.options[:k], self.n)


def prepare(name: str, task: Task, tok: Any, cfg: EvalConfig, render: Any) -> Suite:
    """A suite's items for final models (n_final, or n), with the count for the others (n; n_by_suite
    sets both, n_final_by_suite the final count). The others' items are the first ones of the final
    models', so they can be paired."""
    n = cfg.n_by_suite.get(name, cfg.n)
    n_final = cfg.n_final_by_suite.get(name, cfg.n_by_suite.get(name, cfg.n if cfg.n_final is None else cfg.n_final))
    items = test_items(task, 0 if 0 in (n, n_final) else max(n, n_final))
    if not items:
        raise UserError(f"suite '{name}' has no test items")
    s = Suite(name, task, items, [render(tok, it.prompt) for it in items], n=len(items) if n == 0 else n)
    if task.kind == "choice":
        for item, prompt in zip(items, s.prompts):
            if not item.meta.get("choices"):
                raise UserError(f"suite '{name}' item {item.id} is multiple choice but has no meta['choices']")
            texts = [option_text(cfg, item, j) for j in range(len(item.meta["choices"]))]
            cloze = cfg.mc_cloze and bool(item.meta.get("cloze"))
            prefix = shared_prefix(texts) if cloze else cfg.mc_template.partition("{")[0]
            prefix_ids = tok(prefix, add_special_tokens=False)["input_ids"] if prefix else []
            for text in texts:
                s.contexts.append(prompt + prefix_ids)
                s.options.append(tok(text[len(prefix):], add_special_tokens=False)["input_ids"])
    return s


def test_items(task: Task, n: int) -> list[Item]:
    """The first n test items (n = 0: all), at most as many as the split holds."""
    count = task.count("test")
    return task.items("test", min(n or count, count))


def prepare_kl(prepared: list[Suite], tasks: dict[str, Task], tok: Any, cfg: EvalConfig, render: Any):
    """Prompt ids and gold response ids (format_completion + end of sequence) for the KL analysis."""
    if cfg.kl_items == 0:
        return [], []
    if cfg.kl_suite is not None:
        if cfg.kl_suite not in tasks:
            raise UserError(f"kl_suite '{cfg.kl_suite}' is not among the evaluated suites ({', '.join(tasks)})")
        task = tasks[cfg.kl_suite]
    else:
        gen = [s.task for s in prepared if s.task.kind == "generate"]
        if not gen:
            return [], []
        task = gen[0]
    items = test_items(task, cfg.kl_items)
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    ctx = [render(tok, it.prompt) for it in items]
    resp = [tok(format_completion(it.solution, it.answer), add_special_tokens=False)["input_ids"] + eos
            for it in items]
    return ctx, resp


LET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def option_text(cfg: EvalConfig, item: Item, j: int) -> str:
    """The scored continuation of option j: the item's cloze sentence, or mc_template."""
    if cfg.mc_cloze and item.meta.get("cloze"):
        return item.meta["cloze"][j]
    return cfg.mc_template.format(choice=item.meta["choices"][j], letter=LET[j])


def shared_prefix(texts: list[str]) -> str:
    """The part all options share, cut before a space so each option keeps its leading space as BPE
    tokenises it (" purple", not " " + "purple"); it joins the context, not the scored part."""
    common = os.path.commonprefix(texts)
    return common if all(t == common for t in texts) else common[: max(common.rfind(" "), 0)]
