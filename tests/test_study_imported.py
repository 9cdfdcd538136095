"""A study over a run trained elsewhere (issue 19): `runs.NAME.checkpoints` names a TRL output
directory; the study imports it (no training), evaluates and diffs its checkpoints against the base,
resolves NAME:last and NAME:0.5 for a spectrum and an intervention, pairs it with an SFT run trained
here, and the report marks it imported with what trainer_state.json says of its budget."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _models import tiny_model

from tunescope.cli import main
from tunescope.errors import UserError
from tunescope.study.config import load_study

STUDY = """
name: imported
base: {{organism: smoke}}
training:
  budget: smoke
  settings: {{max_steps: 2, checkpoint_every: 0.5, prompts_per_step: 2, micro_batch_size: 2}}
evaluation:
  suites: [maths, facts]
  settings: {{n: 3, max_new_tokens: 8, batch_size: 8, kl_items: 2, bootstrap: 50}}
runs:
  sft: {{method: sft, task: maths, budget: {{lr: 3.0e-4}}}}
  trl_rl: {{method: rlvr, task: maths, checkpoints: {run}, label: RLVR (TRL)}}
analyses:
  diff: true
  spectra: {{trl_vs_base: {{reference: base, target: "trl_rl:last", null_draws: 0}}}}
interventions:
  restore_half: {{method: direction, reference: "trl_rl:0.5", target: "trl_rl:last", k: 0.2, recovery_suite: maths}}
