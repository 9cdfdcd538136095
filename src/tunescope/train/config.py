"""BudgetConfig: one training budget shared by SFT, DPO and the RL methods (GRPO, RLOO, CHORD).

Every value the methods share (data, optimiser, schedule, batch, lengths, seed, checkpoints) is one
field here, so the runs of a comparison cannot drift apart; method-only knobs live under
`sft.*`, `grpo.*`, `rloo.*`, `chord.*` and `dpo.*`. Load it with

    cfg = load_budget("smoke", ["lr=1e-5", "grpo.beta=0.04"])   # packaged name or a YAML path

Batch accounting. A step sees `prompts_per_step` prompts. SFT runs them as sequences, an RL method as
`prompts_per_step * <method>.num_generations` sampled completions; all cut the step into forward
passes of `micro_batch_size` sequences per device (gradient accumulation). RL generates once per
optimiser step, so every step of every method corresponds to exactly one slice of the prompt stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tunescope.config import load_config
from tunescope.errors import UserError

PACKAGED = Path(__file__).resolve().parents[1] / "configs"
METHODS = ("sft", "grpo", "rloo", "chord", "dpo")  # the training methods: tunescope.train.run.train(method, ...)
TRAINED_RL = ("grpo", "rloo", "chord")  # those of them that learn from sampled completions and a reward
# what may have produced a run imported into a study (runs.NAME.checkpoints), and which are the RL arms
# that the report pairs against SFT runs of one task (CHORD, half imitation, is neither arm)
IMPORTED_METHODS = (*METHODS, "ppo", "rlvr", "other")
RL_METHODS = ("grpo", "rloo", "ppo", "rlvr")
REWARDS = ("task", "correct", "format", "tags")  # see tunescope.train.grpo.reward_functions


@dataclass
class SFTOptions:
    # "dft": -sg(p_t) log p_t (Dynamic Fine-Tuning, TRL's loss_type); "asft": anchored SFT, DFT's loss plus
    # anchor * KL(pi_ref || pi_theta) over the vocabulary at each response token (train/sft.py)
    loss_type: Literal["nll", "dft", "asft"] = "nll"
    anchor: float = 0.05  # asft's KL weight (lambda; 0.05-0.1 in anchored SFT); the reference is the start model


@dataclass
class RLOptions:
    """What every RL method shares: the group of samples per prompt, how they are drawn, the reward."""

    num_generations: int = 4  # completions per prompt (the group); >= 2
    beta: float = 0.0  # KL(pi || pi_ref) weight; 0 = no reference model (the study's setting)
    epsilon: float = 0.2  # PPO clip range
    temperature: float = 0.6  # sampling temperature of the rollouts
    top_p: float = 1.0
    rewards: list[str] = field(default_factory=lambda: ["correct", "format"])  # short names, see REWARDS
    reward_weights: list[float] = field(default_factory=lambda: [1.0, 0.2])  # one per reward
    use_vllm: bool = False  # needs a CUDA GPU and `pip install vllm`
    vllm_mode: Literal["colocate", "server"] = "colocate"  # colocate shares the training GPU(s)
    compact_rollouts: bool = True  # sample with the compact decoder where it is exact (plain Llama, CPU; train/rollout.py)

    def check(self, key: str) -> None:
        """Reject bad values, naming them as `key.field`."""
        if self.num_generations < 2:
            raise UserError(f"{key}.num_generations must be at least 2 (advantages compare samples), got "
                            f"{self.num_generations}")
        bad = [r for r in self.rewards if r not in REWARDS]
        if bad or not self.rewards:
            raise UserError(f"{key}.rewards: unknown reward {bad[0] if bad else '(none)'}; "
                            f"choose from {', '.join(REWARDS)}")
        if len(self.reward_weights) != len(self.rewards):
            raise UserError(f"{key}.reward_weights has {len(self.reward_weights)} values for {len(self.rewards)} "
                            f"{key}.rewards; give one weight per reward")
        if self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise UserError(f"{key}.temperature must be > 0 and {key}.top_p in (0, 1]")
        if self.beta < 0 or self.epsilon <= 0:
            raise UserError(f"{key}.beta must be >= 0 and {key}.epsilon > 0")


@dataclass
class GRPOOptions(RLOptions):
    """GRPO (TRL `GRPOTrainer`): per-token clipped loss, advantages = reward - group mean."""

    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo"] = "dr_grpo"
    scale_rewards: Literal["group", "batch", "none"] = "none"  # "none": advantages not std-scaled (Dr. GRPO)
    # True: completions cut at max_completion_length get no loss (Rajani et al.'s recipe sets it; it matters when
    # many completions run to the limit, as long reasoning traces do)
    mask_truncated_completions: bool = False


@dataclass
class RLOOOptions(RLOptions):
    """RLOO (TRL `RLOOTrainer`): per-sequence clipped loss, advantages = reward - mean of the other samples."""

    normalize_advantages: bool = False  # True: advantages scaled to zero mean and unit std over the batch


@dataclass
class CHORDOptions(GRPOOptions):
    """CHORD (`train/chord.py`): GRPO's loss and knobs, plus mu * the SFT loss on the step's gold solutions."""

    mu_peak: float = 0.9  # the SFT weight after warm-up (the CHORD paper's schedule: 0.9 decaying to 0.05)
    mu_valley: float = 0.05  # the SFT weight at the end of the decay
    mu_warmup: float = 0.0  # fraction of max_steps over which mu rises linearly from 0 to mu_peak
    mu_decay: float = 1.0  # fraction of max_steps over which mu then falls (cosine) to mu_valley
    phi: bool = True  # token weight sg(p (1 - p)) on the SFT loss (CHORD-phi); false: plain NLL

    def check(self, key: str) -> None:
        super().check(key)
        if not (0 <= self.mu_valley <= 1 and 0 <= self.mu_peak <= 1):
            raise UserError(f"{key}.mu_peak and {key}.mu_valley are weights in [0, 1], got {self.mu_peak} and "
                            f"{self.mu_valley}")
        if self.mu_warmup < 0 or self.mu_decay < 0 or self.mu_warmup + self.mu_decay > 1 + 1e-9:
            raise UserError(f"{key}.mu_warmup and {key}.mu_decay are fractions of max_steps with a sum <= 1, got "
                            f"{self.mu_warmup} and {self.mu_decay}")


@dataclass
class DPOOptions:
    """DPO (TRL `DPOTrainer`) on preference pairs from the task's verifier (`train/dpo.py`)."""

    beta: float = 0.1  # strength of the implicit KL to the reference model (the run's start model)
    loss_type: Literal["sigmoid", "ipo", "hinge"] = "sigmoid"  # sigmoid: the DPO loss of Rafailov et al. 2023
    samples: int = 4  # completions of the start model per problem, searched for a wrong (rejected) and a right one
    temperature: float = 0.6  # sampling temperature of those completions


