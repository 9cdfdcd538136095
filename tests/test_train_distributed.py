"""`accelerate launch` with 2 CPU processes (gloo data parallel): both replicas end identical, and
equal to a single-process run of the same budget (gradients are averaged over the same prompts)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from tunescope.checkpoints import list_checkpoints
from tunescope.train import load_budget, train
from tunescope.weights import WeightFiles

REPO = Path(__file__).resolve().parents[1]
OVERRIDES = ["max_steps=2", "prompts_per_step=4", "micro_batch_size=2", "checkpoint_every=0.5", "n_train_items=32"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(method: str, model: Path, run: Path, overrides: list[str]) -> None:
    accelerate = Path(sys.executable).parent / "accelerate"
    cmd = [str(accelerate), "launch", "--config_file", str(REPO / "configs/accelerate/cpu_2proc.yaml"),
           "--main_process_port", str(_free_port()), "-m", "tunescope.cli", "train", method,
           "--model", str(model), "--out", str(run), "--config", "smoke", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TUNESCOPE_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_two_process_cpu_data_parallel_sft(smoke_organism, tmp_path):
    from transformers import AutoModelForCausalLM

    from tunescope.train.run import weights_digest

    run = tmp_path / "dp"
    _launch("sft", smoke_organism, run, OVERRIDES)
    meta = json.loads((run / "run.json").read_text())
    assert meta["world_size"] == 2
    digests = meta["replicas"]["weights_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1]
    final = list_checkpoints(run)[-1].path
    assert weights_digest(AutoModelForCausalLM.from_pretrained(final)) == digests[0]  # what was saved

    single = train("sft", smoke_organism, tmp_path / "single", load_budget("smoke", OVERRIDES))
    lines = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
    ref = [json.loads(ln) for ln in (single / "log.jsonl").read_text().splitlines()]
    assert [sorted(ln["items"]) for ln in lines] == [sorted(ln["items"]) for ln in ref]  # same prompts per step
    a = dict(WeightFiles(final).iter())
    b = dict(WeightFiles(list_checkpoints(single)[-1].path).iter())
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-6) for k in a)


def test_two_process_cpu_data_parallel_grpo(smoke_organism, tmp_path):
    """GRPO splits each step's prompt groups over the ranks; both replicas still end identical."""
    run = tmp_path / "dp"
    _launch("grpo", smoke_organism, run, [*OVERRIDES, "max_completion_length=24", "grpo.num_generations=2",
                                          "grpo.temperature=1.0", "grpo.rewards=[tags]", "grpo.reward_weights=[1.0]"])
    meta = json.loads((run / "run.json").read_text())
    digests = meta["replicas"]["weights_sha256"]
    assert meta["world_size"] == 2 and len(digests) == 2 and digests[0] == digests[1]
    lines = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
    assert [len(ln["items"]) for ln in lines] == [4, 4] and all(ln["tokens_generated"] > 0 for ln in lines)


LAUNCHED = """
name: launched
base: {{organism: smoke}}
training:
  budget: smoke
  settings: {{max_steps: 2, prompts_per_step: 4, micro_batch_size: 2, checkpoint_every: 0.5, n_train_items: 32}}
  launch: {launch}
evaluation:
  suites: [maths]
  settings: {{n: 2, max_new_tokens: 4, batch_size: 4, kl_items: 0, bootstrap: 20}}
runs:
  sft: {{method: sft, task: maths, budget: {{lr: 3.0e-4}}}}
analyses: {{diff: true}}
"""


def test_a_study_trains_its_runs_under_accelerate_launch(smoke_organism, tmp_path, capsys):
    """training.launch: the study's run trains as 2 CPU processes (the same code path as several GPUs),
    and ends where the same study trained in its own process ends."""
    from tunescope.cli import main

    study = tmp_path / "study.yaml"
    study.write_text(LAUNCHED.format(launch=REPO / "configs/accelerate/cpu_2proc.yaml"))
    env = {"OMP_NUM_THREADS": "1", "TUNESCOPE_THREADS": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        assert main(["run", str(study), "--out", str(tmp_path / "two"), "--jobs", "2"]) == 2
        assert "run the study with --jobs 1" in capsys.readouterr().err
        assert main(["run", str(study), "--out", str(tmp_path / "two")]) == 0
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    stages = json.loads((tmp_path / "two" / "study.json").read_text())["stages"]
    run = Path(stages["train/sft/s0"]["result"]["run"])
    assert json.loads((run / "run.json").read_text())["world_size"] == 2
    assert (run.parent / "budget.yaml").is_file()  # what the processes were given

    study.write_text(LAUNCHED.format(launch="null"))
    assert main(["run", str(study), "--out", str(tmp_path / "one")]) == 0
    single = Path(json.loads((tmp_path / "one" / "study.json").read_text())["stages"]["train/sft/s0"]["result"]["run"])
    assert json.loads((single / "run.json").read_text())["world_size"] == 1
    a = dict(WeightFiles(list_checkpoints(run)[-1].path).iter())
    b = dict(WeightFiles(list_checkpoints(single)[-1].path).iter())
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-6) for k in a)
    study.write_text(LAUNCHED.format(launch=tmp_path / "none.yaml"))
    assert main(["run", str(study), "--out", str(tmp_path / "x")]) == 2
    assert "training.launch:" in capsys.readouterr().err
