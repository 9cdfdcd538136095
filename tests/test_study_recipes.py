"""The papers' own setups as study files (configs/studies/rajani_olmo2_7b.yaml, jin_game24_7b.yaml),
run end to end on CPU with what a test machine has: the 7B base swapped for a tiny random model of
the same family (OLMo-2 with its untied head, Qwen-2.5 with q/k/v biases and a ChatML template,
Llama-3 with an untied head and llama3 rope scaling), the data for small local samples, vLLM and
accelerate for the HF engine and the study's own process, and the budget for a few steps. Every
other setting is the recipe's: every stage runs and the report renders."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from _models import lm_eval_tiny_qa, tiny_model

from tunescope.cli import main
from tunescope.study.config import load_study

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
STUDIES = REPO / "configs" / "studies"
TINY_TRAIN = ("max_steps: 2, prompts_per_step: 2, micro_batch_size: 2, n_train_items: 8, max_prompt_length: 256, "
              "max_completion_length: 64, checkpoint_every: 0.5, grpo: {num_generations: 2, use_vllm: false}")


def _run(recipe: str, overrides: list[str], out: Path) -> dict:
    assert main(["run", str(STUDIES / recipe), "--out", str(out), *overrides]) == 0
    assert (out / "report.html").stat().st_size > 10_000
    return json.loads((out / "study.json").read_text())


def test_rajani_recipe_runs_end_to_end_on_a_tiny_olmo2(smoke_organism, tmp_path):
    base = tiny_model(tmp_path / "olmo2", "olmo2", smoke_organism)
    tasks = lm_eval_tiny_qa(tmp_path / "tasks", DATA / "lmeval_qa.json")
    runs = ["grpo", "sft_1e6", "sft_5e5", "sft_5e5_frozen_mlp", "sft_5e5_qk_only"]
    overrides = [f"base.path={base}", "training.launch=null",
                 f"training.settings={{{TINY_TRAIN}, lr: 1.0e-4}}",
                 *[f"runs.{r}.dataset={DATA / 'cn_k12_sample.jsonl'}" for r in runs],
                 *[f"runs.{r}.budget={{prompts_per_step: 2}}" for r in runs[1:]],
                 "runs.sft_5e5_frozen_mlp.freeze=[gate,up,down@1-1]",  # layer 1 of 2, as 19-25 of 32 is mid-depth
                 f"evaluation.data=[math500={DATA / 'math500_sample.jsonl'}, gsm8k={DATA / 'gsm8k_sample.jsonl'}, "
                 f"gpqa={DATA / 'gpqa_sample.csv'}, mmlu={DATA / 'mmlu_sample.parquet'}]",
                 "evaluation.settings={n: 2, temperature: 0.6, top_p: 0.95, max_new_tokens: 4, batch_size: 4, "
                 "kl_items: 2, kl_suite: math500, cka_items: 2, cka_suites: [gpqa, mmlu], bootstrap: 20, "
                 f"lm_eval: [tiny_qa], lm_eval_include: {tasks}}}"]
    study = _run("rajani_olmo2_7b.yaml", overrides, tmp_path / "out")
    runs_csv = pd.read_csv(tmp_path / "out" / "tables" / "runs.csv").set_index("run")
    assert list(runs_csv.index) == runs
    final = pd.read_csv(tmp_path / "out" / "tables" / "final.csv")
    assert {"math500", "gsm8k", "gpqa", "mmlu", "tiny_qa"} <= set(final["suite"])  # lm-eval inside the study
    # the Q/K-only run trains q_proj, k_proj and the untied LM head (as the authors' `model.model` freeze)
    qk = Path(study["stages"]["train/sft_5e5_qk_only/s0"]["result"]["run"])
    counts = json.loads((qk / "run.json").read_text())["parameters"]
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(base)
    qk_params = 2 * c.num_hidden_layers * c.hidden_size * c.hidden_size
    assert counts["trainable"] == qk_params + c.vocab_size * c.hidden_size
    diff = pd.read_csv(tmp_path / "out" / "tables" / "weight_change_final.csv")
    assert set(diff["run"]) >= set(runs)


@pytest.mark.parametrize("family", ["qwen2", "llama3"])
def test_jin_recipe_runs_end_to_end_on_a_tiny_model(family, smoke_organism, tmp_path):
    base = tiny_model(tmp_path / family, family, smoke_organism)
    overrides = [f"base.path={base}", "training.launch=null",
                 f"training.settings={{{TINY_TRAIN}, lr: 1.0e-4, scheduler: cosine, warmup_ratio: 0.03, "
                 "task_options: {shaped: false}}",
                 "training.settings.max_steps=4", "training.settings.checkpoint_every=0.25",
                 "training.settings.max_completion_length=128",  # 24-point gold answers take 74-91 tokens
                 *[f"runs.{r}.budget={{max_steps: 2, prompts_per_step: 2, checkpoint_every: 0.5, "
                   "task_options: {shaped: true}}" for r in ("rl_late", "rl_overfit")],
                 "evaluation.settings={n: 2, max_new_tokens: 4, batch_size: 4, kl_items: 2, cka_items: 2, "
                 "cka_suites: [game24_ood], bootstrap: 20}"]
    cfg = load_study(STUDIES / "jin_game24_7b.yaml", overrides=overrides)
    assert cfg.runs["rl_late"].init == "sft:0.5" and cfg.interventions["restore_top20"].target == "sft:0.5"
    study = _run("jin_game24_7b.yaml", overrides, tmp_path / "out")
    stages = study["stages"]
    assert {"intervene/restore_top20/s0", "intervene/reset_first25/s0", "spectrum/sft_peak_vs_late"} <= set(stages)
    final = pd.read_csv(tmp_path / "out" / "tables" / "final.csv")
    assert {"game24", "game24_ood"} <= set(final["suite"]) and {"sft", "rl_late", "rl_overfit"} <= set(final["run"])
    log = [json.loads(ln) for ln in (Path(stages["train/rl_late/s0"]["result"]["run"]) / "log.jsonl").open()]
    assert all(ln.get("tokens_generated", 0) > 0 for ln in log)  # GRPO sampled with the HF generate of this family
