"""DPO on preference pairs that the task's own verifier builds from the start model (TRL `DPOTrainer`).

Direct Preference Optimisation (Rafailov et al. 2023): for a prompt x with a preferred completion y_w
and a dispreferred one y_l, and the start model as the frozen reference pi_ref,

    L = -log sigmoid(beta * [(log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x))])

with log pi summed over the completion's tokens (`dpo.loss_type="sigmoid"`; TRL also offers ipo, hinge).

The pairs (`preference_pairs`), as the verifiable-reward setting suggests: the start model samples
`dpo.samples` completions per problem (temperature `dpo.temperature`, the compact decoder where it is
exact); the task scores them; chosen = the first correct sample, or the gold solution when the model
has none; rejected = the first wrong sample. A problem whose samples are all correct has no rejected
completion and carries no preference: it is left out, and the run's stream is the shared prompt
stream's problems that have a pair, permuted with the run's seed (so DPO's step t sees other
prompts than SFT's step t; log.jsonl records which). The pairs are sampled once, on the main
process, and written to RUN/pairs.jsonl, which every process and a resumed run read back.
Deviations from a real DPO pipeline: on-policy pairs from the start model rather than a separate
preference dataset; a pair per problem.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tunescope.train.callbacks import StepRecorder
from tunescope.train.config import BudgetConfig
from tunescope.world.task import Item, format_completion

PAIRS = "pairs.jsonl"


def preference_pairs(model: Any, tok: Any, items: list[Item], task: Any, cfg: BudgetConfig,
                     batch_size: int = 64) -> tuple[dict[str, dict[str, Any]], int]:
    """({item id: {chosen, rejected, chosen_source, ...}} for the items that have a wrong sample (see
    module doc), tokens generated). On a GPU the start model samples there (it moves to the device the
    trainer would put it on); on CPU with the compact decoder where it is exact."""
    import os

    import torch
    from transformers import GenerationConfig

    from tunescope.train.data import prompt_messages
    from tunescope.train.rollout import use_compact_rollouts

    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}") if torch.cuda.is_available() else None
    if device is not None:
        model.to(device)
    use_compact_rollouts(model)
    gen = GenerationConfig(do_sample=True, temperature=cfg.dpo.temperature, top_p=1.0, top_k=0,
                           max_new_tokens=cfg.max_completion_length, eos_token_id=tok.eos_token_id,
                           pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    rows = [it for it in items for _ in range(cfg.dpo.samples)]  # each problem `samples` times, adjacent
    texts: list[str] = []
    generated = 0
    torch.manual_seed(cfg.seed)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            prompts = [tok.apply_chat_template(prompt_messages(it), add_generation_prompt=True, tokenize=True,
                                               return_dict=False) for it in chunk]
            width = max(len(p) for p in prompts)
            ids = torch.tensor([[gen.pad_token_id] * (width - len(p)) + p for p in prompts])  # (B, P) left-padded
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
            if device is not None:
                ids, mask = ids.to(device), mask.to(device)
            with torch.no_grad():
                out = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen)[:, width:]  # (B, T)
            done = (out == tok.eos_token_id).int().cumsum(1) > 0  # at or after the end of sequence
            generated += int((~done).sum()) + int(done.any(1).sum())  # tokens up to and including it
            texts += tok.batch_decode(out, skip_special_tokens=True)
    finally:
        model.train(was_training)
    pairs = {}
    for i, it in enumerate(items):
        samples = texts[i * cfg.dpo.samples:(i + 1) * cfg.dpo.samples]
        right = [s for s in samples if task.score(it, s) == 1.0]
        wrong = [s for s in samples if task.score(it, s) != 1.0]
        if wrong:
            chosen = right[0] if right else format_completion(it.solution, it.answer)
            pairs[it.id] = {"chosen": chosen, "rejected": wrong[0], "chosen_source": "sample" if right else "gold",
                            "correct_samples": len(right), "samples": len(samples)}
    return pairs, generated


def load_or_build_pairs(run: Path, model: Any, tok: Any, items: list[Item], task: Any, cfg: BudgetConfig,
                        main: bool, barrier: Any) -> dict[str, dict[str, Any]]:
    """The run's pairs: RUN/pairs.jsonl when it exists (a resumed run), else sampled on the main process
    (its cost in RUN/pairs.json, which the run's compute totals add)."""
    import time

    from tunescope.provenance import write_json

    path = run / PAIRS
    if main and not path.exists():
        t0 = time.perf_counter()
        pairs, generated = preference_pairs(model, tok, items, task, cfg)
        write_json(run / "pairs.json", {"problems": len(items), "pairs": len(pairs), "samples": cfg.dpo.samples,
                                        "tokens_generated": generated,
                                        "seconds": round(time.perf_counter() - t0, 3)})
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(json.dumps({"item_id": k, **v}) + "\n" for k, v in pairs.items()))
        os.replace(tmp, path)
    barrier()
    return {r.pop("item_id"): r for r in map(json.loads, path.read_text().splitlines())}


