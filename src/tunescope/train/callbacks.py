"""What a run writes while it trains: checkpoints at fixed fractions, the step log, timings.

`RunCallback` plugs into the Trainer's step loop (all processes run it; only the main one writes):

    on_step_end   close the step's timers; ask the Trainer to save its state at checkpoint steps
    on_log        append one JSON line per step to RUN/log.jsonl
    on_save       the Trainer has written RUN/state/checkpoint-N (weights, tokenizer, optimiser,
                  scheduler, RNG); copy its model files into RUN/checkpoints/step-N with a sidecar

Keeping the resumable state in RUN/state (only the newest is kept) and the published model
directories in RUN/checkpoints (never overwritten) means a crash at any point loses at most the
steps since the last checkpoint, and `--resume` restarts from exactly there.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import deque
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from tunescope.checkpoints import SIDECAR, checkpoint_dir
from tunescope.fsutil import atomic_dir
from tunescope.provenance import write_json
from tunescope.train.config import TRAINED_RL

# Files of a Trainer state checkpoint that are not part of the model directory.
STATE_ONLY = ("optimizer.pt", "scheduler.pt", "scaler.pt", "trainer_state.json", "training_args.bin")


class StepRecorder:
    """Per-sequence records from the data path (collator, reward functions) and generation time.

    Data loaders prefetch, so records arrive ahead of the step that consumes them; `take(n)` pops
    exactly the `n` sequences one optimiser step consumes on this process.
    """

    def __init__(self) -> None:
        self.queue: deque[tuple[str, int, int]] = deque()  # (item id, tokens, completion tokens)
        self.gen_seconds = 0.0

    def add(self, item_id: str, tokens: int = 0, completion_tokens: int = 0) -> None:
        self.queue.append((item_id, tokens, completion_tokens))

    def take(self, n: int) -> dict[str, Any]:
        recs = [self.queue.popleft() for _ in range(min(n, len(self.queue)))]
        out = {"items": [r[0] for r in recs], "tokens": sum(r[1] for r in recs),
               "completion_tokens": sum(r[2] for r in recs), "sequences": len(recs),
               "gen_seconds": self.gen_seconds}
        self.gen_seconds = 0.0
        return out


class RecordingCollator:
    """Wrap TRL's SFT collator: note the item id and token counts of every sequence."""

    def __init__(self, inner: Any, recorder: StepRecorder):
        self.inner, self.recorder = inner, recorder

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        for ex in examples:
            labels = ex.get("labels", ex["input_ids"])
            self.recorder.add(ex["item_id"], len(ex["input_ids"]), sum(1 for t in labels if t != -100))
        keep = ("input_ids", "labels", "seq_lengths", "completion_mask", "assistant_masks")
        return self.inner([{k: v for k, v in ex.items() if k in keep} for ex in examples])


def export_checkpoint(state_dir: Path, out: Path, sidecar: dict[str, Any]) -> bool:
    """Copy the model files of a Trainer checkpoint into `out` (atomically); False if `out` exists."""
    if out.exists():
        return False
    with atomic_dir(out) as tmp:
        for f in state_dir.iterdir():
            if f.is_file() and f.name not in STATE_ONLY and not f.name.startswith("rng_state"):
                shutil.copy2(f, tmp / f.name)
        write_json(tmp / SIDECAR, sidecar)
    return True


