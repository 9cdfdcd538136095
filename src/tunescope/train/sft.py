"""Supervised fine-tuning on the gold completions of the prompt stream (TRL `SFTTrainer`).

Follows the study's SFT arm (Rajani et al. 2025, open-r1 `sft.py`): conversational
prompt-completion rows, loss on the assistant turn only (TRL's `completion_only_loss`), the same
effective batch, schedule, warmup and clipping as GRPO. `sft.loss_type="dft"` switches to Dynamic
Fine-Tuning (-sg(p_t) log p_t, Wu et al. 2025), as TRL implements it.
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
        loss_type=cfg.sft.loss_type,
        shuffle_dataset=False,
        dataset_num_proc=None,
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False,  # keep item_id for the step log; RecordingCollator drops it
    )


def build_sft_trainer(model: Any, tokenizer: Any, stream: list[Item], args: Any, callbacks: list,
                      recorder: StepRecorder):  # -> trl.SFTTrainer
    from trl import SFTTrainer

    trainer = SFTTrainer(model=model, args=args, train_dataset=sft_dataset(stream), processing_class=tokenizer,
                         callbacks=callbacks)
    trainer.data_collator = RecordingCollator(trainer.data_collator, recorder)
    return trainer
