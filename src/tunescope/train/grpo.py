"""GRPO on the prompt stream, scored by the task's reward (TRL `GRPOTrainer`).

Follows the study's GRPO arm (Rajani et al. 2025; Shao et al. 2024 for GRPO): per prompt a group
of `num_generations` samples, advantages = reward minus the group mean (not std-scaled with
`scale_rewards="none"`), the `dr_grpo` loss (Liu et al. 2025, no length normalisation), clip
epsilon 0.2, beta 0 (no reference model). Rewards are the task's own verifiers, picked by short name:

    correct  task.score: 1 if the extracted answer is right (math-verify for maths), else 0
    format   1 if the completion is exactly <think>…</think><answer>…</answer>, else 0
    tags     0.25 for each of the four tags present exactly once (open-r1's tag_count_reward):
             a denser format signal that a weak model can climb
    task     task.reward: the task's full reward (maths: correct + 0.2 format; 24-point: shaped)

The study's reward is `correct` (weight 1.0) + `format` (0.2).
Deviations: generation with transformers on CPU (vLLM optional on GPU), by the compact decoder where it
computes the policy exactly (`train/rollout.py`: same distribution and warpers, other draws); one
generation per optimiser step (`steps_per_generation` = gradient accumulation), never reused across steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tunescope.train.callbacks import StepRecorder
from tunescope.train.config import BudgetConfig, GRPOOptions, RLOptions
from tunescope.train.data import grpo_dataset
from tunescope.world.task import Item, follows_format

TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def _text(completion: Any) -> str:
    """A completion as text (conversational completions are [{"role": "assistant", "content": ...}])."""
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion)
    return str(completion)


def reward_functions(task: Any, items: dict[str, Item], names: list[str],
                     recorder: StepRecorder | None = None) -> list[Callable[..., list[float]]]:
    """TRL reward callables `f(prompts, completions, item_id, **columns) -> list[float]` by short name."""
    scorers: dict[str, Callable[[Item, str], float]] = {
        "correct": lambda it, c: float(task.score(it, c)),
        "format": lambda it, c: 1.0 if follows_format(c) else 0.0,
        "tags": lambda it, c: 0.25 * sum(c.count(t) == 1 for t in TAGS),
        "task": lambda it, c: float(task.reward(it, c)),
    }
    funcs = []
    for i, name in enumerate(names):
        score = scorers[name]

        def f(prompts: list, completions: list, item_id: list[str], _score=score, _first=(i == 0),
              **columns: Any) -> list[float]:
            if _first and recorder is not None:
                for iid in item_id:
                    recorder.add(iid)
            return [_score(items[iid], _text(c)) for iid, c in zip(item_id, completions)]

        f.__name__ = name
        funcs.append(f)
    return funcs


def grpo_args(cfg: BudgetConfig, common: dict[str, Any], grad_accum: int,
              opts: GRPOOptions | None = None):  # -> trl.GRPOConfig
    """TRL's GRPOConfig from the budget, every knob written out; `opts`: a GRPO-shaped section other than
    `grpo` (CHORD's)."""
    from trl import GRPOConfig

    g = opts or cfg.grpo
    return GRPOConfig(
        **common,
        per_device_train_batch_size=cfg.micro_batch_size,
        gradient_accumulation_steps=grad_accum,
        steps_per_generation=grad_accum,  # generate the whole step's completions at once
        num_generations=g.num_generations,
        num_iterations=1,
        max_completion_length=cfg.max_completion_length,
        shuffle_dataset=False,  # the prompt stream is already shuffled (see data.py)
        temperature=g.temperature,
        top_p=g.top_p,
        top_k=0,
        min_p=None,
        repetition_penalty=1.0,
        beta=g.beta,
        epsilon=g.epsilon,
        epsilon_high=None,
        loss_type=g.loss_type,
        scale_rewards=g.scale_rewards,
        reward_weights=list(g.reward_weights),
        mask_truncated_completions=g.mask_truncated_completions,
        importance_sampling_level="token",
        use_vllm=g.use_vllm,
        vllm_mode=g.vllm_mode,
        include_num_input_tokens_seen="no",  # GRPOTrainer counts prompt + completion tokens itself
        log_completions=False,
        remove_unused_columns=False,
    )


def build_grpo_trainer(model: Any, tokenizer: Any, stream: list[Item], task: Any, items: dict[str, Item],
                       cfg: BudgetConfig, args: Any, callbacks: list, recorder: StepRecorder):
    """The GRPOTrainer, with its generation timed into `recorder.gen_seconds` (and the compact
    decoder's rollouts, unless `grpo.compact_rollouts` is off or vLLM generates)."""
    from trl import GRPOTrainer

    prepare_policy(model, cfg.grpo)
    trainer = GRPOTrainer(model=model, reward_funcs=reward_functions(task, items, cfg.grpo.rewards, recorder),
                          args=args, train_dataset=grpo_dataset(stream), processing_class=tokenizer,
                          callbacks=callbacks)
    return time_generation(trainer, recorder)


def prepare_policy(model: Any, opts: RLOptions) -> None:
    """Rollouts by the compact decoder (`train/rollout.py`), unless turned off or vLLM generates."""
    if opts.compact_rollouts and not opts.use_vllm:
        from tunescope.train.rollout import use_compact_rollouts

        use_compact_rollouts(model)


def time_generation(trainer: Any, recorder: StepRecorder) -> Any:
    """`trainer` (a TRL RL trainer), its generation timed into `recorder.gen_seconds`."""
    generate = trainer._generate

    def timed_generate(*a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return generate(*a, **kw)
        finally:
            recorder.gen_seconds += time.perf_counter() - t0

    trainer._generate = timed_generate
    return trainer
