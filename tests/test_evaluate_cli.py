"""`tunescope eval` end to end on the smoke organism: sweep a run, keep results past a broken checkpoint,
resume, file tasks with pass@k, lm-eval offline, and one-line errors with exit status 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _models import float64_logprobs, lm_eval_tiny_qa, perturb
from scipy.special import rel_entr

from tunescope.checkpoints import ModelRef
from tunescope.cli import main
from tunescope.evaluate import EvalConfig, evaluate
from tunescope.evaluate.engine import load_tokenizer, render_prompt
from tunescope.evaluate.outputs import DIST_COLUMNS, SCORE_COLUMNS
from tunescope.world import get_task

DATA = Path(__file__).parent / "data"
FAST = ["--n", "3", "--max-new-tokens", "8", "--batch-size", "4", "bootstrap=200"]


def checkpoint(src: Path, run: Path, step: int, noise: float = 0.0) -> Path:
    d = perturb(src, run / "checkpoints" / f"step-{step:06d}", noise, seed=step)
    (d / "tunescope.json").write_text(json.dumps({"step": step, "fraction": step / 20, "method": "sft"}))
    return d


@pytest.fixture(scope="module")
def run_dir(smoke_organism, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    checkpoint(smoke_organism, run, 10)
    checkpoint(smoke_organism, run, 20, noise=0.3)
    return run


def test_sweep_keeps_good_checkpoints_past_a_broken_one_and_resumes(run_dir, smoke_organism, tmp_path, capsys):
    broken = checkpoint(smoke_organism, run_dir, 15)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    out = tmp_path / "ev"
    args = ["eval", str(run_dir), "--suite", "maths,facts", "--out", str(out), "--reference",
            str(smoke_organism), "kl_items=2", "cka_every=true", *FAST]  # CKA at every checkpoint, not only the last
    try:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "error: 1 checkpoint(s) failed" in err and "step-000015" in err and "Traceback" not in err
        scores = pd.read_csv(out / "scores.csv")
        assert list(scores.columns) == SCORE_COLUMNS
        assert sorted(scores["step"].unique()) == [10, 20]
        acc = scores[scores.metric == "accuracy"]
        assert set(acc.suite) == {"maths", "facts"} and (acc.n == 3).all()
        assert ((acc.ci_low <= acc.value) & (acc.value <= acc.ci_high)).all()
        assert set(scores[scores.suite == "facts"].metric) == {"accuracy", "accuracy_norm"}
        dist = pd.read_csv(out / "distribution.csv")
        assert list(dist.columns) == DIST_COLUMNS
        dist = dist.set_index("step")
        assert abs(dist.loc[10, "kl"]) < 1e-6 and dist.loc[20, "kl"] > 0  # step 10 is the reference itself
        assert (dist.mean_length > 0).all() and (dist.mean_entropy > 0).all()
        # the forward KL of RL's Razor: along one T = 1 sample of the reference per KL prompt, drawn once
        refs = (out / "reference_samples.jsonl").read_text()
        drawn = [json.loads(line)["ids"] for line in refs.splitlines()]
        assert len(drawn) == 2 and all(drawn)
        assert abs(dist.loc[10, "fkl"]) < 1e-6 and dist.loc[20, "fkl_ci_low"] <= dist.loc[20, "fkl"]
        tok = load_tokenizer(smoke_organism)
        tuned = run_dir / "checkpoints" / "step-000020"
        for ctx, resp, got in zip([render_prompt(tok, it.prompt) for it in get_task("maths").items("test", 2)],
                                  drawn, str(dist.loc[20, "fkl_item_sums"]).split()):
            lp_r = float64_logprobs(smoke_organism, ctx + resp)[len(ctx) - 1: len(ctx) - 1 + len(resp)]  # (L, V)
            lp_c = float64_logprobs(tuned, ctx + resp)[len(ctx) - 1: len(ctx) - 1 + len(resp)]
            assert float(got) == pytest.approx(rel_entr(np.exp(lp_r), np.exp(lp_c)).sum(), rel=1e-3) and float(got) > 0
        samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
        assert len(samples) == 2 * (3 + 3)  # 2 checkpoints x (3 generated maths + 3 loglik facts)
        assert {"model", "step", "suite", "item_id", "sample", "prompt", "completion", "extracted",
                "score"} <= set(samples[0])
        state = json.loads((out / "eval.json").read_text())
        assert len(state["done"]) == 2 and len(state["failed"]) == 1 and state["git_revision"]

        shutil.rmtree(broken)  # fix the run: rerun resumes and only evaluates what is missing
        checkpoint(smoke_organism, run_dir, 15)
        for name, half in (("samples.jsonl", '{"model": "step-000015", "path": "'), ("scores.csv", '"/x/step-0'),
                           ("distribution.csv", "step-000015,/x")):
            with open(out / name, "a") as fh:  # what a writer killed mid-append leaves: half a row
                fh.write(half)
        assert main(args) == 0
        assert "resuming: 2 checkpoint(s) already done" in capsys.readouterr().err
        assert (out / "reference_samples.jsonl").read_text() == refs  # the resumed sweep kept the same samples
        scores = pd.read_csv(out / "scores.csv")
        assert sorted(scores["step"].unique()) == [10, 15, 20]
        assert len(scores) == 3 * len(scores[scores.step == 10])  # nothing duplicated
        assert len((out / "samples.jsonl").read_text().splitlines()) == 3 * 6
        assert json.loads((out / "eval.json").read_text())["failed"] == {}
        # another config into the same --out is refused
        reps = pd.read_csv(out / "representations.csv")
        assert sorted(reps["step"].unique()) == [10, 15, 20] and set(reps["suite"]) == {"maths", "facts"}
        assert (reps["n_items"] == 3).all() and len(reps) == 3 * 2 * reps["layer"].nunique()  # nothing duplicated
        step10 = reps[reps["step"] == 10]
        assert np.allclose(step10["cka"], 1.0, atol=1e-6) and (reps[reps["step"] == 20]["cka"] < 1 - 1e-6).any()
        assert main([*args, "seed=1"]) == 2
        assert "different evaluation config" in capsys.readouterr().err
    finally:
        shutil.rmtree(broken, ignore_errors=True)


def test_cka_is_measured_at_final_models_unless_asked_for_every_checkpoint(run_dir, smoke_organism, tmp_path):
    out = tmp_path / "ev"
    assert main(["eval", str(run_dir), "--suite", "facts", "--out", str(out), "--reference", str(smoke_organism),
                 "kl_items=0", *FAST]) == 0
    reps = pd.read_csv(out / "representations.csv")
    assert sorted(reps["step"].unique()) == [20] and set(reps["suite"]) == {"facts"}  # the run's last checkpoint
    assert sorted(pd.read_csv(out / "scores.csv")["step"].unique()) == [10, 20]  # every checkpoint is still scored


def test_file_task_with_sampling_reports_pass_at_k(smoke_organism, tmp_path):
    cfg = EvalConfig(n=2, max_new_tokens=6, temperature=1.0, n_samples=4, bootstrap=200, kl_items=0,
                     mc_mode="both")
    ref = ModelRef(path=smoke_organism, name="organism", step=0)
    df = evaluate([ref], ["gsm8k", "mmlu"], tmp_path / "ev", cfg,
                  data=[f"gsm8k={DATA / 'gsm8k_sample.jsonl'}", f"mmlu={DATA / 'mmlu_sample.parquet'}"])
    g = df[df.suite == "gsm8k"].set_index("metric")["value"]
    assert {"accuracy", "mean@4", "pass@1", "pass@2", "pass@4", "answer_rate"} <= set(g.index)
    assert g["pass@1"] == pytest.approx(g["accuracy"]) and g["mean@4"] == pytest.approx(g["accuracy"])
    assert g["pass@1"] <= g["pass@2"] <= g["pass@4"]
    samples = [json.loads(x) for x in (tmp_path / "ev" / "samples.jsonl").read_text().splitlines()]
    gs = [s for s in samples if s["suite"] == "gsm8k"]
    assert len(gs) == 2 * 4 and sorted({s["sample"] for s in gs}) == [0, 1, 2, 3]
    per_item = pd.DataFrame(gs).groupby("item_id")["score"].mean()
    assert g["accuracy"] == pytest.approx(per_item.mean())
    assert {"accuracy", "accuracy_norm", "accuracy_letter"} <= set(df[df.suite == "mmlu"].metric)
    assert sum(s["suite"] == "mmlu" and s["mode"] == "generate" for s in samples) == 2 * 4
    mm = [s for s in samples if s["suite"] == "mmlu" and s["mode"] == "loglik"]
    assert len(mm) == 2 and all(len(s["logliks"]) == 4 for s in mm)
    for s in mm:  # the pick is the argmax of the recorded option log-likelihoods
        assert s["extracted"] == "ABCD"[int(np.argmax(s["logliks"]))]


def test_lm_eval_adapter_offline(smoke_organism, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    tasks = lm_eval_tiny_qa(tmp_path / "tasks", DATA / "lmeval_qa.json")
    out = tmp_path / "ev"
    assert main(["eval", str(smoke_organism), "--lm-eval", "tiny_qa", f"lm_eval_include={tasks}",
                 "--out", str(out), "bootstrap=200"]) == 0
    scores = pd.read_csv(out / "scores.csv")
    row = scores[(scores.suite == "tiny_qa") & (scores.metric == "lm_eval:acc,none")].iloc[0]
    assert row.n == 3 and row.value in (0.0, 1 / 3, 2 / 3, 1.0) and row.ci_low <= row.value <= row.ci_high
    acc = scores[(scores.suite == "tiny_qa") & (scores.metric == "accuracy")].iloc[0]  # the headline, for the report
    assert (acc.value, acc.ci_low, acc.ci_high) == (row.value, row.ci_low, row.ci_high)


def test_bad_input_exits_2_with_one_line(smoke_organism, tmp_path, capsys):
    def run(*args: str) -> str:
        assert main(["eval", *args, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
        return err

    assert "unknown suite 'mathz'" in run(str(smoke_organism), "--suite", "mathz")
    assert "does not exist" in run(str(tmp_path / "missing"), "--suite", "maths")
    (tmp_path / "empty").mkdir()
    assert "neither a model directory" in run(str(tmp_path / "empty"), "--suite", "maths")
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    assert "no complete checkpoints" in run(str(tmp_path / "run"), "--suite", "maths")
    assert "n_samples > 1" in run(str(smoke_organism), "--suite", "maths", "n_samples=2")
    assert "no answer field 'answer'" in run(str(smoke_organism), "--suite", "gsm8k", "--data",
                                             str(DATA / "missing_answer.jsonl"))


def test_game24_outcome_shares_match_the_samples(smoke_organism, tmp_path):
    """A `Diagnosed` suite gets one `outcome:<class>` share per class; they sum to 1 and equal the
    classes recounted from samples.jsonl."""
    from tunescope.world.game24 import game24_ood_task

    out = tmp_path / "ev"
    scores = evaluate([ModelRef(name="base", path=smoke_organism)], ["game24_ood"], out,
                      EvalConfig(n=6, max_new_tokens=12, batch_size=6, bootstrap=100, kl_items=0))
    shares = scores[scores.metric.str.startswith("outcome:")].set_index("metric")["value"]
    assert list(shares.index) == [f"outcome:{c}" for c in game24_ood_task().DIAGNOSES]
    assert shares.sum() == pytest.approx(1.0)
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    task = game24_ood_task()
    items = {it.id: it for it in task.items("test", 6)}
    for s in samples:  # recomputed from the completion, independently of the sweep
        assert s["outcome"] == task.diagnose(items[s["item_id"]], s["completion"])
    for cls in task.DIAGNOSES:
        assert shares[f"outcome:{cls}"] == pytest.approx(np.mean([s["outcome"] == cls for s in samples]))


def test_overrides_are_bare_key_value_words_anywhere(smoke_organism, tmp_path):
    """eval takes the override syntax of train and run: key=value before or after the options."""
    out = tmp_path / "ev"
    assert main(["eval", "n=2", str(smoke_organism), "--suite", "maths,facts", "--out", str(out), "max_new_tokens=4",
                 "kl_items=0", "bootstrap=50", "seed=3", "n_by_suite={facts: 5}"]) == 0
    state = json.loads((out / "eval.json").read_text())
    assert state["config"]["n"] == 2 and state["config"]["seed"] == 3 and state["config"]["max_new_tokens"] == 4
    n = pd.read_csv(out / "scores.csv").groupby("suite")["n"].max()
    assert n["maths"] == 2 and n["facts"] == 5  # per-suite item counts


def test_final_checkpoint_and_lone_models_get_n_final_items_the_others_their_first_n(smoke_organism, tmp_path):
    """n_final: a run's last checkpoint and a model outside a run are scored on more items; the other
    checkpoints on the first n of them (the same items, so that they pair), choice options included."""
    import json

    run = tmp_path / "run"
    for step in (10, 20, 30):
        checkpoint(smoke_organism, run, step)  # identical weights: the shared items must score identically
    assert main(["eval", str(run), str(smoke_organism), "--suite", "maths,facts", "--out", str(tmp_path / "e"),
                 "n=2", "n_final=3", "n_by_suite={facts: 4}", "n_final_by_suite={facts: 5}", "max_new_tokens=8",
                 "kl_items=0"]) == 0
    scores = pd.read_csv(tmp_path / "e" / "scores.csv")
    acc = scores[scores["metric"] == "accuracy"].set_index(["step", "suite"])["n"]
    assert acc.loc[(10, "maths")] == acc.loc[(20, "maths")] == 2 and acc.loc[(30, "maths")] == 3
    # n_by_suite sets the count of the other checkpoints, n_final_by_suite that of the final models
    assert acc.loc[(10, "facts")] == acc.loc[(20, "facts")] == 4 and acc.loc[(30, "facts")] == 5
    lone = scores[(scores["metric"] == "accuracy") & scores["step"].isna()].set_index("suite")["n"]
    assert lone.to_dict() == {"maths": 3, "facts": 5}
    samples = [json.loads(x) for x in (tmp_path / "e" / "samples.jsonl").read_text().splitlines()]
    by = {}
    for r in samples:
        by.setdefault((r["step"], r["suite"]), []).append((r["item_id"], r["completion"], r.get("logliks")))
    assert by[(10, "maths")] == by[(30, "maths")][:2] and by[(10, "facts")] == by[(30, "facts")][:4]


def test_appending_to_a_table_an_older_version_wrote_keeps_its_rows_and_the_columns_aligned(tmp_path):
    from tunescope.evaluate.outputs import DIST_COLUMNS, append

    old = DIST_COLUMNS[:DIST_COLUMNS.index("kl_item_sums")]  # before the per-item KL and the forward KL columns
    pd.DataFrame([{c: 1 for c in old}]).to_csv(tmp_path / "distribution.csv", index=False)
    append(tmp_path, [], [], {c: 2 for c in DIST_COLUMNS})
    x = pd.read_csv(tmp_path / "distribution.csv")
    assert list(x.columns) == DIST_COLUMNS and list(x["kl"]) == [1, 2] and x["kl_item_sums"].isna().tolist() == [True, False]
    assert x["fkl"].isna().tolist() == [True, False]
