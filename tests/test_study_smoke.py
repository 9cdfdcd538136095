"""The smoke study end to end: `tunescope run --preset smoke`, its artifacts, the cache, the report.

One session-scoped run (the smoke organism comes from the shared cache); the checks read its files
and recompute numbers independently (numpy float64 from the safetensors, the recovery formula).
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tunescope.cli import main


def _stage_dirs(out: Path) -> dict[str, Path]:
    manifest = json.loads((out / "study.json").read_text())
    return {n: Path(r["dir"]) for n, r in manifest["stages"].items()}


def test_every_stage_ran_and_rerun_does_no_work(smoke_study, capsys):
    dirs = _stage_dirs(smoke_study)
    kinds = {n.split("/")[0] for n in dirs}
    assert {"base", "train", "evaluate", "diff", "spectrum", "intervene", "report"} <= kinds
    assert not list((smoke_study / "stages").glob(".partial-*"))
    mtimes = {n: (d / "stage.json").stat().st_mtime_ns for n, d in dirs.items()}
    capsys.readouterr()
    assert main(["run", "--preset", "smoke", "--out", str(smoke_study)]) == 0
    err = capsys.readouterr().err
    assert err.count("cached") == len(dirs) and "running" not in err
    assert {n: (d / "stage.json").stat().st_mtime_ns for n, d in _stage_dirs(smoke_study).items()} == mtimes


def test_every_stage_record_reads_as_its_kinds_typed_result(smoke_study):
    from tunescope.study import results as res

    kinds = {"base": res.BaseResult, "train": res.TrainResult, "evaluate": res.EvalResult, "diff": res.DiffResult,
             "spectrum": res.SpectrumResult, "intervene": res.EditResult, "report": res.ReportResult}
    for name, d in _stage_dirs(smoke_study).items():
        rec = json.loads((d / "stage.json").read_text())
        typed = res.read(rec, kinds[rec["kind"]])
        values = [x for v in vars(typed).values() for x in (v if isinstance(v, list) else [v])]
        paths = [v for v in values if isinstance(v, str) and v.startswith("/")]
        assert all(Path(p).exists() for p in paths), (name, paths)  # rewritten to the final directory
    edit = json.loads((_stage_dirs(smoke_study)["intervene/restore_top20/s0"] / "stage.json").read_text())
    del edit["result"]["suite"]
    with pytest.raises(KeyError, match="suite"):  # a record without a field does not read as the result
        res.read(edit, res.EditResult)


def test_changed_config_reruns_only_what_it_affects(smoke_study, capsys):
    assert main(["run", "--preset", "smoke", "--out", str(smoke_study), "--check",
                 "interventions.restore_top20.k=0.3"]) == 0
    plan = capsys.readouterr().out
    to_run = sorted(ln.split()[0] for ln in plan.splitlines() if ln.endswith("to run"))
    assert to_run == ["evaluate/restore_top20/s0", "evaluate/restore_top20/s1", "intervene/restore_top20/s0",
                      "intervene/restore_top20/s1", "report"]  # one edit per sft24 seed


def test_weight_change_table_matches_numpy(smoke_study):
    from safetensors.numpy import load_file

    dirs = _stage_dirs(smoke_study)
    heat = pd.read_csv(smoke_study / "tables" / "weight_change_final.csv")
    base_dir = Path(json.loads((dirs["base"] / "stage.json").read_text())["result"]["model"])
    run = json.loads((dirs["train/sft/s0"] / "stage.json").read_text())["result"]["run"]
    last = sorted((Path(run) / "checkpoints").glob("step-*"))[-1]
    base_w = load_file(str(next(base_dir.glob("*.safetensors"))))
    last_w = load_file(str(next(last.glob("*.safetensors"))))
    name = next(n for n in base_w if "layers.0." in n and "q_proj.weight" in n)
    b, c = base_w[name].astype(np.float64), last_w[name].astype(np.float64)
    expected = np.linalg.norm(c - b) / np.linalg.norm(b)
    row = heat[(heat["run"] == "sft") & (heat["seed"] == 0) & (heat["layer"] == 0) & (heat["module"] == "q")]
    assert len(row) == 1 and math.isclose(float(row["rel_change"].iloc[0]), expected, rel_tol=1e-4)
    assert expected > 0


def test_report_tables_agree_with_evaluations(smoke_study):
    tables = smoke_study / "tables"
    for name in ("scores", "final", "compute", "stages", "findings", "module_ranking", "spectrum_sigma",
                 "recovery", "ood_curve", "freezing", "distribution"):
        assert (tables / f"{name}.csv").is_file(), name
    dirs = _stage_dirs(smoke_study)
    raw = pd.read_csv(dirs["evaluate/grpo/s0"] / "scores.csv")
    raw = raw[(raw["metric"] == "accuracy") & (raw["step"] == raw["step"].max())]
    final = pd.read_csv(tables / "final.csv")
    for _, r in raw.iterrows():
        got = final[(final["run"] == "grpo") & (final["suite"] == r["suite"])]["value"]
        assert math.isclose(float(got.iloc[0]), float(r["value"]))
    rec = pd.read_csv(tables / "recovery.csv")
    for _, r in rec.iterrows():  # recovery = (after - target) / (reference - target)
        den = r["ood_reference"] - r["ood_target"]
        expected = (r["ood_after"] - r["ood_target"]) / den if den != 0 else float("nan")
        assert (math.isnan(expected) and math.isnan(r["recovery"])) or math.isclose(r["recovery"], expected)
        assert math.isclose(r["loss"], den, abs_tol=1e-12)  # the loss the recovery is a share of
        assert math.isnan(r["loss_low"]) or r["loss_low"] <= r["loss"] <= r["loss_high"]
    compute = pd.read_csv(tables / "compute.csv")
    grpo = compute[compute["method"] == "grpo"]
    assert (grpo["tokens_generated"] > 0).all() and (compute["steps"] > 0).all()


def test_every_stage_records_its_threads_and_cpu(smoke_study):
    """tables/stages.csv: the torch thread count (the study pins 1) and CPU model of every stage."""
    from tunescope.provenance import cpu_model

    stages = pd.read_csv(smoke_study / "tables" / "stages.csv")
    assert set(stages["torch_threads"]) == {1} and set(stages["cpu"]) == {cpu_model()}
    assert "more than one torch thread count" not in (smoke_study / "report.html").read_text()


def test_report_is_self_contained(smoke_study):
    page = (smoke_study / "report.html").read_text()
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert page.count('src="data:image/png;base64,') >= 6
    for section in ("Findings", "Accuracy against training progress", "Compute spent", "Distribution shift",
                    "Where the weights moved", "Spectra", "Freezing", "Out-of-distribution peak", "Wall time"):
        assert section in page, section


@pytest.mark.parametrize("point,jobs", [("grpo checkpoint written", 2), ("evaluate mid-sweep", 1),
                                        ("intervention", 1)])
def test_sigkill_mid_study_then_rerun_gives_the_same_results(point, jobs, smoke_study, tmp_path):
    """Kill the smoke study with SIGKILL at three of the soak's points (tests/_kill.py; `make soak`
    runs all of them), rerun it (after the GRPO kill two stages at a time): the same stage keys, no
    partial directory, every table equal to the clean run's bit for bit."""
    from _kill import POINTS, assert_same, kill_at, rerun

    out = tmp_path / "killed"
    assert kill_at(out, dict(POINTS)[point]), f"the study ended before {point}"
    assert not (out / "report.html").exists()
    rerun(out, ["--jobs", str(jobs)])
    assert_same(smoke_study, out)


