"""`train(method, model, out, cfg)`: one controlled SFT, GRPO, RLOO, CHORD or DPO run, checkpointed and resumable.

    setup   check the run directory, load model + tokenizer, freeze, build the prompt stream
    train   TRL trainer with RunCallback (step log, checkpoints at fixed fractions, resumable state)
    finish  check every process ends with the same weights, write compute totals to run.json

Run directory (see tunescope.checkpoints):

    RUN/run.json                     method, base model, resolved config, provenance, totals
    RUN/log.jsonl                    one line per optimiser step
    RUN/checkpoints/step-000000/     the base model as trained (step 0), then every checkpoint_every
    RUN/state/checkpoint-N/          the newest resumable Trainer state (optimiser, scheduler, RNG)

The same function serves `tunescope train`, the study runner and `accelerate launch` (every process
runs it; only the main one writes).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Literal

from tunescope.checkpoints import SIDECAR, checkpoint_dir
from tunescope.config import to_dict
from tunescope.errors import UserError
from tunescope.fsutil import atomic_dir, check_outside, check_writable_parent, whole_lines
from tunescope.provenance import provenance, write_json
from tunescope.threads import torch_threads
from tunescope.train.callbacks import (
    RunCallback,
    StepProgress,
    StepRecorder,
    export_checkpoint,
    gather_object,
)
from tunescope.train.config import METHODS, TRAINED_RL, BudgetConfig
from tunescope.train.data import filter_by_length, load_pool, prompt_stream
from tunescope.train.freeze import apply_freeze

Method = Literal["sft", "grpo", "rloo", "chord", "dpo"]


# ---------------------------------------------------------------- model
def load_model(model: str | Path, dtype: Any = None) -> tuple[Any, Any]:
    """(causal LM, tokenizer with a chat template) from a local directory or a hub id."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING,
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    )

    if Path(model).is_dir():
        from tunescope.weights import verify

        verify(model)
    try:
        config = AutoConfig.from_pretrained(str(model))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load a model config from {model} ({str(e).splitlines()[0]}); "
                        f"pass a Hugging Face model directory or hub id") from None
    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    archs = config.architectures or []
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING or (archs and not set(archs) & causal):
        what = archs[0] if archs else type(config).__name__
        raise UserError(f"{model} holds a {what}, not a causal language model; "
                        f"pass a decoder-only model directory (e.g. Llama)")
    try:
        tok = AutoTokenizer.from_pretrained(str(model))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load a tokenizer from {model} ({str(e).splitlines()[0]})") from None
    if not tok.chat_template:
        raise UserError(f"the tokenizer of {model} has no chat template; use an instruct/chat model or add one")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    lm = AutoModelForCausalLM.from_pretrained(str(model), dtype=dtype or torch.float32)
    return lm, tok


