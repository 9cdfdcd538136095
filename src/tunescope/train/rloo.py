"""RLOO on the prompt stream, scored by the task's reward (TRL `RLOOTrainer`): a second RL method beside GRPO.

REINFORCE Leave-One-Out (Kool et al. 2019; Ahmadian et al. 2024, "Back to Basics"): per prompt a group
of `num_generations` samples y_1..y_k; each sample's advantage is its reward minus the mean reward of
the *other* samples of its group,

    A_i = r_i - (sum_j r_j - r_i) / (k - 1)

(an unbiased baseline, k/(k-1) times GRPO's mean-centred advantage), and the loss is per sequence:

    L = -mean_i min(rho_i A_i, clip(rho_i, 1 - eps, 1 + eps) A_i),  rho_i = exp(log pi(y_i) - log pi_old(y_i))

with log pi(y_i) summed over the completion's tokens. With one optimisation pass per generation
(as here) rho_i = 1 in value and the gradient is -mean_i A_i grad log pi(y_i): plain REINFORCE with the
leave-one-out baseline. A KL penalty (beta > 0) enters the reward, as a sequence sum, not the loss.
Same rollouts, rewards, prompt stream and budget as GRPO (`train/grpo.py`); the knobs are `rloo.*`.
Deviations: as for GRPO (CPU generation by the compact decoder where it is exact; vLLM optional).
"""

from __future__ import annotations

from typing import Any

from tunescope.train.callbacks import StepRecorder
from tunescope.train.config import BudgetConfig
from tunescope.train.data import grpo_dataset
from tunescope.train.grpo import prepare_policy, reward_functions, time_generation
from tunescope.world.task import Item


def rloo_args(cfg: BudgetConfig, common: dict[str, Any], grad_accum: int):  # -> trl.RLOOConfig
    from trl import RLOOConfig

    r = cfg.rloo
    return RLOOConfig(
        **common,
        per_device_train_batch_size=cfg.micro_batch_size,
        gradient_accumulation_steps=grad_accum,
        steps_per_generation=grad_accum,  # generate the whole step's completions at once
        num_generations=r.num_generations,
        num_iterations=1,
        max_completion_length=cfg.max_completion_length,
        shuffle_dataset=False,  # the prompt stream is already shuffled (see data.py)
        temperature=r.temperature,
        top_p=r.top_p,
        top_k=0,
        min_p=None,
        repetition_penalty=1.0,
        beta=r.beta,
        epsilon=r.epsilon,
        epsilon_high=None,
        reward_weights=list(r.reward_weights),
        normalize_advantages=r.normalize_advantages,
        reward_clip_range=None,
        mask_truncated_completions=False,
        use_vllm=r.use_vllm,
        vllm_mode=r.vllm_mode,
        include_num_input_tokens_seen="no",  # the trainer counts prompt + completion tokens itself
        log_completions=False,
        remove_unused_columns=False,
    )


def build_rloo_trainer(model: Any, tokenizer: Any, stream: list[Item], task: Any, items: dict[str, Item],
                       cfg: BudgetConfig, args: Any, callbacks: list, recorder: StepRecorder):
    """The RLOOTrainer, set up as `build_grpo_trainer` sets up GRPO's."""
    from trl import RLOOTrainer

    prepare_policy(model, cfg.rloo)
    trainer = RLOOTrainer(model=model, reward_funcs=reward_functions(task, items, cfg.rloo.rewards, recorder),
                          args=args, train_dataset=grpo_dataset(stream), processing_class=tokenizer,
                          callbacks=callbacks)
    return time_generation(trainer, recorder)
