"""Pretraining from scratch: pack the corpus into fixed-length blocks, train with the HF Trainer.

This is GPT-style causal language modelling (Radford et al. 2019) on a synthetic mixture:
documents (`<|bos|>text<|end|>`) and chat examples rendered through the chat template are
tokenised, concatenated into one stream and cut into blocks of `context` tokens ("packing", as in
GPT-3 and TRL's `packing=True`), so no compute is spent on padding. Deviation from careful
packing: attention is not masked at document boundaries; documents are short and start with
`<|bos|>`, which is how GPT-2/3 were trained too. Loss is on every token, prompts included.

Runs on CPU in float32 (no bf16, no gradient checkpointing); every hyperparameter is explicit
because library defaults change between versions.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from typing import Any

import torch
from tqdm import tqdm
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    default_data_collator,
)

from tunescope.organism.tokenizer import render
from tunescope.threads import torch_threads


def pack(tokenizer: PreTrainedTokenizerFast, examples: list[dict], context: int, seed: int) -> torch.Tensor:
    """Shuffle `examples`, render them to token ids and cut the stream into (N, context) blocks.

    The incomplete last block is dropped.
    """
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    stream: list[int] = []
    for i in order:
        stream.extend(render(tokenizer, examples[i]))
    n = len(stream) // context
    return torch.tensor(stream[: n * context], dtype=torch.long).view(n, context)  # (N, T)


class _Blocks(torch.utils.data.Dataset):
    def __init__(self, blocks: torch.Tensor):  # (N, T)
        self.blocks = blocks

    def __len__(self) -> int:
        return self.blocks.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.blocks[i], "labels": self.blocks[i]}  # the model shifts labels


class _Progress(TrainerCallback):
    """One tqdm bar on stderr with the running loss (the Trainer's own bar prints logs to stdout)."""

    def __init__(self, desc: str):
        self.desc, self.bar, self.losses = desc, None, []

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar = tqdm(total=state.max_steps, desc=self.desc, file=sys.stderr, dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        self.bar.update(1)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append((state.global_step, float(logs["loss"])))
            self.bar.set_postfix(loss=f"{logs['loss']:.3f}")

    def on_train_end(self, args, state, control, **kwargs):
        self.bar.close()


def pretrain(config: LlamaConfig, blocks: torch.Tensor, *, seed: int, epochs: float, batch_size: int, lr: float,
             warmup: float, weight_decay: float, desc: str = "pretrain") -> tuple[LlamaForCausalLM, dict[str, Any]]:
    """Train a freshly initialised Llama on `blocks` (N, T); return the model and training stats."""
    with torch_threads():
        return _pretrain(config, blocks, seed=seed, epochs=epochs, batch_size=batch_size, lr=lr, warmup=warmup,
                         weight_decay=weight_decay, desc=desc)


def _pretrain(config: LlamaConfig, blocks: torch.Tensor, *, seed: int, epochs: float, batch_size: int, lr: float,
              warmup: float, weight_decay: float, desc: str) -> tuple[LlamaForCausalLM, dict[str, Any]]:
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    total_steps = int(len(blocks) // batch_size * epochs)
    with tempfile.TemporaryDirectory(prefix="tunescope-pretrain-") as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            num_train_epochs=epochs,
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=1,
            learning_rate=lr,
            lr_scheduler_type="cosine",  # decays to 0 at the last step
            warmup_steps=warmup,  # < 1: fraction of the steps
            weight_decay=weight_decay,
            adam_beta1=0.9,
            adam_beta2=0.95,
            adam_epsilon=1e-8,
            max_grad_norm=1.0,
            optim="adamw_torch",
            logging_steps=max(1, total_steps // 100),  # ~100 points on the loss curve
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
            use_cpu=True,
            bf16=False,
            fp16=False,
            activation_checkpointing=False,  # (was gradient_checkpointing) memory is not the limit here
            dataloader_num_workers=0,
            dataloader_drop_last=True,
            seed=seed,
            data_seed=seed,
            disable_tqdm=True,
        )
        progress = _Progress(desc)
        trainer = Trainer(model=model, args=args, train_dataset=_Blocks(blocks),
                          data_collator=default_data_collator, callbacks=[progress])
        trainer.remove_callback(PrinterCallback)
        start = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - start
    model.eval()
    steps = trainer.state.global_step
    tail = [loss for _, loss in progress.losses[-3:]]
    stats = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "blocks": int(blocks.shape[0]),
        "context": int(blocks.shape[1]),
        "tokens_per_epoch": int(blocks.numel()),
        "tokens_trained": int(steps * batch_size * blocks.shape[1]),
        "steps": steps,
        "wall_s": round(wall, 1),
        "tokens_per_s": round(steps * batch_size * blocks.shape[1] / max(wall, 1e-9)),
        "final_loss": round(sum(tail) / len(tail), 4) if tail else None,
        "loss_curve": progress.losses,
        "torch_threads": torch.get_num_threads(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    return model, stats