def pair_stream(stream: list[Item], pairs: dict[str, dict[str, Any]], seed: int) -> list[Item]:
    """The run's stream: as long as `stream`, over its problems that have a pair (seeded permutations)."""
    from tunescope.errors import UserError
    from tunescope.train.data import prompt_stream

    pool = list({it.id: it for it in stream if it.id in pairs}.values())
    if not pool:
        raise UserError("dpo: the start model answered every sampled problem right, so no preference pair has a "
                        "rejected completion; raise dpo.samples or dpo.temperature, or start from a weaker model")
    return prompt_stream(pool, len(stream), seed)


def dpo_args(cfg: BudgetConfig, common: dict[str, Any], grad_accum: int):  # -> trl.DPOConfig
    from trl import DPOConfig

    return DPOConfig(
        **common,
        per_device_train_batch_size=cfg.sft_micro_batch,  # pairs per forward pass (2 sequences each)
        gradient_accumulation_steps=grad_accum,
        max_length=cfg.max_prompt_length + cfg.max_completion_length,
        truncation_mode="keep_start",
        padding_free=False,
        precompute_ref_log_probs=False,
        loss_type=[cfg.dpo.loss_type],
        loss_weights=None,
        beta=cfg.dpo.beta,
        label_smoothing=0.0,
        ld_alpha=None,
        f_divergence_type="reverse_kl",
        use_weighting=False,
        sync_ref_model=False,
        disable_dropout=True,
        dataset_num_proc=None,
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False,  # keep item_id for the step log; the collator drops it
    )


class PairCollator:
    """Wrap TRL's preference collator: note each pair's item id and its token counts."""

    def __init__(self, inner: Any, recorder: StepRecorder):
        self.inner, self.recorder = inner, recorder

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        for ex in examples:
            n_completion = len(ex["chosen_ids"]) + len(ex["rejected_ids"])
            self.recorder.add(ex["item_id"], 2 * len(ex["prompt_ids"]) + n_completion, n_completion)
        keep = ("prompt_ids", "chosen_ids", "rejected_ids")
        return self.inner([{k: v for k, v in ex.items() if k in keep} for ex in examples])


def build_dpo_trainer(model: Any, tokenizer: Any, stream: list[Item], pairs: dict[str, dict[str, Any]], args: Any,
                      callbacks: list, recorder: StepRecorder):  # -> trl.DPOTrainer
    """The DPOTrainer on the stream's pairs; the reference model is a frozen copy of the start model."""
    import datasets
    from trl import DPOTrainer

    from tunescope.train.data import prompt_messages

    rows = [{"prompt": prompt_messages(it), "chosen": [{"role": "assistant", "content": pairs[it.id]["chosen"]}],
             "rejected": [{"role": "assistant", "content": pairs[it.id]["rejected"]}], "item_id": it.id}
            for it in stream]
    trainer = DPOTrainer(model=model, ref_model=None, args=args, train_dataset=datasets.Dataset.from_list(rows),
                         processing_class=tokenizer, callbacks=callbacks)
    trainer.data_collator = PairCollator(trainer.data_collator, recorder)
    return trainer
