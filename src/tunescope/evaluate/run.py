"""The sweep: every checkpoint x every suite -> per-sample records, scores with 95% CIs, distribution metrics.

    evaluate(models, ["maths", "game24_ood"], Path("eval"), EvalConfig(n=64))

Life cycle: resolve suites and load their items once -> load the tokenizer once -> (the reference,
once: evaluate/reference.py) -> for each checkpoint: load it, generate and score every suite, measure
KL and CKA to the reference, entropy and length, append its rows to the output files, mark it done in
eval.json, free it. A checkpoint that fails is recorded and skipped; the others' results are kept,
and a rerun with the same --out and config resumes after the last finished checkpoint (rows of an
unfinished one are dropped first).

Outputs in `out/`:
    samples.jsonl     one line per completion: model, path, step, suite, item_id, sample, mode,
                      prompt, completion, extracted, score (+ n_tokens, truncated, error, and
                      for a `Diagnosed` task such as game24 its class of the completion, outcome)
    scores.csv        model, path, method, step, fraction, suite, metric, value, ci_low, ci_high, n
                      (metrics: accuracy, answer_rate, pass@k / mean@k, and `outcome:<class>`, the
                      share of each class of a `Diagnosed` task)
    distribution.csv  model, path, step, fraction, reference, kl, kl_ci_low, kl_ci_high, mean_length,
                      mean_entropy, n_tokens, per-item KL sums and token counts, and fkl, fkl_ci_low,
                      fkl_ci_high (the same KL along samples of the reference instead of gold solutions)
    representations.csv  model, path, step, fraction, suite, layer, cka, n_items: linear CKA of the
                      checkpoint's hidden states to the reference's on the suite's first cka_items prompts
    reference_samples.jsonl  the reference's sampled responses to the KL prompts, drawn once per sweep
    eval.json         resolved config, provenance, finished and failed checkpoints
"""

from __future__ import annotations

import os
import sys
import traceback
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from tunescope.checkpoints import ModelRef
from tunescope.errors import UserError
from tunescope.evaluate.outputs import SCORE_COLUMNS, append, key, open_out, write_state
from tunescope.evaluate.prepare import LET, Suite, option_text, prepare
from tunescope.evaluate.reference import Reference, load_reference
from tunescope.evaluate.stats import bootstrap_ci, ks_for, pass_at_k
from tunescope.world.task import Diagnosed, Item, Task

if TYPE_CHECKING:
    from tunescope.evaluate.engine import Engine


@dataclass
class EvalConfig:
    """How to evaluate. Defaults: greedy, 64 items per suite, option log-likelihood for multiple choice."""

    n: int = 64  # items per suite (the first n of its test split); 0 = all
    n_final: int | None = None  # items per suite for final models (a run's last checkpoint, a lone model); None = n
    n_by_suite: dict[str, int] = field(default_factory=dict)  # per-suite n, e.g. {game24_ood: 0}: all OOD hands
    n_final_by_suite: dict[str, int] = field(default_factory=dict)  # per-suite n_final (wins over n_by_suite there)
    max_new_tokens: int = 256  # longer is slower; truncated completions are scored as they are
    batch_size: int = 16  # prompts per generation batch; larger is faster until memory runs out
    temperature: float = 0.0  # 0 = greedy; the original study sampled at 0.6
    top_p: float = 1.0  # nucleus sampling (only when temperature > 0); the original study used 0.95
    n_samples: int = 1  # completions per prompt; > 1 adds pass@k and mean@k (needs temperature > 0)
    seed: int = 0  # sampling and bootstrap seed
    mc_mode: Literal["loglik", "generate", "both"] = "loglik"  # multiple choice: option likelihood, letter, both
    mc_template: str = "<answer>{choice}</answer>"  # scored continuation; {choice} = option text, {letter}
    mc_cloze: bool = True  # items with meta["cloze"] (the option stated as a sentence) score that instead
    backend: Literal["auto", "hf", "vllm"] = "auto"  # auto = vLLM when installed and a GPU exists
    compact: bool = True  # hf backend, greedy, plain Llama on CPU: the compact decoder (evaluate/compact.py)
    device: str = "auto"  # auto = cuda when available
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto = bf16 on GPU, fp32 on CPU
    kl_items: int = 32  # gold completions teacher-forced for KL (needs a reference); 0 = no KL
    kl_suite: str | None = None  # suite whose gold solutions are used for KL; default: first generative one
    kl_sampled: bool = True  # also the forward KL on samples of the reference (T = 1) on the same prompts (RL's Razor)
    cka_items: int = 64  # prompts per suite for per-layer linear CKA to the reference (needs one); 0 = no CKA
    cka_suites: list[str] = field(default_factory=list)  # suites compared by CKA; default: every evaluated suite
    cka_every: bool = False  # CKA at every checkpoint; False = final models only (a forward pass per suite each)
    bootstrap: int = 2000  # bootstrap resamples for the 95% intervals
    tokenizer: str | None = None  # tokenizer directory; default: the first model's
    lm_eval: list[str] = field(default_factory=list)  # lm-evaluation-harness task names
    lm_eval_include: str | None = None  # directory of extra lm-eval task YAMLs
    lm_eval_limit: int | None = None  # items per lm-eval task (None = all)

    def __post_init__(self) -> None:
        if self.n < 0 or (self.n_final or 0) < 0 or any(v < 0 for v in [*self.n_by_suite.values(),
                                                                         *self.n_final_by_suite.values()]):
            raise UserError("eval: n, n_final and every n_by_suite and n_final_by_suite value must be >= 0 "
                            "(0 = all items)")
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.n_samples < 1:
            raise UserError("eval: max_new_tokens >= 1, batch_size >= 1 and n_samples >= 1 are required")
        if self.cka_items < 0 or self.kl_items < 0:
            raise UserError("eval: kl_items and cka_items must be >= 0 (0 = off)")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise UserError("eval: temperature must be >= 0 and top_p in (0, 1]")
        if self.n_samples > 1 and self.temperature == 0:
            raise UserError("eval: n_samples > 1 with greedy decoding gives identical samples; set temperature > 0")
        if "{choice}" not in self.mc_template and "{letter}" not in self.mc_template:
            raise UserError("eval: mc_template must contain {choice} or {letter}")