def gather_object(obj: Any) -> list[Any]:
    """`obj` from every process (a one-element list when not distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class RunCallback(TrainerCallback):
    """Step log, checkpoint schedule and checkpoint export for one run (see module docstring)."""

    def __init__(self, run: Path, method: str, max_steps: int, checkpoint_steps: list[int],
                 sidecar: dict[str, Any], recorder: StepRecorder, sequences_per_step: int,
                 completions_per_step: int, stop_after: int | None = None):
        self.run, self.method, self.max_steps = run, method, max_steps
        self.checkpoint_steps = set(checkpoint_steps)
        self.sidecar, self.recorder = sidecar, recorder
        self.sequences_per_step = sequences_per_step  # on this process
        self.completions_per_step = completions_per_step  # RL, over all processes
        self.stop_after = stop_after  # end this session after that step (resume later)
        self._t0 = time.perf_counter()
        self._step: dict[str, Any] = {}
        self._last_tokens_seen = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self._last_tokens_seen = state.num_input_tokens_seen or 0

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        seconds = time.perf_counter() - self._t0
        per_rank = gather_object(self.recorder.take(self.sequences_per_step))
        items = [i for r in per_rank for i in r["items"]]
        if self.method in TRAINED_RL:  # a prompt's group of completions is adjacent: keep one id per prompt
            items = [i for k, i in enumerate(items) if k == 0 or items[k - 1] != i]
        self._step = {
            "seconds": seconds,
            "gen_seconds": max(r["gen_seconds"] for r in per_rank),
            "items": items,
            "sft_tokens": sum(r["tokens"] for r in per_rank),
            "sft_completion_tokens": sum(r["completion_tokens"] for r in per_rank),
            "sft_sequences": sum(r["sequences"] for r in per_rank),
        }
        if state.global_step in self.checkpoint_steps:
            control.should_save = True
        if state.global_step == self.stop_after:
            control.should_training_stop = True
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" not in logs or not state.is_world_process_zero:
            return
        s = self._step
        line: dict[str, Any] = {"step": state.global_step, "fraction": state.global_step / self.max_steps,
                                "loss": logs.get("loss"), "lr": logs.get("learning_rate"),
                                "grad_norm": logs.get("grad_norm")}
        if self.method in TRAINED_RL:  # GRPO, RLOO, CHORD: the same log keys
            seen = state.num_input_tokens_seen or 0
            mean_len = logs.get("completions/mean_length")
            line.update({
                "reward_mean": logs.get("reward"), "reward_std": logs.get("reward_std"),
                "completion_length": mean_len,
                "tokens": seen - self._last_tokens_seen,
                "tokens_generated": round(mean_len * self.completions_per_step) if mean_len is not None else 0,
            })
            if args.beta > 0:
                line["kl"] = logs.get("kl")
            line.update({k.replace("rewards/", "reward_").replace("/mean", ""): v for k, v in logs.items()
                         if k.startswith("rewards/") and k.endswith("/mean")})
            if "chord_mu" in logs:  # CHORD: the step's SFT weight and its (phi-weighted) SFT loss
                line.update({"chord_mu": logs["chord_mu"], "chord_sft_loss": logs["chord_sft_loss"]})
            self._last_tokens_seen = seen
        else:  # SFT, DPO: the collator counted the tokens (DPO: prompt twice, chosen + rejected)
            n = max(s.get("sft_sequences", 0), 1)
            line.update({"reward_mean": None, "reward_std": None,
                         "completion_length": s.get("sft_completion_tokens", 0) / n,
                         "tokens": s.get("sft_tokens", 0), "tokens_generated": 0})
            if "anchor_kl" in logs:  # anchored SFT: the mean KL(pi_ref || pi_theta) per response token
                line["anchor_kl"] = logs["anchor_kl"]
            if self.method == "dpo":  # implicit rewards beta * log pi/pi_ref of chosen and rejected
                line.update({f"dpo_{k.split('/')[1]}": logs.get(k) for k in
                             ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")})
        line.update({"seconds": s.get("seconds"), "gen_seconds": s.get("gen_seconds", 0.0),
                     "items": s.get("items", [])})
        with open(self.run / "log.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        step = state.global_step
        src = Path(args.output_dir) / f"checkpoint-{step}"
        export_checkpoint(src, checkpoint_dir(self.run, step),
                          {**self.sidecar, "step": step, "fraction": step / self.max_steps})


class StepProgress(ProgressCallback):
    """The Trainer's tqdm bar (stderr), with loss and reward as its postfix instead of a printed dict per step."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs and "loss" in logs:
            post = {"loss": f"{logs['loss']:.4g}"}
            if logs.get("reward") is not None:
                post["reward"] = f"{logs['reward']:.3g}"
            self.training_bar.set_postfix(post, refresh=False)