"""


def _trl_run(smoke_organism: Path, root: Path) -> Path:
    """A TRL-style output directory: checkpoint-2 and checkpoint-4 (noisy copies of the organism)."""
    from _models import perturb

    run = root / "trl_out"
    run.mkdir()
    for i, step in enumerate((2, 4)):
        ck = perturb(smoke_organism, run / f"checkpoint-{step}", scale=0.02 * (i + 1), seed=i)
        (ck / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": 4,
                                                           "train_batch_size": 8, "log_history": [
                                                               {"learning_rate": 1e-5}, {"learning_rate": 2e-5}]}))
    return run


def test_a_study_imports_a_trl_run_and_analyses_it(smoke_organism, tmp_path):
    run = _trl_run(smoke_organism, tmp_path)
    study = tmp_path / "study.yaml"
    study.write_text(STUDY.format(run=run))
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out)]) == 0
    manifest = json.loads((out / "study.json").read_text())
    imp = manifest["stages"]["train/trl_rl/s0"]
    assert imp["kind"] == "import"
    assert manifest["runs"]["trl_rl"]["imported"] is True
    assert manifest["runs"]["trl_rl"]["budget_resolved"]["budget"] == {"max_steps": 4, "train_batch_size": 8,
                                                                       "peak_lr": 2e-5}
    adopted = sorted((Path(imp["result"]["run"]) / "checkpoints").iterdir())
    assert [d.name for d in adopted] == ["step-000002", "step-000004"]
    assert (adopted[0] / "model.safetensors").resolve() == (run / "checkpoint-2" / "model.safetensors").resolve()
    side = json.loads((adopted[0] / "tunescope.json").read_text())
    assert side["fraction"] == 0.5 and side["method"] == "rlvr"
    # evaluated at both checkpoints (step 0 is the base), diffed against the base by numpy
    scores = pd.read_csv(out / "tables" / "scores.csv")
    got = scores[(scores["run"] == "trl_rl") & (scores["metric"] == "accuracy")]
    assert sorted(got["step"].unique()) == [0, 2, 4]
    from safetensors.numpy import load_file

    wc = pd.read_csv(out / "tables" / "weight_change_final.csv")
    row = wc[(wc["run"] == "trl_rl") & (wc["layer"] == 0) & (wc["module"] == "down")]
    name = "model.layers.0.mlp.down_proj.weight"
    w0 = load_file(smoke_organism / "model.safetensors")[name].astype(np.float64)
    w1 = load_file(run / "checkpoint-4" / "model.safetensors")[name].astype(np.float64)
    assert len(row) == 1 and row["step"].iloc[0] == 4
    assert np.isclose(row["rel_change"].iloc[0], np.linalg.norm(w1 - w0) / np.linalg.norm(w0), rtol=1e-5)
    # the intervention read trl_rl:0.5 -> checkpoint-2 and trl_rl:last -> checkpoint-4
    edit = manifest["stages"]["intervene/restore_half/s0"]["result"]
    assert edit["reference_step"] == 2 and edit["target_step"] == 4
    cmp = pd.read_csv(out / "tables" / "comparisons.csv")
    assert ((cmp["a"] == "sft") & (cmp["b"] == "trl_rl")).any()  # SFT against the imported RL run
    runs = pd.read_csv(out / "tables" / "runs.csv").set_index("run")
    assert runs.loc["trl_rl", "source"] == "imported" and runs.loc["sft", "source"] == "trained"
    html = (out / "report.html").read_text()
    assert f"Imported runs, trained elsewhere and not here (RLVR (TRL) from {run})" in html


@pytest.mark.parametrize("extra,fragment", [
    ("budget: {lr: 1.0}", "runs.trl_rl.budget: an imported run"),
    ("seeds: [0, 1]", "runs.trl_rl.seeds: an imported run"),
    ("init: sft:last", "runs.trl_rl.init: an imported run"),
])
def test_keys_only_training_reads_are_refused_on_an_imported_run(extra, fragment, tmp_path):
    study = tmp_path / "study.yaml"
    text = STUDY.format(run=tmp_path).replace("label: RLVR (TRL)}", "label: RLVR (TRL), " + extra + "}")
    study.write_text(text)
    with pytest.raises(UserError, match=fragment.replace("(", r"\(")):
        load_study(study)


def test_imported_checkpoints_list_and_bad_entries(tmp_path):
    study = tmp_path / "study.yaml"
    for ck, fragment in (("[{path: /nowhere, step: 3}]", "does not exist"), ("[{path: " + str(tmp_path) + ", step: 0}]",
                                                                             "steps must be distinct integers > 0"),
                         ("[{dir: x}]", "a list of {path: DIR or hub id, step: N}")):
        study.write_text(STUDY.format(run=ck))
        with pytest.raises(UserError, match=fragment.replace("{", r"\{").replace("}", r"\}")):
            load_study(study)
    study.write_text(STUDY.format(run=tmp_path).replace("method: rlvr", "method: rlhf"))
    with pytest.raises(UserError, match="say what produced the imported checkpoints"):
        load_study(study)


def test_the_olmo2_family_recipe_runs_end_to_end_on_tiny_local_models(smoke_organism, tmp_path):
    """configs/studies/olmo2_family.yaml with its hub ids swapped for tiny random OLMo-2 models and
    its benchmark files for the test samples: every stage runs and the report renders."""
    data = Path(__file__).parent / "data"
    recipe = Path(__file__).resolve().parents[1] / "configs" / "studies" / "olmo2_family.yaml"
    models = {n: tiny_model(tmp_path / n, "olmo2", smoke_organism, seed=i) for i, n in enumerate(("base", "sft", "dpo", "rlvr"))}
    overrides = [f"base.path={models['base']}",
                 *[f"runs.{n}.checkpoints=[{{path: {models[n]}, step: 1}}]" for n in ("sft", "dpo", "rlvr")],
                 f"evaluation.data=[gsm8k={data / 'gsm8k_sample.jsonl'}, math500={data / 'math500_sample.jsonl'}, "
                 f"mmlu={data / 'mmlu_sample.parquet'}, gpqa={data / 'gpqa_sample.csv'}]",
                 "evaluation.settings={n: 2, max_new_tokens: 4, batch_size: 4, kl_items: 2, bootstrap: 20}",
                 "analyses.spectra.sft_vs_base.null_draws=0", "analyses.spectra.dpo_vs_sft.null_draws=0",
                 "analyses.spectra.rlvr_vs_dpo.null_draws=0"]
    out = tmp_path / "out"
    assert main(["run", str(recipe), "--out", str(out), *overrides]) == 0
    runs = pd.read_csv(out / "tables" / "runs.csv").set_index("run")
    assert (runs["source"] == "imported").all() and list(runs["method"]) == ["sft", "dpo", "rlvr"]
    final = pd.read_csv(out / "tables" / "final.csv")
    assert set(final["suite"]) == {"gsm8k", "math500", "mmlu", "gpqa"} and set(final["run"]) >= {"base", "sft", "rlvr"}
    spectra = json.loads((out / "study.json").read_text())["stages"]
    assert spectra["spectrum/rlvr_vs_dpo"]["result"]
    assert (out / "report.html").stat().st_size > 10_000
