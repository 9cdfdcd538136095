"""The table of bad inputs (issue 13): each one a hurried researcher might type, each answered before
any work with one line `error: ...` that names the problem and the fix, and exit status 2."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tunescope.cli import main


def _truncated(smoke_organism: Path, tmp_path: Path) -> Path:
    """A copy of the smoke organism whose model.safetensors lost its tail (an interrupted copy)."""
    d = tmp_path / "truncated"
    shutil.copytree(smoke_organism, d)
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    return d


def _garbled(smoke_organism: Path, tmp_path: Path) -> Path:
    """A copy whose safetensors header is overwritten (a corrupt download)."""
    d = tmp_path / "garbled"
    shutil.copytree(smoke_organism, d)
    w = d / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[8:40] = b"x" * 32
    w.write_bytes(bytes(data))
    return d


def _bad_config(smoke_organism: Path, tmp_path: Path) -> Path:
    d = tmp_path / "badconf"
    shutil.copytree(smoke_organism, d)
    (d / "config.json").write_text("{not json")
    return d


def _copy(smoke_organism: Path, tmp_path: Path) -> Path:
    """A plain copy (for cases that would write into the model directory if they were not refused)."""
    d = tmp_path / "copy"
    shutil.copytree(smoke_organism, d)
    return d


def _nan(smoke_organism: Path, tmp_path: Path) -> Path:
    """A copy with three NaN entries in one matrix (a diverged run)."""
    from safetensors.torch import load_file, save_file

    d = tmp_path / "nan"
    shutil.copytree(smoke_organism, d)
    w = load_file(str(d / "model.safetensors"))
    w["model.layers.0.mlp.up_proj.weight"][0, :3] = float("nan")
    save_file(w, str(d / "model.safetensors"), metadata={"format": "pt"})
    return d


# (id, model maker, argv with {M} for the model and {T} for tmp_path, what the line must say)
CASES = [
    ("diff-truncated", _truncated, ["diff", "{O}", "{M}", "--out", "{T}/d.csv"], "bytes where its header describes"),
    ("diff-garbled", _garbled, ["diff", "{O}", "{M}", "--out", "{T}/d.csv"], "header does not parse"),
    ("train-truncated", _truncated, ["train", "sft", "--model", "{M}", "--out", "{T}/r", "--config", "smoke"],
     "truncated or corrupt"),
    ("train-bad-config", _bad_config, ["train", "sft", "--model", "{M}", "--out", "{T}/r", "--config", "smoke"],
     "config.json is not valid JSON"),
    ("eval-truncated", _truncated, ["eval", "{M}", "--suite", "maths", "--out", "{T}/e"], "re-copy or re-save"),
    ("spectrum-truncated", _truncated, ["spectrum", "{O}", "{M}", "--out", "{T}/s.csv"], "truncated or corrupt"),
    ("restore-truncated", _truncated, ["restore", "{O}", "{M}", "--method", "full", "--out", "{T}/m"],
     "truncated or corrupt"),
    ("study-base-truncated", _truncated, ["run", "--preset", "smoke", "--out", "{T}/s", "--check", "base.path={M}"],
     "base.path: "),
    ("run-out-is-a-file", None, ["run", "--preset", "smoke", "--out", "{T}/afile", "--check"], "is a file"),
    ("run-jobs-zero", None, ["run", "--preset", "smoke", "--out", "{T}/s", "--jobs", "0"], "--jobs 0"),
    ("train-out-inside-model", _copy, ["train", "sft", "--model", "{M}", "--out", "{M}/run", "--config", "smoke"],
     "is inside the input model"),
    ("restore-out-inside-target", _copy, ["restore", "{O}", "{M}", "--method", "full", "--out", "{M}/edited"],
     "is inside TARGET"),
    ("study-out-inside-base", _copy, ["run", "--preset", "smoke", "--out", "{M}/study", "--check", "base.path={M}"],
     "is inside base.path"),
    ("restore-nan-target", _nan, ["restore", "{O}", "{M}", "--method", "direction", "--out", "{T}/m"],
     "non-finite weights (NaN or inf) in 1 tensor(s) to edit: TARGET model.layers.0.mlp.up_proj.weight (3 values)"),
]


@pytest.mark.parametrize("make,argv,fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(make, argv, fragment, smoke_organism, tmp_path, capsys):
    model = make(smoke_organism, tmp_path) if make else smoke_organism
    (tmp_path / "afile").write_text("not a directory")
    args = [a.replace("{M}", str(model)).replace("{O}", str(smoke_organism)).replace("{T}", str(tmp_path))
            for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and fragment in err, err


def test_a_second_run_on_a_held_directory_stops_at_once(tmp_path, capsys):
    """A live run holds DIR (an flock): a second run stops with one line; the lock dies with its holder."""
    import subprocess
    import sys

    out = tmp_path / "study"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from tunescope.study.stages import hold\n"
        "with hold(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(120)"), str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["run", "--preset", "smoke", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {out} is in use by another tunescope run (pid {holder.pid})")
        assert err.count("\n") == 1
    finally:
        holder.kill()  # SIGKILL: the kernel releases the lock
        holder.wait(30)
    from tunescope.study.stages import hold

    with hold(out):  # free again once its holder is gone
        pass