@dataclass
class BudgetConfig:
    # data: exactly one of `task` (a tunescope.world task name) or `dataset` (JSONL file or HF dataset dir)
    task: str | None = "maths"
    task_options: dict[str, Any] = field(default_factory=dict)  # e.g. {shaped: true} for game24
    dataset: str | None = None  # JSONL, saved HF dataset dir or hub id; rows with prompt, solution, answer
    dataset_columns: dict[str, str] = field(default_factory=dict)  # e.g. {prompt: problem} for OpenR1-Math
    dataset_spec: str | None = None  # read `dataset` by a benchmark spec (gsm8k, math500, or a spec YAML file)
    n_train_items: int = 1024  # distinct training problems; the stream cycles through them in epochs
    skip_train_items: int = 0  # problems skipped at the start of the pool: RL on problems an SFT run of that many did not see
    # optimisation
    lr: float = 1e-5
    scheduler: Literal["constant_with_warmup", "cosine", "linear", "constant"] = "constant_with_warmup"
    warmup_ratio: float = 0.1
    max_steps: int = 100
    prompts_per_step: int = 16  # effective batch in prompts (over all devices)
    micro_batch_size: int = 8  # sequences per device per forward pass; lower it to save memory
    max_grad_norm: float = 0.2
    weight_decay: float = 0.0
    optimizer: Literal["adamw_torch", "adafactor", "sgd"] = "adamw_torch"
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    seed: int = 0
    # lengths in tokens; training items longer than these are filtered out for both methods
    max_prompt_length: int = 256
    max_completion_length: int = 256
    # checkpoints at fixed fractions of max_steps (plus the step-0 model)
    checkpoint_every: float = 0.05
    # freezing by selectors (tunescope.naming). On the command line write one selector as a string,
    # several separated by ";": freeze="gate,up,down@19-25" or train_only="q,k" (in YAML flow lists
    # [gate,up] would be two selectors: quote each one)
    freeze: list[str] | str = field(default_factory=list)
    train_only: list[str] | str = field(default_factory=list)
    sft: SFTOptions = field(default_factory=SFTOptions)
    grpo: GRPOOptions = field(default_factory=GRPOOptions)
    rloo: RLOOOptions = field(default_factory=RLOOOptions)
    chord: CHORDOptions = field(default_factory=CHORDOptions)
    dpo: DPOOptions = field(default_factory=DPOOptions)
    tensorboard: bool = False  # also log to RUN/tensorboard
    bf16: bool = True  # mixed precision on GPU; always off on CPU
    activation_checkpointing: bool = False  # GPU only: True saves activation memory, costs ~20% speed

    def __post_init__(self) -> None:
        for name in ("freeze", "train_only"):
            value = getattr(self, name)
            if isinstance(value, str):
                setattr(self, name, [v.strip() for v in value.split(";") if v.strip()])
        if (self.task is None) == (self.dataset is None):
            raise UserError("set exactly one of task=NAME or dataset=PATH (set the other to null)")
        for name in ("n_train_items", "max_steps", "prompts_per_step", "micro_batch_size",
                     "max_prompt_length", "max_completion_length"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.skip_train_items < 0:
            raise UserError(f"skip_train_items must be >= 0, got {self.skip_train_items}")
        if not 0 < self.checkpoint_every <= 1:
            raise UserError(f"checkpoint_every is a fraction of training in (0, 1], got {self.checkpoint_every}")
        if not 0 <= self.warmup_ratio < 1:
            raise UserError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.lr <= 0:
            raise UserError(f"lr must be positive, got {self.lr}")
        if self.prompts_per_step % self.sft_micro_batch:
            raise UserError(f"micro_batch_size={self.micro_batch_size} must divide prompts_per_step="
                            f"{self.prompts_per_step} (or exceed it); change micro_batch_size")
        for method in TRAINED_RL:
            self.rl(method).check(method)
        if self.sft.anchor < 0:
            raise UserError(f"sft.anchor must be >= 0, got {self.sft.anchor}")
        if self.dpo.beta <= 0 or self.dpo.samples < 1 or self.dpo.temperature <= 0:
            raise UserError("dpo.beta and dpo.temperature must be > 0 and dpo.samples at least 1")

    def check_method(self, method: str) -> None:
        """What only a run of `method` needs of the budget (an RL method: its completions split into micro-batches)."""
        if method in TRAINED_RL:
            self.completions_per_step(method)

    def rl(self, method: str) -> RLOptions:
        """The options of an RL method (one of TRAINED_RL: its section of the budget)."""
        if method not in TRAINED_RL:
            raise ValueError(f"{method} is not an RL method ({', '.join(TRAINED_RL)})")
        return getattr(self, method)

    def completions_per_step(self, method: str) -> int:
        """Completions an RL method samples per step, after checking that micro-batches split them."""
        key, g = method, self.rl(method)
        n = self.prompts_per_step * g.num_generations
        if n % self.micro_batch_size:
            divisors = [d for d in range(1, n + 1) if n % d == 0 and d <= self.micro_batch_size]
            raise UserError(
                f"prompts_per_step={self.prompts_per_step} x {key}.num_generations={g.num_generations} = {n} "
                f"completions per step, which micro_batch_size={self.micro_batch_size} does not divide; "
                f"change micro_batch_size (e.g. to {divisors[-1]}) or {key}.num_generations")
        return n

    @property
    def sft_micro_batch(self) -> int:
        """Prompts per device per forward pass for SFT."""
        return min(self.micro_batch_size, self.prompts_per_step)

    def checkpoint_steps(self) -> list[int]:
        """Steps that get a checkpoint: 0 and round(k * checkpoint_every * max_steps), ending at max_steps."""
        k = math.ceil(1 / self.checkpoint_every - 1e-9)
        steps = {0, self.max_steps}
        steps.update(min(self.max_steps, round(i * self.checkpoint_every * self.max_steps)) for i in range(k + 1))
        return sorted(steps)

    def gradient_accumulation(self, method: str, world_size: int) -> int:
        """Forward passes per optimiser step on each device, after checking the batch splits evenly."""
        if method not in TRAINED_RL:  # SFT, and DPO, whose example is one (chosen, rejected) pair of a prompt
            per_pass, total, what = self.sft_micro_batch, self.prompts_per_step, "prompts_per_step"
        else:
            per_pass, total = self.micro_batch_size, self.completions_per_step(method)
            what = f"prompts_per_step x {method}.num_generations"
        if total % (per_pass * world_size):
            raise UserError(f"{what} = {total} does not split over {world_size} processes x micro_batch_size "
                            f"{per_pass}; change micro_batch_size or prompts_per_step")
        return total // (per_pass * world_size)


def method_config(config: dict[str, Any], method: str) -> dict[str, Any]:
    """A resolved budget as a dict without the options of the other methods (`sft`, `grpo`, ...): what
    determines a run of `method`, so that editing `dpo.beta` does not invalidate an SFT run's cache."""
    return {k: v for k, v in config.items() if k not in METHODS or k == method}


def load_budget(path_or_name: str | Path | None = None, overrides: list[str] | None = None) -> BudgetConfig:
    """A budget from a YAML path or a packaged name ("smoke", "default"), with key=value overrides."""
    path = None
    if path_or_name is not None:
        path = Path(path_or_name)
        packaged = PACKAGED / f"budget_{path_or_name}.yaml"
        if not path.exists() and packaged.is_file():
            path = packaged
    return load_config(BudgetConfig, path, overrides)
