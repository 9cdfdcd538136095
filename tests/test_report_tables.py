"""Report tables from artifacts written in the stages' schemas: seeds, step 0 reuse, final table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from tunescope.report import build_report
from tunescope.report.tables import collect

SCORE_COLS = ["model", "path", "method", "step", "fraction", "suite", "metric", "value", "ci_low", "ci_high", "n"]


def _eval_dir(root: Path, name: str, rows: list[dict]) -> dict:
    d = root / name.replace("/", ".")
    d.mkdir(parents=True)
    pd.DataFrame(rows, columns=SCORE_COLS).to_csv(d / "scores.csv", index=False)
    return {"name": name, "kind": "evaluate", "dir": str(d), "result": {}, "wall_s": 1.0, "key": "k", "config": {}}


def _score(path: str, step: int, frac: float, suite: str, value: float) -> dict:
    return {"model": path, "path": path, "method": "sft", "step": step, "fraction": frac, "suite": suite,
            "metric": "accuracy", "value": value, "ci_low": value - 0.1, "ci_high": value + 0.1, "n": 10}


def _manifest(tmp_path: Path) -> dict:
    stages = {"evaluate/base": _eval_dir(tmp_path, "evaluate/base", [
        _score("/m/base", 0, 0.0, s, v) for s, v in (("maths", 0.2), ("facts", 0.5))])}
    finals = {0: {"maths": 0.6, "facts": 0.40}, 1: {"maths": 0.8, "facts": 0.30}}
    for seed in (0, 1):
        run = tmp_path / f"run{seed}"
        run.mkdir()
        (run / "run.json").write_text(json.dumps({"totals": {"steps": 4, "tokens_trained": 100 + seed,
                                                             "tokens_generated": 0}}))
        stages[f"train/a/s{seed}"] = {"name": f"train/a/s{seed}", "kind": "train", "dir": str(run), "wall_s": 2.0,
                                      "key": "k", "config": {},
                                      "result": {"run": str(run), "init": "/m/base", "init_name": "base", "init_step": 0}}
        rows = [_score(f"/r{seed}/2", 2, 0.5, s, (v + 0.2) / 2) for s, v in finals[seed].items()]
        rows += [_score(f"/r{seed}/4", 4, 1.0, s, v) for s, v in finals[seed].items()]
        stages[f"evaluate/a/s{seed}"] = _eval_dir(tmp_path, f"evaluate/a/s{seed}", rows)
    runs = {"a": {"label": "SFT a", "method": "sft", "task": "maths", "init": "base", "seeds": [0, 1],
                  "freeze": [], "train_only": [], "ood_suite": None, "budget": {}}}
    config = {"name": "t", "base": {"organism": "smoke", "path": None}, "evaluation": {"suites": ["maths", "facts"]}}
    return {"config": config, "runs": runs, "interventions": {}, "stages": stages, "provenance": {}}


def test_seeds_step0_and_final_table(tmp_path):
    t = collect(_manifest(tmp_path))
    s = t["scores"]
    # step 0 of each seed is the base model's evaluation, reused rather than re-run
    zero = s[(s["run"] == "a") & (s["step"] == 0)]
    assert sorted(zero["seed"].tolist()) == [0, 0, 1, 1] and set(zero["value"]) == {0.2, 0.5}
    final = t["final"].set_index(["run", "suite"])
    assert np.isclose(final.loc[("a", "maths"), "value"], 0.7)
    assert np.isclose(final.loc[("a", "maths"), "seed_std"], np.std([0.6, 0.8], ddof=1))
    assert final.loc[("a", "maths"), "seeds"] == 2 and final.loc[("base", "maths"), "value"] == 0.2
    spread = t["seed_spread"].set_index(["run", "fraction", "suite"])
    assert spread.loc[("a", 1.0, "facts"), "min"] == 0.3 and spread.loc[("a", 1.0, "facts"), "max"] == 0.4
    trade = t["tradeoff"]
    last = trade[(trade["seed"] == 1) & (trade["step"] == 4)].iloc[0]
    assert last["id"] == 0.8 and last["ood"] == 0.3  # ood = the other suites when no ood_suite is set
    assert t["compute"]["tokens_trained"].tolist() == [100, 101]


def test_report_renders_without_weights_or_interventions(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    page = build_report(_manifest(tmp_path), out).read_text()
    assert "Final checkpoints" in page and "0.700 [0.60, 0.80] ±0.141" in page
    assert "(heatmaps" not in page and "relative weight change heatmaps: no data" in page
    assert (out / "tables" / "final.csv").is_file() and (out / "tables" / "findings.csv").is_file()


def test_report_says_when_stages_ran_with_other_thread_counts_or_cpus(tmp_path):
    """Each stage records its torch thread count and CPU model; the report's stage table shows them
    and a note says when they are not one setting (a study resumed elsewhere or with other threads)."""
    manifest = _manifest(tmp_path)
    for r in manifest["stages"].values():
        r.update(torch_threads=1, cpu="CPU A")
    out = tmp_path / "one"
    out.mkdir()
    page = build_report(manifest, out).read_text()
    stages = pd.read_csv(out / "tables" / "stages.csv")
    assert set(stages["torch_threads"]) == {1} and set(stages["cpu"]) == {"CPU A"}
    assert "more than one" not in page
    manifest["stages"]["train/a/s1"].update(torch_threads=2)
    manifest["stages"]["evaluate/a/s1"].update(cpu="CPU B")
    out = tmp_path / "mixed"
    out.mkdir()
    page = build_report(manifest, out).read_text()
    assert ("The stages ran with more than one torch thread count (1: 4 stages, 2: 1 stage) and more than one "
            "CPU model (CPU A: 4 stages, CPU B: 1 stage)") in page


def test_distribution_table_shows_the_last_step_and_a_blank_for_edited_models():
    from tunescope.report.html import _last_rows, table

    d = pd.DataFrame({"run": ["sft", "sft", "restore"], "seed": [0, 0, 0], "step": [0, 60, -1],
                      "kl": [0.0, 0.25, 0.125]})
    html = table(_last_rows(d))
    assert "<td>sft</td><td>0</td><td>60</td><td>0.250</td>" in html
    assert "<td>restore</td><td>0</td><td></td><td>0.125</td>" in html
    assert "-1" not in html and "0.000" not in html


def test_sft_pairs_with_the_rl_runs_of_its_task_and_step_count():
    """The SFT-vs-RL comparison pairs plain runs of one task with the same max_steps (unknown, as for an
    imported run, pairs with any); CHORD, half imitation, is not an RL arm."""
    from tunescope.report.compare import method_pairs

    rows = [("sft", "sft", "maths", 60), ("sft_part", "sft", "maths", 15), ("grpo", "grpo", "maths", 60),
            ("rloo", "rloo", "maths", 60), ("chord", "chord", "maths", 60), ("rlvr", "rlvr", "maths", None),
            ("grpo24", "grpo", "game24", 60)]
    runs = pd.DataFrame([{"run": r, "method": m, "task": t, "max_steps": n, "init": "base", "freeze": "",
                          "train_only": ""} for r, m, t, n in rows])
    assert method_pairs(runs) == [("sft", "grpo"), ("sft", "rloo"), ("sft", "rlvr"), ("sft_part", "rlvr")]