# ------------------------------------------------------------------------------------------ sweep
def evaluate(models: list[ModelRef], suites: list[str], out: Path, cfg: EvalConfig,
             reference: Path | None = None, task_specs: list[str | Path] | None = None,
             data: list[str] | None = None) -> pd.DataFrame:
    """Evaluate every model on every suite; returns scores.csv as a DataFrame (see module docstring)."""
    from tunescope.evaluate.engine import load_tokenizer, render_prompt
    from tunescope.evaluate.suites import resolve_suites

    if not models:
        raise UserError("no models to evaluate; pass model or run directories")
    tasks = resolve_suites(suites, task_specs, data) if (suites or task_specs) else {}
    if not tasks and not cfg.lm_eval:
        raise UserError("nothing to evaluate; pass --suite, --task-spec or --lm-eval")
    out = Path(out)
    state = open_out(out, cfg, list(tasks), reference)
    todo = [m for m in models if key(m) not in state["done"]]
    if len(todo) < len(models):
        print(f"resuming: {len(models) - len(todo)} checkpoint(s) already done in {out}", file=sys.stderr)

    tok = load_tokenizer(cfg.tokenizer or models[0].path)
    prepared = [prepare(name, task, tok, cfg, render_prompt) for name, task in tasks.items()]
    ref = load_reference(reference, out, prepared, tasks, tok, cfg, render_prompt) if todo else None

    final = _finals(models)
    for m in tqdm(todo, desc="checkpoints", disable=len(todo) < 2):
        engine = None
        try:
            samples, scores, dist, reps = [], [], None, []
            if prepared:
                engine = _make_engine(m.path, tok, cfg)
                is_final = key(m) in final
                samples, scores, dist, reps = _evaluate_one(m, engine, [s.head(is_final) for s in prepared],
                                                            cfg, ref, reference, cka=is_final or cfg.cka_every)
                engine.close()
            if cfg.lm_eval:
                from tunescope.evaluate.lmeval import run_lm_eval

                scores += [_row(m, **r) for r in run_lm_eval(m.path, cfg)]
        except Exception as e:  # one bad checkpoint (UserError or other) never loses the others
            state["failed"][key(m)] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            if os.environ.get("TUNESCOPE_DEBUG"):
                traceback.print_exc()
            print(f"warning: {m.name} failed ({state['failed'][key(m)]}); continuing", file=sys.stderr)
            write_state(out, state)
            continue
        finally:
            if engine is not None:
                engine.close()
        append(out, samples, scores, dist, reps)
        state["done"].append(key(m))
        state["failed"].pop(key(m), None)
        write_state(out, state)

    if state["failed"]:
        raise UserError(f"{len(state['failed'])} checkpoint(s) failed: "
                        + "; ".join(f"{k}: {v}" for k, v in state["failed"].items())
                        + f". Results of the others are in {out}; fix and rerun to resume")
    return pd.read_csv(out / "scores.csv") if (out / "scores.csv").exists() else pd.DataFrame(columns=SCORE_COLUMNS)


