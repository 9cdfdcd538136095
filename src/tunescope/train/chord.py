"""CHORD: GRPO on the model's own samples mixed with SFT on expert solutions, by a weight that falls.

CHORD (Zhang et al. 2025, "On-Policy RL Meets Off-Policy Experts: Harmonizing SFT and RL via Dynamic
Weighting", arXiv 2508.11408) trains one objective,

    L = (1 - mu_t) * L_GRPO + mu_t * L_SFT,     L_SFT = -sum_t sg(phi(p_t)) log p_t / N,   phi(p) = p (1 - p)

where L_GRPO is GRPO's loss on the step's rollouts (exactly `train/grpo.py`'s, same knobs under
`chord.*`), p_t the model's probability of the expert's token t, N the expert tokens of the step, and
mu_t a schedule over training: a linear warm-up to `chord.mu_peak` over `chord.mu_warmup` of the steps,
then a cosine decay to `chord.mu_valley` over `chord.mu_decay` of them (the paper's CHORD-mu; the
token weight phi is its CHORD-phi, which down-weights tokens the model already knows, p near 1, and
tokens far from its distribution, p near 0; `chord.phi=false` gives plain NLL).

Expert data on the same budget: step t's expert batch is the gold solutions of the step's own prompts
(the shared prompt stream's slice t, which GRPO samples from), cut into one chunk per micro-batch and
process, so the step sees P prompts' rollouts and the same P prompts' solutions.
Built as a small subclass of TRL's GRPOTrainer (`chord_trainer_class`): it adds the SFT term to the
GRPO loss of each micro-batch. Deviations: the SFT log-probs are the model's own (temperature 1), where
Trinity-RFT's implementation takes them at the rollout temperature; mu follows the optimiser step.
"""

from __future__ import annotations

import math
from typing import Any

from tunescope.train.callbacks import StepRecorder
from tunescope.train.config import BudgetConfig, CHORDOptions
from tunescope.train.data import gold_message, grpo_dataset, prompt_messages
from tunescope.train.grpo import prepare_policy, reward_functions, time_generation
from tunescope.world.task import Item


def mu_at(step: int, max_steps: int, opts: CHORDOptions) -> float:
    """The SFT weight mu at optimiser step `step` (0-based): linear warm-up, then cosine decay."""
    warm, decay = round(opts.mu_warmup * max_steps), round(opts.mu_decay * max_steps)
    if step < warm:
        return step / warm * opts.mu_peak
    if step >= warm + decay:
        return opts.mu_valley
    return opts.mu_valley + (opts.mu_peak - opts.mu_valley) * 0.5 * (1 + math.cos(math.pi * (step - warm) / decay))


def expert_tokens(tok: Any, items: list[Item]) -> list[tuple[list[int], list[int]]]:
    """Per item (prompt ids, gold completion ids), tokenised as TRL's SFT tokenises a conversational
    prompt-completion row: the chat template over prompt + completion, split where the prompt ends."""
    out = []
    for it in items:
        prompt = tok.apply_chat_template(prompt_messages(it), add_generation_prompt=True, tokenize=True,
                                         return_dict=False)
        full = tok.apply_chat_template(prompt_messages(it) + gold_message(it), tokenize=True, return_dict=False)
        if full[:len(prompt)] != prompt:
            raise ValueError(f"item {it.id}: the chat template renders the prompt differently inside the conversation")
        out.append((prompt, full[len(prompt):]))
    return out


def chunk_bounds(n: int, parts: int, k: int) -> tuple[int, int]:
    """Items [lo, hi) of chunk k when n items are cut into `parts` chunks as evenly as possible."""
    return n * k // parts, n * (k + 1) // parts


def build_chord_trainer(model: Any, tokenizer: Any, stream: list[Item], task: Any, items: dict[str, Item],
                        cfg: BudgetConfig, args: Any, callbacks: list, recorder: StepRecorder):
    """The CHORD trainer, set up as `build_grpo_trainer` sets up GRPO's, with the stream's expert tokens."""
    prepare_policy(model, cfg.chord)
    trainer = chord_trainer_class()(
        model=model, reward_funcs=reward_functions(task, items, cfg.chord.rewards, recorder), args=args,
        train_dataset=grpo_dataset(stream), processing_class=tokenizer, callbacks=callbacks,
        expert=expert_tokens(tokenizer, stream), prompts_per_step=cfg.prompts_per_step, chord=cfg.chord)
    return time_generation(trainer, recorder)


def chord_trainer_class() -> type:
    """`CHORDTrainer(GRPOTrainer)`, built on first use so that importing this module stays light."""
    import torch
    from trl import GRPOTrainer

    class CHORDTrainer(GRPOTrainer):
        """GRPO plus mu * the phi-weighted SFT loss on the step's expert solutions (module docstring)."""

        def __init__(self, *a: Any, expert: list[tuple[list[int], list[int]]], prompts_per_step: int,
                     chord: CHORDOptions, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self.expert, self.prompts_per_step, self.chord = expert, prompts_per_step, chord

        def _compute_loss(self, model, inputs):
            rl = super()._compute_loss(model, inputs)  # already divided by the accumulation steps
            step = self.state.global_step
            mu = mu_at(step, self.args.max_steps, self.chord)
            sft = self._expert_loss(model, step)
            mode = "train" if model.training else "eval"
            self._metrics[mode]["chord_mu"].append(mu)
            self._metrics[mode]["chord_sft_loss"].append(sft.detach().item())
            return (1 - mu) * rl + mu * sft

        def _expert_loss(self, model, step: int):
            """This micro-batch's share of L_SFT: its chunk's weighted token losses over the step's N tokens
            (times the processes, whose gradients data-parallel training averages)."""
            accum, world = self.current_gradient_accumulation_steps, self.accelerator.num_processes
            batch = self.expert[step * self.prompts_per_step:(step + 1) * self.prompts_per_step]
            n_tokens = sum(len(c) for _, c in batch)
            k = self.accelerator.process_index * accum + self._step % accum
            lo, hi = chunk_bounds(len(batch), world * accum, k)
            rows = batch[lo:hi]
            if not rows or n_tokens == 0:
                return torch.zeros((), device=self.accelerator.device)
            width = max(len(p) + len(c) for p, c in rows)
            pad = self.processing_class.pad_token_id or 0
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            attn = torch.zeros((len(rows), width), dtype=torch.long)
            labels = torch.full((len(rows), width), -100, dtype=torch.long)
            for i, (p, c) in enumerate(rows):  # right-padded; labels only on the completion
                ids[i, :len(p) + len(c)] = torch.tensor(p + c)
                attn[i, :len(p) + len(c)] = 1
                labels[i, len(p):len(p) + len(c)] = torch.tensor(c)
            dev = self.accelerator.device
            ids, attn, labels = ids.to(dev), attn.to(dev), labels[:, 1:].to(dev)  # labels: (B, T-1)
            logp = torch.log_softmax(model(input_ids=ids, attention_mask=attn, use_cache=False).logits[:, :-1].float(),
                                     -1)  # (B, T-1, V)
            mask = labels != -100
            lp_t = logp.gather(-1, labels.clamp(min=0)[..., None])[..., 0]  # (B, T-1)
            p_t = lp_t.detach().exp()
            weight = p_t * (1 - p_t) if self.chord.phi else torch.ones_like(p_t)
            return -(weight * lp_t * mask).sum() / n_tokens * world

    return CHORDTrainer
