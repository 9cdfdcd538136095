"""The stage cache: keys, reuse, partial outputs, SIGKILL and resume, failures."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tunescope.errors import UserError
from tunescope.study.stages import Context, Stage, StageRunner

# A small real pipeline: a random matrix, its singular values, a summary of them. Stage `slow` writes
# its rows one file at a time with a pause so that a test can kill it half-way.
PIPELINE = '''
import sys, time
from pathlib import Path
import numpy as np
from tunescope.study.stages import Stage, StageRunner

def matrix(ctx):
    rng = np.random.default_rng(ctx_cfg["seed"])
    np.save(ctx.out / "w.npy", rng.standard_normal((ctx_cfg["n"], ctx_cfg["n"])))
    return {"w": str(ctx.out / "w.npy")}

def spectrum(ctx):
    w = np.load(ctx.inputs["matrix"]["result"]["w"])
    s = np.linalg.svd(w, compute_uv=False)
    for i, v in enumerate(s):  # one file per value, slowly
        (ctx.out / f"s{i:03d}.txt").write_text(repr(float(v)))
        if i == 2:
            (Path(sys.argv[2]) / "started").write_text("1")
        time.sleep(float(sys.argv[3]))
    return {"n": len(s)}

def summary(ctx):
    d = Path(ctx.inputs["spectrum"]["dir"])
    s = [float((d / f"s{i:03d}.txt").read_text()) for i in range(ctx.inputs["spectrum"]["result"]["n"])]
    (ctx.out / "summary.json").write_text(repr([sum(s), max(s)]))

ctx_cfg = {"seed": int(sys.argv[4]), "n": 8}
stages = [Stage("matrix", "t", dict(ctx_cfg), matrix),
          Stage("spectrum", "t", {}, spectrum, inputs=["matrix"]),
          Stage("summary", "t", {}, summary, inputs=["spectrum"])]
StageRunner(sys.argv[1]).run(stages)
'''


def _script(tmp_path: Path) -> Path:
    f = tmp_path / "pipeline.py"
    f.write_text(PIPELINE)
    return f


def _run(script: Path, root: Path, flag_dir: Path, pause: float, seed: int = 0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(script), str(root), str(flag_dir), str(pause), str(seed)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _outputs(root: Path) -> dict[str, bytes]:
    """Every output file of the finished stages (stage.json excluded: it holds times and paths)."""
    out = {}
    for d in sorted((root / "stages").iterdir()):
        assert not d.name.startswith(".partial"), f"left a partial directory {d.name}"
        for f in sorted(d.iterdir()):
            if f.name != "stage.json":
                out[f"{d.name}/{f.name}"] = f.read_bytes()
    return out


def test_sigkill_mid_stage_then_rerun_gives_the_same_result(tmp_path):
    script = _script(tmp_path)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    flags = tmp_path / "flags"
    flags.mkdir()
    p = _run(script, clean, tmp_path, 0.0)
    assert p.wait(60) == 0, p.stderr.read()

    p = _run(script, killed, flags, 0.2)
    deadline = time.time() + 60
    while not (flags / "started").exists():
        assert time.time() < deadline and p.poll() is None, "stage never started"
        time.sleep(0.02)
    os.kill(p.pid, signal.SIGKILL)
    p.wait(10)
    partial = [d.name for d in (killed / "stages").iterdir() if d.name.startswith(".partial")]
    assert len(partial) == 1 and "spectrum" in partial[0]
    assert not any(d.name.startswith("summary") for d in (killed / "stages").iterdir())

    p = _run(script, killed, flags, 0.0)
    assert p.wait(60) == 0, p.stderr.read()
    err = p.stderr.read()
    assert "matrix" in err and "cached" in err  # the finished stage was not redone
    assert _outputs(killed) == _outputs(clean)
    # the spectrum really is the SVD of the matrix, recomputed independently
    w = np.load(next((killed / "stages").glob("matrix-*")) / "w.npy")
    s = np.linalg.svd(w.astype(np.float64), compute_uv=False)
    summ = eval((next((killed / "stages").glob("summary-*")) / "summary.json").read_text())
    assert np.allclose(summ, [s.sum(), s.max()])


def _counting_stages(calls: list[str], cfg: dict) -> list[Stage]:
    def make(name: str):
        def fn(ctx: Context) -> dict:
            calls.append(name)
            upstream = [ctx.inputs[i]["result"]["value"] for i in sorted(ctx.inputs)]
            value = cfg[name] + sum(upstream)
            (ctx.out / "value.txt").write_text(str(value))
            return {"value": value}
        return fn
    return [Stage("a", "t", {"v": cfg["a"]}, make("a")),
            Stage("b", "t", {"v": cfg["b"]}, make("b"), inputs=["a"]),
            Stage("c", "t", {"v": cfg["c"]}, make("c")),
            Stage("d", "t", {}, make("d"), inputs=["b", "c"])]


def test_rerun_does_nothing_and_a_change_reruns_only_what_it_affects(tmp_path):
    cfg = {"a": 1, "b": 10, "c": 100, "d": 0}
    calls: list[str] = []
    log = io.StringIO()
    rec = StageRunner(tmp_path, stream=log).run(_counting_stages(calls, cfg))
    assert calls == ["a", "b", "c", "d"] and rec["d"]["result"]["value"] == 111
    calls.clear()
    StageRunner(tmp_path, stream=io.StringIO()).run(_counting_stages(calls, cfg))
    assert calls == []
    cfg["c"] = 200  # affects c and d only
    rec = StageRunner(tmp_path, stream=io.StringIO()).run(_counting_stages(calls, cfg))
    assert calls == ["c", "d"] and rec["d"]["result"]["value"] == 211
    calls.clear()
    cfg["a"] = 2  # affects a, b, d
    StageRunner(tmp_path, stream=io.StringIO()).run(_counting_stages(calls, cfg))
    assert calls == ["a", "b", "d"]
    lines = log.getvalue().splitlines()
    assert len(lines) == 5 and all("█" in ln or "░" in ln for ln in lines[:4])
    assert "left" in lines[0]


def test_failing_stage_stops_with_one_line_and_keeps_completed(tmp_path):
    def ok(ctx):
        (ctx.out / "x").write_text("1")

    def boom(ctx):
        (ctx.out / "half").write_text("1")
        raise ValueError("division went wrong\nsecond line")

    calls = []
    stages = [Stage("ok", "t", {}, ok), Stage("bad", "t", {}, boom, inputs=["ok"]),
              Stage("after", "t", {}, lambda ctx: calls.append(1))]
    with pytest.raises(UserError) as e:
        StageRunner(tmp_path, stream=io.StringIO()).run(stages)
    msg = str(e.value)
    assert "\n" not in msg and "stage bad failed with ValueError: division went wrong" in msg
    assert calls == []
    log = tmp_path / "logs" / "bad.log"
    assert "Traceback" in log.read_text()
    done = [d.name for d in (tmp_path / "stages").iterdir() if not d.name.startswith(".")]
    assert len(done) == 1 and done[0].startswith("ok-")
    rec = json.loads((tmp_path / "stages" / done[0] / "stage.json").read_text())
    assert rec["provenance"]["versions"]["python"]


def test_resumable_stage_gets_its_partial_directory_back(tmp_path):
    seen = []

    def train(ctx):
        seen.append((ctx.resume, sorted(p.name for p in ctx.out.iterdir())))
        if not ctx.resume:
            (ctx.out / "ckpt-1").write_text("1")
            raise KeyboardInterrupt  # interrupted after a checkpoint
        (ctx.out / "ckpt-2").write_text("2")
        return {"last": str(ctx.out / "ckpt-2")}

    st = [Stage("train", "t", {}, train, resumable=True)]
    with pytest.raises(KeyboardInterrupt):
        StageRunner(tmp_path, stream=io.StringIO()).run(st)
    rec = StageRunner(tmp_path, stream=io.StringIO()).run(st)
    assert seen == [(False, []), (True, ["ckpt-1"])]
    last = Path(rec["train"]["result"]["last"])  # paths are rewritten to the final directory
    assert last.read_text() == "2" and ".partial" not in str(last)


def _diamond(tmp_path: Path, fail: str | None = None) -> list[Stage]:
    """a -> (b, c) -> d; b and c each wait for the other to start, so they pass only when run at once."""
    flags = tmp_path / "flags"
    flags.mkdir(exist_ok=True)

    def a(ctx):
        np.save(ctx.out / "w.npy", np.random.default_rng(0).standard_normal((16, 16)))

    def side(name: str, other: str):
        def fn(ctx):
            with open(tmp_path / "calls.log", "a") as f:
                f.write(name + "\n")
            (flags / name).write_text("1")
            print(f"{name} is running", flush=True)
            deadline = time.monotonic() + 60
            while not (flags / other).exists():
                assert time.monotonic() < deadline, f"{name} ran alone: {other} never started"
                time.sleep(0.01)
            if name == fail:
                raise ValueError(f"{name} went wrong")
            w = np.load(Path(ctx.inputs["a"]["dir"]) / "w.npy")
            value = float(np.linalg.svd(w, compute_uv=False)[0 if name == "b" else -1])
            (ctx.out / "value.txt").write_text(repr(value))
            return {"value": value}
        return fn

    def d(ctx):
        (ctx.out / "sum.txt").write_text(repr(ctx.inputs["b"]["result"]["value"] + ctx.inputs["c"]["result"]["value"]))

    return [Stage("a", "t", {}, a), Stage("b", "t", {}, side("b", "c"), inputs=["a"]),
            Stage("c", "t", {}, side("c", "b"), inputs=["a"]), Stage("d", "t", {}, d, inputs=["b", "c"])]


def test_parallel_jobs_run_independent_stages_at_once_with_the_same_outputs(tmp_path):
    """b and c wait for each other: they only finish when `jobs=2` runs them at once. The outputs
    equal those of stages run one after the other, and a rerun does no work. The parent's warm-up
    runs once before the stages fork, and not at all when every stage is cached."""
    par, warmed = tmp_path / "par", []
    rec = StageRunner(par, stream=io.StringIO()).run(_diamond(tmp_path), jobs=2, warm=lambda: warmed.append(1))
    assert warmed == [1]
    assert sorted((tmp_path / "calls.log").read_text().split()) == ["b", "c"]
    assert (par / "logs" / "b.out").read_text() == "b is running\n"  # a stage's own output: its log
    s = np.linalg.svd(np.random.default_rng(0).standard_normal((16, 16)), compute_uv=False)
    assert rec["b"]["result"]["value"] == float(s[0]) and rec["c"]["result"]["value"] == float(s[-1])

    seq = tmp_path / "seq"
    (tmp_path / "flags" / "b").write_text("1")
    (tmp_path / "flags" / "c").write_text("1")
    StageRunner(seq, stream=io.StringIO()).run(_diamond(tmp_path))
    assert _outputs(par) == _outputs(seq)
    (tmp_path / "calls.log").unlink()
    log = io.StringIO()
    StageRunner(par, stream=log).run(_diamond(tmp_path), jobs=2, warm=lambda: warmed.append(2))
    assert not (tmp_path / "calls.log").exists() and log.getvalue().count("cached") == 4 and warmed == [1]


def test_parallel_failure_is_one_line_and_running_stages_finish(tmp_path):
    """c fails while b runs: b finishes and is kept, d never starts, the error is one line."""
    with pytest.raises(UserError) as e:
        StageRunner(tmp_path / "o", stream=io.StringIO()).run(_diamond(tmp_path, fail="c"), jobs=2)
    msg = str(e.value)
    assert "\n" not in msg and "stage c failed with ValueError: c went wrong" in msg
    done = sorted(d.name.split("-")[0] for d in (tmp_path / "o" / "stages").iterdir() if not d.name.startswith("."))
    assert done == ["a", "b"]


def test_parallel_child_killed_is_one_line(tmp_path):
    def a(ctx):
        os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(UserError) as e:
        StageRunner(tmp_path, stream=io.StringIO()).run([Stage("a", "t", {}, a)], jobs=2)
    assert str(e.value) == "stage a died (exit status -9); completed stages are kept; rerun to resume"


def test_a_file_deleted_or_edited_after_the_stage_finished_reruns_it(tmp_path):
    """stage.json inventories the stage's files: a deleted or edited file is found on the next run,
    which says so and runs the stage again (never reading it); a file only touched is accepted."""
    calls = []

    def write(ctx):
        calls.append(1)
        (ctx.out / "sub").mkdir()
        (ctx.out / "sub" / "w.bin").write_bytes(np.arange(64, dtype=np.float32).tobytes())
        (ctx.out / "note.txt").write_text("done")
        return {}

    def run() -> str:
        log = io.StringIO()
        StageRunner(tmp_path / "o", stream=log).run([Stage("w", "t", {}, write)])
        return log.getvalue()

    run()
    d = next((tmp_path / "o" / "stages").glob("w-*"))
    rec = json.loads((d / "stage.json").read_text())
    assert sorted(rec["files"]) == ["note.txt", "sub/w.bin"] and rec["files"]["note.txt"][0] == 4
    os.utime(d / "note.txt", ns=(1, 1))  # touched: same bytes
    assert "cached" in run() and len(calls) == 1
    blob = bytearray((d / "sub" / "w.bin").read_bytes())
    blob[5] ^= 1  # one flipped bit, same size
    (d / "sub" / "w.bin").write_bytes(bytes(blob))
    log = run()
    assert log.count("w: sub/w.bin was edited since the stage finished; running it again") == 1 and len(calls) == 2
    (d / "note.txt").unlink()
    assert "note.txt was deleted" in run() and len(calls) == 3
    assert "cached" in run() and len(calls) == 3