def weights_digest(model: Any) -> str:
    """sha256 over every parameter's bytes, in name order: equal digests mean identical weights."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------- run directory
def _last_state(run: Path) -> Path | None:
    states = [d for d in (run / "state").glob("checkpoint-*") if (d / "trainer_state.json").is_file()]
    return max(states, key=lambda d: int(d.name.split("-")[1]), default=None)


def _check_run_dir(run: Path, method: str, model: str, cfg: BudgetConfig, resume: bool) -> None:
    meta = run / "run.json"
    if not resume:
        if meta.exists():
            raise UserError(f"{run} already holds a run; pass --resume to continue it or choose another --out")
        if run.exists() and any(run.iterdir()):
            raise UserError(f"output directory {run} exists and is not empty; choose another --out")
        return
    if not meta.is_file():
        raise UserError(f"nothing to resume in {run} (no run.json); drop --resume to start a new run")
    old = json.loads(meta.read_text())
    if old.get("method") != method:
        raise UserError(f"{run} is a {old.get('method')} run; resume it with `tunescope train {old.get('method')}`")
    if old.get("base_model") != model:
        raise UserError(f"{run} was started from {old.get('base_model')}; resume it with --model {old.get('base_model')}")
    if old.get("config") != to_dict(cfg):
        changed = sorted(k for k, v in to_dict(cfg).items() if old.get("config", {}).get(k) != v)
        raise UserError(f"--resume needs the config the run started with; these keys differ: {', '.join(changed)}")


def _trim_log(run: Path, last_step: int) -> None:
    """Drop log lines after the step we resume from (they will be written again)."""
    log = run / "log.jsonl"
    if log.is_file():
        keep = [ln for ln in whole_lines(log) if json.loads(ln)["step"] <= last_step]
        tmp = log.with_name("log.jsonl.tmp")
        tmp.write_text("".join(ln + "\n" for ln in keep))
        os.replace(tmp, log)


def _totals(run: Path) -> dict[str, Any]:
    """Compute totals from the step log; a DPO run's pair sampling (RUN/pairs.json) counts as generation
    and as training time, so that the methods' budgets compare."""
    lines = [json.loads(ln) for ln in whole_lines(run / "log.jsonl")]
    pairs = json.loads((run / "pairs.json").read_text()) if (run / "pairs.json").is_file() else {}
    extra_s, extra_tok = pairs.get("seconds", 0.0), pairs.get("tokens_generated", 0)
    out = {"steps": len(lines), "tokens_trained": sum(ln["tokens"] or 0 for ln in lines),
           "tokens_generated": sum(ln["tokens_generated"] or 0 for ln in lines) + extra_tok,
           "train_seconds": round(sum(ln["seconds"] or 0 for ln in lines) + extra_s, 3),
           "generation_seconds": round(sum(ln["gen_seconds"] or 0 for ln in lines) + extra_s, 3)}
    return {**out, "pair_sampling": pairs} if pairs else out


# ---------------------------------------------------------------- trainer arguments
def common_args(cfg: BudgetConfig, run: Path) -> dict[str, Any]:
    """TrainingArguments shared by both methods, every one written out (defaults drift between versions)."""
    import torch

    gpu = torch.cuda.is_available()
    return dict(
        output_dir=str(run / "state"),
        max_steps=cfg.max_steps,
        num_train_epochs=1,
        learning_rate=cfg.lr,
        lr_scheduler_type=cfg.scheduler,
        warmup_steps=cfg.warmup_ratio,  # < 1: a ratio of max_steps
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        optim=cfg.optimizer,
        adam_beta1=cfg.adam_beta1,
        adam_beta2=cfg.adam_beta2,
        adam_epsilon=cfg.adam_epsilon,
        seed=cfg.seed,
        data_seed=cfg.seed,
        train_sampling_strategy="sequential",  # the prompt stream is pre-shuffled (data.py)
        bf16=bool(gpu and cfg.bf16),
        fp16=False,
        use_cpu=not gpu,
        activation_checkpointing=bool(gpu and cfg.activation_checkpointing),  # (was gradient_checkpointing)
        logging_strategy="steps",
        logging_steps=1,
        logging_first_step=False,
        save_strategy="no",  # RunCallback asks for saves at the checkpoint fractions
        save_total_limit=1,  # keep only the newest resumable state
        save_only_model=False,
        ignore_data_skip=False,
        report_to=["tensorboard"] if cfg.tensorboard else "none",
        disable_tqdm=False,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
        torch_empty_cache_steps=None,
    )


