"""BudgetConfig validation, the prompt stream, file datasets and reward functions (no model needed)."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest

from tunescope.errors import UserError
from tunescope.filetasks import FileTask, training_spec
from tunescope.train.config import BudgetConfig, GRPOOptions, RLOOOptions, RLOptions, load_budget
from tunescope.train.data import load_pool, prompt_stream
from tunescope.train.grpo import reward_functions
from tunescope.world.task import Item, format_completion


def test_packaged_budgets_load_and_share_one_value_per_knob():
    for name in ("smoke", "default"):
        cfg = load_budget(name)
        assert cfg.grpo.loss_type == "dr_grpo" and cfg.grpo.beta == 0.0 and cfg.grpo.scale_rewards == "none"
        shared = [f.name for f in dataclasses.fields(RLOptions)]  # RLOO samples and rewards as GRPO does
        assert [getattr(cfg.rloo, k) for k in shared] == [getattr(cfg.grpo, k) for k in shared]
        grpo_shaped = [f.name for f in dataclasses.fields(GRPOOptions)]  # CHORD's GRPO part is GRPO's
        assert [getattr(cfg.chord, k) for k in grpo_shaped] == [getattr(cfg.grpo, k) for k in grpo_shaped]
    cfg = load_budget("smoke", ["lr=3e-5", "grpo.beta=0.04"])
    assert cfg.lr == 3e-5 and cfg.grpo.beta == 0.04


def test_grpo_knobs_reach_trl_config(tmp_path):
    from tunescope.train.grpo import grpo_args
    from tunescope.train.run import common_args

    cfg = load_budget("smoke", ["grpo.mask_truncated_completions=true", "grpo.epsilon=0.1", "grpo.loss_type=dapo"])
    args = grpo_args(cfg, common_args(cfg, tmp_path), 1)
    assert (args.mask_truncated_completions, args.epsilon, args.loss_type) == (True, 0.1, "dapo")
    assert grpo_args(load_budget("smoke"), common_args(cfg, tmp_path), 1).mask_truncated_completions is False


def test_generations_not_dividing_the_batch_names_the_value_to_change():
    with pytest.raises(UserError, match=r"micro_batch_size=8 does not divide; change micro_batch_size \(e.g. to 6\)"):
        BudgetConfig(prompts_per_step=2, grpo=GRPOOptions(num_generations=3), micro_batch_size=8).check_method("grpo")
    # checked for the method that runs: RLOO's own split is fine here, SFT has none
    cfg = BudgetConfig(prompts_per_step=4, micro_batch_size=12, rloo=RLOOOptions(num_generations=3))
    cfg.check_method("rloo")
    cfg.check_method("sft")
    with pytest.raises(UserError, match=r"x grpo.num_generations=4 = 16 completions per step"):
        cfg.check_method("grpo")
    with pytest.raises(UserError, match="num_generations must be at least 2"):
        BudgetConfig(grpo=GRPOOptions(num_generations=1))


@pytest.mark.parametrize("overrides, message", [
    (["dataset=x.jsonl"], "exactly one of task"),
    (["grpo.rewards=[correct, nope]", "grpo.reward_weights=[1, 1]"], "unknown reward nope"),
    (["grpo.reward_weights=[1.0]"], "one weight per reward"),
    (["checkpoint_every=0"], "checkpoint_every"),
    (["micro_batch_size=3", "prompts_per_step=4"], "must divide prompts_per_step"),
    (["lrr=1"], "did you mean 'lr'"),
    (["skip_train_items=-1"], "skip_train_items must be >= 0"),
])
def test_bad_budgets_are_one_line_errors(overrides, message):
    with pytest.raises(UserError, match=message):
        load_budget("smoke", overrides)


def test_checkpoint_steps_are_fixed_fractions_plus_step_zero():
    cfg = BudgetConfig(max_steps=100, checkpoint_every=0.05)
    assert cfg.checkpoint_steps() == list(range(0, 101, 5))
    cfg = BudgetConfig(max_steps=7, checkpoint_every=0.25)
    assert cfg.checkpoint_steps() == [0, 2, 4, 5, 7]  # round(1.75), round(3.5), round(5.25), 7


def test_gradient_accumulation_splits_the_step_over_processes():
    cfg = BudgetConfig(prompts_per_step=8, micro_batch_size=4, grpo=GRPOOptions(num_generations=4))
    assert cfg.gradient_accumulation("sft", 1) == 2 and cfg.gradient_accumulation("sft", 2) == 1
    assert cfg.gradient_accumulation("grpo", 2) == 4  # 32 completions / (2 x 4)
    with pytest.raises(UserError, match="does not split over 3 processes"):
        cfg.gradient_accumulation("sft", 3)


def test_skip_train_items_gives_the_problems_after_the_first_ones():
    _, first = load_pool("game24", None, 40)
    _, rest = load_pool("game24", None, 30, skip=10)
    assert [it.id for it in rest] == [it.id for it in first[10:]]
    with pytest.raises(UserError, match="asked for"):
        load_pool("game24", None, 10, skip=10**4)


def _items(n: int) -> list[Item]:
    return [Item(id=f"i{k}", prompt=f"p{k}", solution="s", answer=str(k)) for k in range(n)]


def test_prompt_stream_is_seeded_epochs_of_permutations():
    items = _items(10)
    s = prompt_stream(items, 25, seed=3)
    assert len(s) == 25
    assert sorted(it.id for it in s[:10]) == sorted(it.id for it in items)  # epoch 1: every item once
    assert sorted(it.id for it in s[10:20]) == sorted(it.id for it in items)  # epoch 2 as well
    assert s[:10] != s[10:20]  # a fresh order per epoch
    assert [it.id for it in prompt_stream(items, 25, seed=3)] == [it.id for it in s]
    assert [it.id for it in prompt_stream(items, 25, seed=4)] != [it.id for it in s]
    assert [it.id for it in prompt_stream(items, 12, seed=3)] == [it.id for it in s[:12]]  # prefix-stable
    rng = random.Random(3)
    first = list(items)
    rng.shuffle(first)
    assert [it.id for it in s[:10]] == [it.id for it in first]


def file_task(path, columns=None) -> FileTask:
    """A training file read by the one file task (its rows read and checked at once)."""
    task = FileTask(training_spec(path, columns))
    task.items("train", 10**6)
    return task


def test_jsonl_dataset_row_missing_a_field_names_row_and_field(tmp_path):
    f = tmp_path / "d.jsonl"
    rows = [{"prompt": "1+1?", "solution": "1 + 1 = 2.", "answer": "2"}, {"prompt": "2+2?", "answer": "4"}]
    f.write_text("\n".join(json.dumps(r) for r in rows))
    assert file_task(f).items("train", 2)[1].solution == ""  # GRPO needs no solution; SFT does:
    with pytest.raises(UserError, match="item 1 has no gold solution, which SFT trains on"):
        load_pool(None, str(f), 10, need_solution=True)
    f.write_text(json.dumps(rows[0]) + "\nnot json\n")
    with pytest.raises(UserError, match="line 2 is not valid JSON"):
        file_task(f)
    with pytest.raises(UserError, match="does not exist"):
        file_task(tmp_path / "missing.jsonl")
    # real datasets name their columns differently: map them
    f.write_text(json.dumps({"problem": "1+1?", "solution": "1 + 1 = 2.", "answer": "2"}) + "\n"
                 + json.dumps({"problem": "2+2?", "solution": "2 + 2 = 4."}) + "\n")
    with pytest.raises(UserError, match="row 2 has no answer field 'answer'"):
        file_task(f, {"prompt": "problem"})
    f.write_text(json.dumps({"problem": "1+1?", "solution": "1 + 1 = 2.", "answer": "2"}) + "\n")
    assert file_task(f, {"prompt": "problem"}).items("train", 5)[0].prompt == "1+1?"
    with pytest.raises(UserError, match="row 1 has no field 'prompt'"):
        file_task(f)
    with pytest.raises(UserError, match="dataset_columns: unknown field 'question'"):
        file_task(f, {"question": "problem"})


def test_hf_dataset_dir_and_file_task_scoring(tmp_path):
    import datasets

    rows = [{"prompt": "What is 6 x 7?", "solution": "6 * 7 = 42.", "answer": "42"},
            {"prompt": "What is 1/2 + 1/2?", "solution": "1/2 + 1/2 = 1.", "answer": "1"}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    task = file_task(tmp_path / "ds")
    items = task.items("train", 10)
    assert [it.prompt for it in items] == [r["prompt"] for r in rows]
    good = format_completion("6 * 7 = 42.", "42")
    assert task.score(items[0], good) == 1.0 and task.reward(items[0], good) == pytest.approx(1.2)
    assert task.score(items[0], "<answer>41</answer>") == 0.0
    assert task.reward(items[0], "<answer>42</answer>") == 1.0  # correct, but not the full format
    assert task.score(items[1], "<think>x</think><answer>2/2</answer>") == 1.0  # math-verify equivalence


def test_reward_functions_follow_the_task_and_the_trl_signature():
    task = file_task_from([("What is 3 + 4?", "3 + 4 = 7.", "7")])
    items = {it.id: it for it in task.items("train", 1)}
    iid = next(iter(items))
    completions = [[{"role": "assistant", "content": c}] for c in (
        "<think>3 + 4 = 7.</think><answer>7</answer>",  # correct, formatted
        "<think>3 + 4 = 8.</think><answer>8</answer>",  # wrong, formatted
        "<answer>7</answer>",  # correct, 2 of 4 tags
        "<think><think></think>")]  # 1 tag exactly once (</think>), <think> twice
    fns = reward_functions(task, items, ["correct", "format", "tags", "task"])
    assert [f.__name__ for f in fns] == ["correct", "format", "tags", "task"]
    got = [f(prompts=[None] * 4, completions=completions, item_id=[iid] * 4) for f in fns]
    assert got[0] == [1.0, 0.0, 1.0, 0.0]
    assert got[1] == [1.0, 1.0, 0.0, 0.0]
    assert got[2] == [1.0, 1.0, 0.5, 0.25]
    assert got[3] == pytest.approx([1.2, 0.2, 1.0, 0.0])


def file_task_from(rows):
    import tempfile
    from pathlib import Path

    d = Path(tempfile.mkdtemp())
    (d / "d.jsonl").write_text("\n".join(json.dumps({"prompt": p, "solution": s, "answer": a}) for p, s, a in rows))
    return file_task(d / "d.jsonl")


def test_selectors_from_the_command_line():
    assert load_budget("smoke", ["freeze=gate,up,down@19-25"]).freeze == ["gate,up,down@19-25"]
    assert load_budget("smoke", ["train_only=q,k; o@0"]).train_only == ["q,k", "o@0"]
    assert load_budget("smoke", ["freeze=['gate,up@1', down]"]).freeze == ["gate,up@1", "down"]
    assert load_budget("smoke", ["freeze=q@25%-55%"]).freeze == ["q@25%-55%"]  # as in a study file
