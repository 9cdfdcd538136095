"""The notebook API (`import tunescope as ts`): paths in, DataFrames out, the same numbers as the CLI's
files, and one-line errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import tunescope as ts
from tunescope.errors import UserError


def test_diff_and_spectrum_return_the_tables_the_cli_writes(smoke_organism, tmp_path):
    from _models import perturb
    from safetensors.numpy import load_file

    tuned = perturb(smoke_organism, tmp_path / "tuned", scale=0.05)
    d = ts.diff(smoke_organism, tuned)  # no out: a temporary directory
    name = "model.layers.0.mlp.down_proj.weight"
    w0 = load_file(smoke_organism / "model.safetensors")[name].astype(np.float64)
    w1 = load_file(tuned / "model.safetensors")[name].astype(np.float64)
    row = d[d["tensor"] == name]
    assert len(row) == 1
    assert np.isclose(row["rel_change"].iloc[0], np.linalg.norm(w1 - w0) / np.linalg.norm(w0), rtol=1e-5)
    from tunescope.cli import main

    assert main(["diff", str(smoke_organism), str(tuned), "--out", str(tmp_path / "cli.csv")]) == 0
    cli = pd.read_csv(tmp_path / "cli.csv")
    pd.testing.assert_series_equal(cli["rel_change"], d["rel_change"].reset_index(drop=True), check_names=False)
    spec = ts.spectrum(smoke_organism, tuned, null_draws=0)
    assert {"per_matrix", "per_rank"} <= set(spec) and len(spec["per_matrix"]) > 0


def test_restore_evaluate_and_errors(smoke_organism, tmp_path):
    from _models import perturb

    tuned = perturb(smoke_organism, tmp_path / "tuned", scale=0.05)
    back = ts.restore(smoke_organism, tuned, tmp_path / "back", method="reset", layers="0%-100%",
                      include_embeddings=True)
    from safetensors.numpy import load_file

    a, b = load_file(back / "model.safetensors"), load_file(smoke_organism / "model.safetensors")
    assert all(np.array_equal(a[k], b[k]) for k in b)  # every layer and the embeddings reset: the reference itself
    scores = ts.evaluate(smoke_organism, suites=["maths", "facts"], n=3, max_new_tokens=8, kl_items=0)
    acc = scores[scores["metric"] == "accuracy"]
    assert sorted(acc["suite"]) == ["facts", "maths"] and (acc["n"] == 3).all()
    with pytest.raises(UserError, match="neither a local path nor a model in the Hugging Face cache"):
        ts.diff(smoke_organism, "nobody/no-such-model")
    with pytest.raises(UserError, match="unknown"):
        ts.evaluate(smoke_organism, suites=["maths"], nn=3)


def test_load_study_gives_a_finished_studys_tables(smoke_study, tmp_path):
    study = ts.load_study(smoke_study)
    assert study.report.is_file() and "scorecard" in study.tables
    assert list(study.scorecard.columns[:3]) == ["claim", "paper", "subject"]
    assert not study.findings.empty
    pd.testing.assert_frame_equal(study.tables["final"], pd.read_csv(smoke_study / "tables" / "final.csv"))
    assert ts.run_study(preset="smoke", out=smoke_study) == smoke_study / "report.html"  # all cached: no work
    with pytest.raises(UserError, match="holds no finished study"):
        ts.load_study(tmp_path)