def _finals(models: list[ModelRef]) -> set[str]:
    """Keys of the final models: each run's last checkpoint in the sweep, and every model outside a run."""
    last: dict[Path, ModelRef] = {}
    for m in models:
        if m.step is None:
            last[m.path] = m
        else:
            run = m.path.parent
            if run not in last or (last[run].step or 0) < m.step:
                last[run] = m
    return {key(m) for m in last.values()}


def _make_engine(path: Path, tok: Any, cfg: EvalConfig) -> Engine:
    from tunescope.evaluate.vllm_engine import vllm_available

    if cfg.backend == "vllm" or (cfg.backend == "auto" and vllm_available()):
        from tunescope.evaluate.vllm_engine import VLLMEngine

        return VLLMEngine(path, tok, cfg)
    from tunescope.evaluate.engine import HFEngine

    if not (Path(path) / "config.json").is_file():
        raise UserError(f"{path} has no config.json; it is not a model directory")
    return HFEngine(path, tok, cfg.device, cfg.dtype, compact=cfg.compact)


# ------------------------------------------------------------------------------------------ one checkpoint
def _evaluate_one(m: ModelRef, engine: Engine, prepared: list[Suite], cfg: EvalConfig, ref: Reference | None,
                  reference: Path | None, cka: bool = True):
    samples: list[dict[str, Any]] = []
    scores: list[dict[str, Any]] = []
    lengths, ent_sum, ent_steps = [], 0.0, 0
    generated = _generate_all(m, engine, [s for s in prepared if _generative(s, cfg)], cfg)
    for s in prepared:
        base = {"model": m.name, "path": str(m.path), "step": m.step, "suite": s.name}
        if _generative(s, cfg):
            gens = generated[s.name]
            per_item = np.zeros((len(s.items), cfg.n_samples))  # (N, n)
            answered = np.zeros_like(per_item)
            outcomes: list[list[str | None]] = [[] for _ in s.items]
            for i, (item, item_gens) in enumerate(zip(s.items, gens)):
                for j, g in enumerate(item_gens):
                    rec = _score_completion(s.task, item, g.text)
                    per_item[i, j], answered[i, j] = rec["score"], rec["extracted"] is not None
                    outcomes[i].append(rec.get("outcome"))
                    samples.append({**base, "item_id": item.id, "sample": j, "mode": "generate",
                                    "prompt": item.prompt, "completion": g.text, **rec,
                                    "n_tokens": g.n_tokens, "truncated": g.truncated})
                    lengths.append(g.n_tokens)
                    ent_sum += g.entropy_sum
                    ent_steps += g.n_tokens + (not g.truncated)
            name = "accuracy" if s.task.kind == "generate" or cfg.mc_mode == "generate" else "accuracy_letter"
            scores.append(_metric(m, s.name, name, per_item.mean(1), cfg))
            scores.append(_metric(m, s.name, "answer_rate", answered.mean(1), cfg))
            if isinstance(s.task, Diagnosed):
                scores += _outcome_shares(m, s, outcomes, cfg)
            if cfg.n_samples > 1:
                scores.append(_metric(m, s.name, f"mean@{cfg.n_samples}", per_item.mean(1), cfg))
                correct = per_item.sum(1).round().astype(int)
                for k in ks_for(cfg.n_samples):
                    vals = [pass_at_k(cfg.n_samples, c, k) for c in correct]
                    scores.append(_metric(m, s.name, f"pass@{k}", np.asarray(vals), cfg))
        if s.task.kind == "choice" and cfg.mc_mode in ("loglik", "both"):
            samples_ll, acc, acc_norm = _choice_by_loglik(engine, s, cfg, base)
            samples += samples_ll
            scores.append(_metric(m, s.name, "accuracy", acc, cfg))
            scores.append(_metric(m, s.name, "accuracy_norm", acc_norm, cfg))

    dist = {"model": m.name, "path": str(m.path), "step": m.step, "fraction": m.fraction,
            "reference": str(reference) if reference else None,
            "mean_length": float(np.mean(lengths)) if lengths else float("nan"),
            "mean_entropy": ent_sum / ent_steps if ent_steps else float("nan"), "n_tokens": 0}
    reps = []
    if ref is not None:
        cols, reps = ref.measure(engine.hf(), cka=cka)
        dist.update(cols)
        reps = [{"model": m.name, "path": str(m.path), "step": m.step, "fraction": m.fraction, **r} for r in reps]
    return samples, scores, dist, reps