# ---------------------------------------------------------------- train
def train(method: Method, model: str | Path, out: Path, cfg: BudgetConfig, resume: bool = False,
          stop_after: int | None = None) -> Path:
    """Run `method` (one of `METHODS`: sft, grpo, rloo, chord, dpo) from `model` under budget `cfg`; return the run directory.

    `stop_after` ends this session after that checkpoint step (the run stays resumable).
    """
    run = Path(out)
    _check_request(method, model, run, cfg, resume, stop_after)
    if cfg.tensorboard:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(run / "tensorboard")
    lm, tok = load_model(model)
    counts = apply_freeze(lm, cfg.freeze, cfg.train_only)
    task, pool = load_pool(cfg.task, cfg.dataset, cfg.n_train_items, cfg.task_options,
                           cfg.dataset_columns, cfg.dataset_spec, need_solution=method in ("sft", "chord", "dpo"),
                           skip=cfg.skip_train_items)
    pool_all = len(pool)
    pool = filter_by_length(pool, tok, cfg.max_prompt_length, cfg.max_completion_length)
    stream = prompt_stream(pool, cfg.max_steps * cfg.prompts_per_step, cfg.seed)

    world = int(os.environ.get("WORLD_SIZE", "1"))
    accum = cfg.gradient_accumulation(method, world)
    args = _trainer_args(method)(cfg, common_args(cfg, run), accum)
    main = args.process_index == 0
    _barrier()  # every process has checked the run directory before the main one writes to it

    config = to_dict(cfg)
    prov = provenance(config=config, seed=cfg.seed, method=method, base_model=str(model))
    sidecar = {"method": method, "base_model": str(model), "config": config, "provenance": prov}
    state = _last_state(run) if resume else None
    if main:
        _start_run_dir(run, sidecar, state, lm, tok, cfg, {
            "data": {"pool": pool_all, "kept_after_length_filter": len(pool), "stream": len(stream)},
            "parameters": counts, "world_size": world})
    _barrier()

    pairs = None
    if method == "dpo":  # preference pairs from the start model's samples, scored by the task (train/dpo.py)
        from tunescope.train.dpo import load_or_build_pairs, pair_stream

        pairs = load_or_build_pairs(run, lm, tok, list({it.id: it for it in stream}.values()), task, cfg, main,
                                    _barrier)
        stream = pair_stream(stream, pairs, cfg.seed)
    trainer = _make_trainer(method, lm, tok, stream, task, pool, cfg, args, world, pairs,
                            lambda recorder: RunCallback(run, method, cfg.max_steps, cfg.checkpoint_steps(), sidecar,
                                                         recorder, **_step_sizes(method, cfg, world),
                                                         stop_after=stop_after))
    import torch

    t0 = time.perf_counter()
    gpu = torch.cuda.is_available()  # on a GPU, torch's CPU threads stay as they are
    with torch_threads(torch.get_num_threads() if gpu else None) as threads:
        trainer.train(resume_from_checkpoint=str(state) if state is not None else None)
    wall = time.perf_counter() - t0

    _finish_run(run, trainer, cfg, main, world, wall, threads)
    return run


def _check_request(method: str, model: str | Path, run: Path, cfg: BudgetConfig, resume: bool,
                   stop_after: int | None) -> None:
    """Everything about a train call that can be refused before a model is loaded."""
    if method not in METHODS:
        raise UserError(f"method must be {' or '.join(METHODS)}, got {method!r}")
    cfg.check_method(method)
    if stop_after is not None and stop_after not in cfg.checkpoint_steps()[1:]:
        raise UserError(f"stop_after={stop_after} is not a checkpoint step; use one of "
                        f"{', '.join(map(str, cfg.checkpoint_steps()[1:]))}")
    check_writable_parent(run)
    check_outside(run, {"the input model": model})
    _check_run_dir(run, method, str(model), cfg, resume)
    if method in TRAINED_RL and cfg.rl(method).use_vllm:
        _check_vllm(method)


def _trainer_args(method: str) -> Any:
    """The function that turns a budget into the TRL config of `method`."""
    from tunescope.train.dpo import dpo_args
    from tunescope.train.grpo import grpo_args
    from tunescope.train.rloo import rloo_args
    from tunescope.train.sft import sft_args

    def chord_args(cfg: BudgetConfig, common: dict[str, Any], accum: int) -> Any:
        return grpo_args(cfg, common, accum, cfg.chord)

    return {"sft": sft_args, "grpo": grpo_args, "rloo": rloo_args, "chord": chord_args, "dpo": dpo_args}[method]