def test_a_write_that_fails_mid_study_keeps_the_finished_stages(smoke_study, tmp_path):
    """A full disk, simulated by a file-size limit on the study's process (RLIMIT_FSIZE: every write
    past 200 kB fails with EFBIG, as one on a full disk fails with ENOSPC; the first training run's
    optimiser state is 1 MB): the study stops with one line naming the stage and the fix, the stages
    that finished keep their records, the failed one leaves none; rerun without the limit, it ends
    with every table equal to a clean run's."""
    from _kill import assert_same, rerun, run_study

    out, log = tmp_path / "full", tmp_path / "full.err"
    assert run_study(out, log=log, file_limit=200_000).wait() == 2
    last = log.read_text().strip().splitlines()[-1]
    assert last.startswith("error: stage train/") and "free disk space" in last and "Traceback" not in last, last
    done = {json.loads(f.read_text())["name"] for f in (out / "stages").glob("*/stage.json")}
    assert {"base", "evaluate/base"} <= done and not any(n.startswith("train/") for n in done), done
    rerun(out)
    assert_same(smoke_study, out)


def test_a_local_model_directory_is_a_base(smoke_organism, tmp_path, capsys):
    """The real-model path: base.path names a model directory; --check plans every stage without work."""
    out = tmp_path / "o"
    assert main(["run", "--preset", "smoke", "--out", str(out), "--check", f"base.path={smoke_organism}"]) == 0
    plan = capsys.readouterr().out
    assert "50 stages (0 cached)" in plan and not out.exists()


