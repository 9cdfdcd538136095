"""Runs trained elsewhere (issue 19): the checkpoint layouts of the Hugging Face Trainer / TRL, verl,
open-instruct and OpenRLHF are found and ordered by step, with their fraction of training; shards
that were never consolidated are one-line errors naming the tool that merges them. Each layout is
written with a tiny random Llama and read back by `tunescope diff`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tunescope.checkpoints import resolve_models
from tunescope.cli import main
from tunescope.errors import UserError


def _model(d: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    LlamaForCausalLM(cfg).save_pretrained(str(d))
    return d


def _hf_run(root: Path) -> Path:
    run = root / "trl_run"
    for i, step in enumerate((20, 10)):  # written out of order: read back by step
        ck = _model(run / f"checkpoint-{step}", seed=i + 1)
        (ck / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": 40}))
    _model(run, seed=9)  # the final model saved at the root, as `trainer.save_model()` does
    return run


LAYOUTS = {  # name -> (step directory -> model directory inside it), steps, expected fractions
    "hf-trainer": None,
    "verl": (lambda run, step: run / f"global_step_{step}" / "actor" / "huggingface", (5, 10), (0.5, 1.0)),
    "open-instruct": (lambda run, step: run / f"step_{step}", (100, 300, 200), (1 / 3, 2 / 3, 1.0)),
    "openrlhf": (lambda run, step: run / f"global_step{step}" / "hf_model", (3, 6), (0.5, 1.0)),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_each_layout_is_found_and_ordered_by_step(layout, tmp_path):
    if layout == "hf-trainer":
        run, steps, fractions = _hf_run(tmp_path), (10, 20), (0.25, 0.5)  # max_steps from trainer_state.json
    else:
        where, steps, fractions = LAYOUTS[layout]
        run = tmp_path / "run"
        for i, step in enumerate(steps):
            _model(where(run, step), seed=i)
        steps = tuple(sorted(steps))
    refs = resolve_models([run])
    assert [r.step for r in refs] == list(steps)
    assert [r.fraction for r in refs] == pytest.approx(fractions)
    assert all((r.path / "config.json").is_file() for r in refs)


def test_diff_reads_a_trl_run_against_its_base(tmp_path):
    base = _model(tmp_path / "base", seed=0)
    run = _hf_run(tmp_path)
    assert main(["diff", str(base), str(run), "--out", str(tmp_path / "d.csv")]) == 0
    d = pd.read_csv(tmp_path / "d.csv")
    assert sorted(d["step"].unique()) == [10, 20]
    # relative change of one matrix, by numpy in float64
    from safetensors.numpy import load_file

    name = "model.layers.0.self_attn.q_proj.weight"
    w0 = load_file(base / "model.safetensors")[name].astype(np.float64)
    w1 = load_file(run / "checkpoint-10" / "model.safetensors")[name].astype(np.float64)
    row = d[(d["step"] == 10) & (d["tensor"] == name)]
    assert len(row) == 1 and row["checkpoint"].iloc[0] == "trl_run/checkpoint-10"
    assert np.isclose(row["rel_change"].iloc[0], np.linalg.norm(w1 - w0) / np.linalg.norm(w0), rtol=1e-5)


def test_unconsolidated_shards_are_one_line_errors_naming_the_merger(tmp_path):
    verl = tmp_path / "verl" / "global_step_5" / "actor"
    verl.mkdir(parents=True)
    (verl / "model_world_size_2_rank_0.pt").write_bytes(b"shard")
    with pytest.raises(UserError, match="verl.model_merger merge --backend fsdp"):
        resolve_models([tmp_path / "verl"])
    ds = tmp_path / "ds" / "checkpoint-10"
    (ds / "global_step10").mkdir(parents=True)
    (ds / "config.json").write_text("{}")
    (ds / "zero_to_fp32.py").write_text("# DeepSpeed's script")
    (ds / "global_step10" / "mp_rank_00_model_states.pt").write_bytes(b"states")
    with pytest.raises(UserError, match="zero_to_fp32.py") as e:
        resolve_models([tmp_path / "ds"])
    assert "\n" not in str(e.value)