def _generative(s: Suite, cfg: EvalConfig) -> bool:
    return s.task.kind == "generate" or cfg.mc_mode in ("generate", "both")


def _generate_all(m: ModelRef, engine: Engine, suites: list[Suite], cfg: EvalConfig) -> dict[str, list]:
    """Completions of every generative suite's prompts. Greedy decoding does not depend on what else
    is in a batch, so all suites go through one call (fewer, fuller batches, sorted by length);
    sampling is seeded per suite, so each suite gets its own call."""
    kw = {"max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature, "top_p": cfg.top_p,
          "n_samples": cfg.n_samples, "batch_size": cfg.batch_size}
    if cfg.temperature == 0 and suites:
        gens = engine.generate([p for s in suites for p in s.prompts], seed=cfg.seed, **kw,
                               progress=f"{m.name} {', '.join(s.name for s in suites)}")
        out, k = {}, 0
        for s in suites:
            out[s.name], k = gens[k:k + len(s.prompts)], k + len(s.prompts)
        return out
    return {s.name: engine.generate(s.prompts, seed=cfg.seed ^ zlib.crc32(s.name.encode()), **kw,
                                    progress=f"{m.name} {s.name}") for s in suites}


def _score_completion(task: Task, item: Item, text: str) -> dict[str, Any]:
    """Extraction and scoring, recorded separately; output the verifier cannot handle is scored wrong.
    A `Diagnosed` task's class of the completion is recorded as `outcome`."""
    try:
        rec = {"extracted": task.extract(text), "score": float(task.score(item, text)), "error": None}
        if isinstance(task, Diagnosed):
            rec["outcome"] = task.diagnose(item, text)
        return rec
    except Exception as e:  # a task's scorer choking on model output must not end the sweep
        return {"extracted": None, "score": 0.0, "error": f"{type(e).__name__}: {e}"}


def _outcome_shares(m: ModelRef, s: Suite, outcomes: list[list[str | None]], cfg: EvalConfig) -> list[dict]:
    """Per class of a `Diagnosed` task, the share of completions in it (`outcome:<class>`, with CIs)."""
    rows = []
    for cls in s.task.DIAGNOSES:  # type: ignore[attr-defined]
        share = np.array([np.mean([o == cls for o in item]) for item in outcomes])
        rows.append(_metric(m, s.name, f"outcome:{cls}", share, cfg))
    return rows


def _choice_by_loglik(engine: Engine, s: Suite, cfg: EvalConfig, base: dict[str, Any]):
    """Pick the option with the highest summed log-likelihood (and, separately, per-token mean)."""
    ll = engine.sequence_loglik(s.contexts, s.options, batch_size=cfg.batch_size)
    samples, acc, acc_norm, k = [], [], [], 0
    for item in s.items:
        n_opt = len(item.meta["choices"])
        total = np.asarray(ll[k:k + n_opt])  # (C,)
        lens = np.asarray([max(len(o), 1) for o in s.options[k:k + n_opt]])
        k += n_opt
        pick, pick_norm = LET[int(total.argmax())], LET[int((total / lens).argmax())]
        acc.append(float(pick == item.answer))
        acc_norm.append(float(pick_norm == item.answer))
        samples.append({**base, "item_id": item.id, "sample": 0, "mode": "loglik", "prompt": item.prompt,
                        "completion": option_text(cfg, item, LET.index(pick)), "extracted": pick,
                        "score": acc[-1], "error": None, "extracted_norm": pick_norm, "score_norm": acc_norm[-1],
                        "logliks": [round(float(x), 4) for x in total]})
    return samples, np.asarray(acc), np.asarray(acc_norm)


def _metric(m: ModelRef, suite: str, metric: str, per_item: np.ndarray, cfg: EvalConfig) -> dict[str, Any]:
    value, lo, hi = bootstrap_ci(per_item, n_resamples=cfg.bootstrap, seed=cfg.seed)
    return _row(m, suite=suite, metric=metric, value=value, ci_low=lo, ci_high=hi, n=len(per_item))


def _row(m: ModelRef, **kw: Any) -> dict[str, Any]:
    return {"model": m.name, "path": str(m.path), "method": m.method, "step": m.step, "fraction": m.fraction, **kw}