def test_ood_peak_differences_are_paired_over_items(smoke_study):
    """tables/ood_peak.csv: each seed's peak is picked on the items whose id hashes even (crc32) and
    the rise over the start and fall to the end are mean per-item differences on the other items,
    over seeds and items, recomputed here from the evaluations' samples.jsonl (the smoke study's
    24-point SFT has two seeds). The interventions' reference (`sft24:best_ood`) is the same pick,
    and their recovery is measured on the other items too."""
    manifest = json.loads((smoke_study / "study.json").read_text())
    peak = pd.read_csv(smoke_study / "tables" / "ood_peak.csv").set_index("run").loc["sft24"]
    scores = pd.read_csv(smoke_study / "tables" / "scores.csv")
    acc = scores[(scores["run"] == "sft24") & (scores["suite"] == "game24_ood") & (scores["metric"] == "accuracy")]
    samples = pd.DataFrame([json.loads(line) for r in manifest["stages"].values() if r["kind"] == "evaluate"
                            for line in (Path(r["dir"]) / "samples.jsonl").read_text().splitlines()])
    ood = samples[samples["suite"] == "game24_ood"]

    def per_item(path: str) -> pd.Series:
        return ood[ood["path"] == path].groupby("item_id")["score"].mean()

    seeds = sorted(acc["seed"].unique())
    assert len(seeds) == 2 and int(peak["seeds"]) == 2
    rise, fall, bests = [], [], []
    for sd in seeds:
        paths = acc[acc["seed"] == sd].drop_duplicates("step").set_index("step")["path"]
        steps = sorted(paths.index)
        held = {st: per_item(paths[st]) for st in steps}
        ids = held[steps[0]].index
        pick = ids[[zlib.crc32(str(i).encode()) % 2 == 0 for i in ids]]
        test = ids.difference(pick)
        best = max(steps[1:], key=lambda st: (held[st].loc[pick].mean(), -st))  # the earliest of ties
        bests.append(best)
        rise.append((held[best].loc[test] - held[steps[0]].loc[test]).to_numpy(dtype=np.float64))
        fall.append((held[best].loc[test] - held[steps[-1]].loc[test]).to_numpy(dtype=np.float64))
    assert str(peak["peak_steps_held_out"]) == " ".join(map(str, bests)) and peak["n_items"] == len(test) == 4
    for name, d in (("rise", rise), ("fall", fall)):
        assert math.isclose(peak[name], float(np.mean(d)), abs_tol=1e-12)
        assert peak[f"{name}_low"] <= peak[name] <= peak[f"{name}_high"]
    edits = {sd: manifest["stages"][f"intervene/restore_top20/s{int(sd)}"]["result"] for sd in seeds}
    assert [edits[sd]["reference_step"] for sd in seeds] == bests
    rec = pd.read_csv(smoke_study / "tables" / "recovery.csv").set_index("name")
    assert (rec["n_items"] == len(test)).all()
    # RL started from seed 0 only; each intervention was made for both seeds: paired over seeds and items
    assert rec.loc["grpo24", "interval"] == "paired-bootstrap" and rec.loc["grpo24", "seeds"] == 1
    assert set(rec.loc[["restore_top20", "reset_first25"], "interval"]) <= {"paired seeds x items", "none"}
    assert (rec.loc[["restore_top20", "reset_first25"], "seeds"] == 2).all()


def test_distribution_rows_carry_the_per_item_kl_they_pool(smoke_study):
    """distribution.csv's kl is the token-pooled mean of its per-item KL sums (what the KL claim pairs)."""
    manifest = json.loads((smoke_study / "study.json").read_text())
    rows = pd.concat([pd.read_csv(Path(r["dir"]) / "distribution.csv") for r in manifest["stages"].values()
                      if r["kind"] == "evaluate" and (Path(r["dir"]) / "distribution.csv").is_file()])
    rows = rows[rows["kl"].notna()]
    assert len(rows) > 3
    for r in rows.itertuples():
        sums = np.asarray(str(r.kl_item_sums).split(), dtype=np.float64)
        tokens = np.asarray(str(r.kl_item_tokens).split(), dtype=np.float64)
        assert len(sums) == len(tokens) == 4 and math.isclose(sums.sum() / tokens.sum(), r.kl, rel_tol=1e-6, abs_tol=1e-9)
    assert rows["fkl"].notna().all() and (rows["fkl"] > -1e-9).all()  # along the base's own samples


def test_representation_drift_is_one_minus_the_seed_mean_cka_at_each_runs_last_checkpoint(smoke_study):
    tables = smoke_study / "tables"
    reps = pd.read_csv(tables / "representations.csv")
    drift = pd.read_csv(tables / "representation_drift.csv")
    assert (reps["cka"] <= 1 + 1e-9).all() and "base" not in set(drift["run"])
    assert {"sft", "grpo"} <= set(drift["run"])
    for r in drift.itertuples():
        g = reps[(reps["run"] == r.run) & (reps["suite"] == r.suite) & (reps["layer"] == r.layer)]
        last = g[g["step"] == g.groupby("seed", dropna=False)["step"].transform("max")]
        assert len(last) == r.seeds and math.isclose(r.drift, 1 - last["cka"].mean(), abs_tol=1e-12)
    assert (drift[drift["run"] == "sft"]["drift"] > 0).any()  # training moved something
