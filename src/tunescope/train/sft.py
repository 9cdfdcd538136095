"""Supervised fine-tuning on the gold completions of the prompt stream (TRL `SFTTrainer`).

Follows the study's SFT arm (Rajani et al. 2025, open-r1 `sft.py`): conversational
prompt-completion rows, loss on the assistant turn only (TRL's `completion_only_loss`), the same
effective batch, schedule, warmup and clipping as GRPO. `sft.loss_type="dft"` switches to Dynamic
Fine-Tuning (-sg(p_t) log p_t, Wu et al. 2025), as TRL implements it; `"asft"` to anchored SFT
(ASFT, 2025; the formula of ../shared/BRIEF.md): DFT's loss plus `sft.anchor` times KL(pi_ref || pi_theta) over the whole vocabulary
at every response token, pi_ref the frozen start model,

    L = sum_t [ -sg(p_t) log p_t + anchor * sum_v pi_ref(v | y_<t) (log pi_ref(v | y_<t) - log pi(v | y_<t)) ] / N

over the N response tokens of the step (as TRL normalises its SFT losses), by a small subclass of
`SFTTrainer` (`AnchoredSFTTrainer`) that also runs the reference forward.
Deviations: no packing and a sequential sampler over our pre-shuffled prompt stream (TRL shuffles
itself), so that step t sees the same prompts as GRPO's step t.
"""

from __future__ import annotations

from typing import Any

from tunescope.train.callbacks import RecordingCollator, StepRecorder
from tunescope.train.config import BudgetConfig
from tunescope.train.data import sft_dataset
from tunescope.world.task import Item


def sft_args(cfg: BudgetConfig, common: dict[str, Any], grad_accum: int):  # -> trl.SFTConfig
    from trl import SFTConfig

    return SFTConfig(
        **common,
        per_device_train_batch_size=cfg.sft_micro_batch,
        gradient_accumulation_steps=grad_accum,
        max_length=cfg.max_prompt_length + cfg.max_completion_length,
        truncation_mode="keep_start",
        packing=False,
        padding_free=False,
        completion_only_loss=True,
        assistant_only_loss=False,  # the completion is exactly the assistant turn; no template markers needed
        loss_type="dft" if cfg.sft.loss_type == "asft" else cfg.sft.loss_type,  # asft: our compute_loss
        shuffle_dataset=False,
        dataset_num_proc=None,
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False,  # keep item_id for the step log; RecordingCollator drops it
    )


def build_sft_trainer(model: Any, tokenizer: Any, stream: list[Item], args: Any, callbacks: list,
                      recorder: StepRecorder, cfg: BudgetConfig | None = None):  # -> trl.SFTTrainer
    """TRL's SFTTrainer, or with `sft.loss_type="asft"` the anchored one (reference: a frozen copy of `model`)."""
    from trl import SFTTrainer

    kw = dict(model=model, args=args, train_dataset=sft_dataset(stream), processing_class=tokenizer,
              callbacks=callbacks)
    if cfg is not None and cfg.sft.loss_type == "asft":
        trainer = anchored_trainer_class()(ref_model=_frozen_copy(model), anchor=cfg.sft.anchor, **kw)
    else:
        trainer = SFTTrainer(**kw)
    trainer.data_collator = RecordingCollator(trainer.data_collator, recorder)
    return trainer


def _frozen_copy(model: Any) -> Any:
    import copy

    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def anchored_trainer_class() -> type:
    """`AnchoredSFTTrainer(SFTTrainer)`, built on first use so that importing this module stays light."""
    import torch
    from trl import SFTTrainer

    class AnchoredSFTTrainer(SFTTrainer):
        """SFT with the anchored-SFT loss (module docstring): DFT + anchor * KL(pi_ref || pi_theta) per token."""

        def __init__(self, *args: Any, ref_model: Any, anchor: float, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.ref_model, self.anchor = ref_model.to(self.args.device), anchor

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            fwd = {k: inputs[k] for k in ("input_ids", "attention_mask", "position_ids") if k in inputs}
            labels = inputs["labels"][:, 1:]  # (B, T-1): the token each position predicts, -100 outside the response
            mask = labels != -100
            logp = torch.log_softmax(model(**fwd, use_cache=False).logits[:, :-1].float(), -1)  # (B, T-1, V)
            lp_t = logp.gather(-1, labels.clamp(min=0)[..., None])[..., 0]  # (B, T-1)
            with torch.no_grad():
                ref = torch.log_softmax(self.ref_model(**fwd, use_cache=False).logits[:, :-1].float(), -1)
            kl = (ref.exp() * (ref - logp)).sum(-1)  # (B, T-1) KL(pi_ref || pi_theta) at each position
            per_token = (-lp_t.exp().detach() * lp_t + self.anchor * kl) * mask
            n = mask.sum() if num_items_in_batch is None else num_items_in_batch
            loss = per_token.sum() / torch.as_tensor(n).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes  # DDP averages the gradients (as SFTTrainer does)
            mode = "train" if model.training else "eval"
            self._metrics[mode]["anchor_kl"].append(((kl * mask).sum() / mask.sum().clamp(min=1)).detach().item())
            return (loss, None) if return_outputs else loss

    return AnchoredSFTTrainer