def _step_sizes(method: str, cfg: BudgetConfig, world: int) -> dict[str, int]:
    """Sequences one process handles per optimiser step, and completions generated per step."""
    if method not in TRAINED_RL:  # SFT; DPO: one (chosen, rejected) pair per prompt
        return {"sequences_per_step": cfg.prompts_per_step // world, "completions_per_step": 0}
    completions = cfg.completions_per_step(method)
    return {"sequences_per_step": completions // world, "completions_per_step": completions}


def _make_trainer(method: str, lm: Any, tok: Any, stream: list, task: Any, pool: list, cfg: BudgetConfig,
                  args: Any, world: int, pairs: dict | None, callback: Any) -> Any:
    """The TRL trainer of `method` with the run's callback (`callback(recorder)`) and one progress bar."""
    from transformers.trainer_callback import ProgressCallback

    from tunescope.train.chord import build_chord_trainer
    from tunescope.train.grpo import build_grpo_trainer
    from tunescope.train.rloo import build_rloo_trainer
    from tunescope.train.sft import build_sft_trainer

    recorder = StepRecorder()
    if method == "sft":
        trainer = build_sft_trainer(lm, tok, stream, args, [callback(recorder)], recorder, cfg)
    elif method == "dpo":
        from tunescope.train.dpo import build_dpo_trainer

        trainer = build_dpo_trainer(lm, tok, stream, pairs, args, [callback(recorder)], recorder)
    else:
        build = {"grpo": build_grpo_trainer, "rloo": build_rloo_trainer, "chord": build_chord_trainer}[method]
        trainer = build(lm, tok, stream, task, {it.id: it for it in pool}, cfg, args, [callback(recorder)], recorder)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(StepProgress())
    return trainer


def _start_run_dir(run: Path, sidecar: dict[str, Any], state: Path | None, lm: Any, tok: Any,
                   cfg: BudgetConfig, facts: dict[str, Any]) -> None:
    """On the main process: run.json (once), the step-0 checkpoint, and after a crash between
    saving a trainer state and publishing its checkpoint, that checkpoint; the log trimmed to it."""
    run.mkdir(parents=True, exist_ok=True)
    if not (run / "run.json").exists():
        write_json(run / "run.json", {**{k: sidecar[k] for k in ("method", "base_model", "config", "provenance")},
                                      "status": "running", **facts})
    first = checkpoint_dir(run, 0)
    if not first.exists():
        with atomic_dir(first) as tmp:
            lm.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            write_json(tmp / SIDECAR, {**sidecar, "step": 0, "fraction": 0.0})
    step = int(state.name.split("-")[1]) if state is not None else 0
    if state is not None:
        export_checkpoint(state, checkpoint_dir(run, step), {**sidecar, "step": step, "fraction": step / cfg.max_steps})
    _trim_log(run, step)


def _finish_run(run: Path, trainer: Any, cfg: BudgetConfig, main: bool, world: int, wall: float,
                threads: int) -> None:
    """Record the outcome in run.json and check that data-parallel replicas ended identical
    (sharded engines, ZeRO-3 and FSDP, hold different shards by design and are not compared)."""
    sharded = trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled
    digests = [] if sharded else gather_object(weights_digest(trainer.model))
    if main:
        meta = json.loads((run / "run.json").read_text())
        step = trainer.state.global_step
        meta.update({
            "status": "done" if step >= cfg.max_steps else f"stopped at step {step}",
            "totals": {**_totals(run), "last_session_wall_seconds": round(wall, 3)},
            "torch_threads": threads,
            "replicas": {"world_size": world, "weights_sha256": digests,
                         "identical": None if sharded else len(set(digests)) == 1},
        })
        write_json(run / "run.json", meta)
    _barrier()
    if len(set(digests)) > 1:
        raise RuntimeError(f"data-parallel replicas diverged: {digests}")


def _check_vllm(method: str) -> None:
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise UserError(f"{method}.use_vllm=true needs a CUDA GPU; set {method}.use_vllm=false on this machine")
    if importlib.util.find_spec("vllm") is None:
        raise UserError(f"{method}.use_vllm=true needs vLLM: pip install vllm (or set {method}.use_vllm=false)")


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
