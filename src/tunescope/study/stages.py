"""The stage cache: run a study as a list of stages, each cached by a hash of what determines it.

A stage's key hashes its kind, its resolved config and the keys of the stages it reads. Its output is
a directory `ROOT/stages/<name>-<key>/`, written first as `ROOT/stages/.partial-<name>-<key>/` and
renamed when complete, with a `stage.json` inside (key, config, inputs, result, wall time, provenance).
So:

- re-running a finished study finds every directory and does no work;
- a run killed at any moment (SIGKILL included) leaves at most one partial directory, which the next
  run discards and redoes, or hands back to the stage when it can resume (training checkpoints);
- a changed config changes the keys of that stage and of everything downstream, and nothing else;
- `stage.json` lists every file the stage wrote (size, modification time, and a sha256 for files up
  to HASH_LIMIT bytes); a file deleted or edited since is found on the next run, which says so and
  runs the stage again rather than reading it (a file whose time changed but whose checksum did not
  is accepted).

Stages run in the order given (the runner lists them topologically), or with `jobs` > 1 up to that
many at once, each in a forked process, as soon as their inputs are done (longest chain of work
first); a stage's output does not depend on which. One line per stage on stderr shows a bar over the
study and an estimate of what remains, scaled by how fast the finished stages ran against their
estimates. A failing stage stops the study with a one-line `UserError` (traceback
in ROOT/logs/); completed stages are kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tunescope.config import to_dict
from tunescope.errors import UserError
from tunescope.fsutil import out_of_space, sha256_file
from tunescope.provenance import provenance, write_json
from tunescope.threads import cpu_threads

STAGE_FILE = "stage.json"
HASH_LIMIT = 256 * 1024**2  # files up to this size get a sha256 in the stage's inventory


@dataclass
class Context:
    """What a stage function gets: where to write, its inputs' results, and whether it resumes."""

    out: Path  # the partial directory; everything written here becomes the stage's output
    inputs: dict[str, dict[str, Any]]  # input stage name -> its record (stage.json: "dir", "result", ...)
    resume: bool  # a partial directory from an interrupted run was kept for this (resumable) stage


def stage_id(kind: str, name: str | None = None, seed: int | None = None) -> str:
    """The one spelling of a stage's name: "base", "evaluate/base", "train/sft/s0", "evaluate/sft/s0",
    "diff/sft/s0", "spectrum/NAME", "intervene/NAME/s0", "evaluate/NAME/s0" (an intervention, per seed
    of the run it edits; no seed when its refs name no run), "report"."""
    return "/".join([kind, *([name] if name else []), *([f"s{seed}"] if seed is not None else [])])


def parse_stage_id(text: str) -> tuple[str, str | None, int | None]:
    """(kind, name, seed) of a stage name written by `stage_id`."""
    kind, _, rest = text.partition("/")
    name, _, seed = rest.partition("/")
    return kind, name or None, int(seed[1:]) if seed.startswith("s") and seed[1:].isdigit() else None


@dataclass
class Stage:
    name: str  # "train/sft_high/s0": unique, '/' separated
    kind: str  # organism, train, evaluate, diff, spectrum, intervene, report
    config: dict[str, Any]  # the resolved config: everything besides inputs that determines the output
    fn: Callable[[Context], Any]  # writes ctx.out, returns its result (study.results: a dataclass, or a mapping)
    inputs: list[str] = field(default_factory=list)
    estimate_s: float = 10.0  # expected wall seconds, for the progress estimate
    resumable: bool = False  # keep a partial directory and call fn with resume=True
    valid: Callable[[dict[str, Any]], bool] | None = None  # is a finished output still usable?


def stage_key(stage: Stage, input_keys: dict[str, str]) -> str:
    blob = json.dumps({"kind": stage.kind, "config": to_dict(stage.config), "inputs": input_keys},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _fmt(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class StageRunner:
    """Runs stages under ROOT/stages with caching; `records` maps stage name -> its stage.json."""

    def __init__(self, root: str | Path, stream: TextIO | None = None):
        self.root = Path(root)
        self.dir = self.root / "stages"
        self.stream = stream if stream is not None else sys.stderr
        self.records: dict[str, dict[str, Any]] = {}
        self._told: set[str] = set()  # stages already reported as changed on disk

    def _dirs(self, stage: Stage, key: str) -> tuple[Path, Path]:
        slug = stage.name.replace("/", ".")
        return self.dir / f"{slug}-{key}", self.dir / f".partial-{slug}-{key}"

    def plan(self, stages: list[Stage]) -> list[tuple[Stage, str, bool]]:
        """(stage, key, cached) for each stage, without running anything."""
        keys: dict[str, str] = {}
        out = []
        for st in stages:
            missing = [i for i in st.inputs if i not in keys]
            if missing:
                raise UserError(f"stage {st.name} reads {missing[0]}, which is not listed before it")
            keys[st.name] = stage_key(st, {i: keys[i] for i in st.inputs})
            final, _ = self._dirs(st, keys[st.name])
            out.append((st, keys[st.name], self._finished(st, final) is not None))
        return out

    def _finished(self, stage: Stage, final: Path) -> dict[str, Any] | None:
        f = final / STAGE_FILE
        if not f.is_file():
            return None
        try:
            rec = json.loads(f.read_text())
        except json.JSONDecodeError:
            return None
        rec["dir"] = str(final)
        changed = _changed_file(final, rec.get("files", {}))
        if changed:
            if stage.name not in self._told:
                self._told.add(stage.name)
                print(f"{'':8}{stage.name}: {changed} since the stage finished; running it again",
                      file=self.stream, flush=True)
            return None
        if stage.valid is not None and not stage.valid(rec):
            return None
        return rec

    def run(self, stages: list[Stage], jobs: int = 1, warm: Callable[[], None] | None = None,
            isolate: bool = False) -> dict[str, dict[str, Any]]:
        """Run what is not cached; `jobs` > 1 runs up to that many independent stages at once, each in
        a forked process (the parent runs no torch work, so forking is safe); `isolate` forks a process
        per stage even one at a time (what a stage holds, GPU memory included, ends with it). `warm`,
        when stages are to run in forked processes, loads in the parent what they share (libraries,
        item lists)."""
        plan = self.plan(stages)
        self.dir.mkdir(parents=True, exist_ok=True)
        wanted = {self._dirs(st, key)[1].name for st, key, _ in plan}
        for stale in self.dir.glob(".partial-*"):  # left by a killed run whose config has changed since
            if stale.name not in wanted:
                shutil.rmtree(stale, ignore_errors=True)
        t_study = time.perf_counter()
        if jobs <= 1 and not isolate:
            self._run_in_order(plan)
        else:
            if warm is not None and any(self._finished(st, self._dirs(st, key)[0]) is None for st, key, _ in plan):
                warm()
            self._run_parallel(plan, max(jobs, 1))
        elapsed = time.perf_counter() - t_study
        print(f"{'':8}all {len(plan)} stages done in {_fmt(elapsed)}", file=self.stream, flush=True)
        return self.records

    def _left(self, todo: list[tuple[Stage, str, bool]], spent: dict[str, list[float]], jobs: int) -> float:
        pending = [s for s, k, _ in todo if self._finished(s, self._dirs(s, k)[0]) is None]
        return sum(s.estimate_s * _scale(spent, s.kind) for s in pending) / jobs

    def _run_in_order(self, plan: list[tuple[Stage, str, bool]]) -> None:
        spent: dict[str, list[float]] = {}  # kind -> [actual seconds, estimated seconds] of stages run now
        for i, (st, key, _) in enumerate(plan):
            final, partial = self._dirs(st, key)
            rec = self._finished(st, final)
            self._line(i, len(plan), st.name, "cached" if rec else f"running, ~{_fmt(self._left(plan[i:], spent, 1))} left")
            if rec is None:
                t0 = time.perf_counter()
                rec = self._execute(st, key, final, partial)
                _account(spent, st, time.perf_counter() - t0)
            self.records[st.name] = rec

    def _run_parallel(self, plan: list[tuple[Stage, str, bool]], jobs: int) -> None:
        import multiprocessing as mp

        fork = mp.get_context("fork")
        order = {st.name: i for i, (st, _, _) in enumerate(plan)}
        chain = _chain_costs([st for st, _, _ in plan])
        pending = sorted(plan, key=lambda p: (-chain[p[0].name], order[p[0].name]))  # longest chain first
        running: dict[Any, tuple[Stage, Any, float]] = {}  # pipe -> (stage, process, start)
        spent: dict[str, list[float]] = {}
        counter, failure = [0, len(plan)], None
        print(f"{'':8}{f'{jobs} stages' if jobs > 1 else 'one stage'} at a time, each in its own process; their "
              f"output goes to {self.root / 'logs'}/STAGE.out",
              file=self.stream, flush=True)
        try:
            while pending or running:
                if failure is None:
                    self._start_ready(pending, running, fork, jobs, spent, counter)
                if not running:
                    if pending and failure is None:  # cannot happen for a plan that `plan` accepted
                        raise UserError(f"stage {pending[0][0].name} waits on inputs that never ran")
                    break
                error = self._collect(running, spent)
                if error and failure is None:
                    failure = error
                    if running:
                        print(f"{'':8}waiting for {len(running)} running stage(s) to finish",
                              file=self.stream, flush=True)
        finally:
            for _st, proc, _ in running.values():  # interrupted: stop the children (resumable stages resume)
                proc.terminate()
                proc.join()
        if failure is not None:
            raise UserError(failure)

    def _start_ready(self, pending: list[tuple[Stage, str, bool]], running: dict[Any, tuple[Stage, Any, float]],
                     fork: Any, jobs: int, spent: dict[str, list[float]], counter: list[int]) -> None:
        """Record every ready stage that is cached, then start ready ones in `pending`'s order until
        `jobs` run (a cached stage never waits for a free slot)."""
        while True:
            ready = [p for p in pending if all(i in self.records for i in p[0].inputs)]
            cached = [(p, rec) for p in ready if (rec := self._finished(p[0], self._dirs(p[0], p[1])[0])) is not None]
            for p, rec in cached:
                pending.remove(p)
                self._line(counter[0], counter[1], p[0].name, "cached")
                counter[0] += 1
                self.records[p[0].name] = rec
            if not cached:
                break
        for st, key, cached_then in [p for p in ready if p in pending]:
            if len(running) >= jobs:
                return
            pending.remove((st, key, cached_then))
            final, partial = self._dirs(st, key)
            left = self._left(pending, spent, jobs) + st.estimate_s * _scale(spent, st.kind) / jobs
            self._line(counter[0], counter[1], st.name, f"running, ~{_fmt(left)} left")
            counter[0] += 1
            recv, send = fork.Pipe(duplex=False)
            proc = fork.Process(target=_execute_in_child, args=(self, st, key, final, partial, send), name=st.name)
            proc.start()
            send.close()
            running[recv] = (st, proc, time.perf_counter())

    def _collect(self, running: dict[Any, tuple[Stage, Any, float]], spent: dict[str, list[float]]) -> str | None:
        """Wait for running stages to end; record the finished ones; the first failure's message."""
        from multiprocessing.connection import wait

        failure = None
        for conn in wait(list(running)):
            st, proc, t0 = running.pop(conn)
            try:
                status, payload = conn.recv()
            except EOFError:  # killed, or died without a word
                status, payload = "error", None
            conn.close()
            proc.join()
            if status == "ok":
                self.records[st.name] = payload
                _account(spent, st, time.perf_counter() - t0)
                print(f"{'':8}{st.name} done in {_fmt(time.perf_counter() - t0)}", file=self.stream, flush=True)
            else:
                failure = failure or payload or (f"stage {st.name} died (exit status {proc.exitcode}); "
                                                 "completed stages are kept; rerun to resume")
        return failure

    def _line(self, i: int, n: int, name: str, status: str) -> None:
        width = 20
        filled = int(width * i / max(n, 1))
        bar = "█" * filled + "░" * (width - filled)
        print(f"[{i + 1:>2}/{n}] {bar} {name:<34} {status}", file=self.stream, flush=True)

    def _execute(self, st: Stage, key: str, final: Path, partial: Path) -> dict[str, Any]:
        resume = st.resumable and partial.is_dir()
        if partial.exists() and not resume:
            shutil.rmtree(partial)
        if final.exists():  # an output that failed `valid`
            shutil.rmtree(final)
        partial.mkdir(parents=True, exist_ok=True)
        ctx = Context(out=partial, inputs={i: self.records[i] for i in st.inputs}, resume=resume)
        t0 = time.perf_counter()
        threads = cpu_threads()  # what every torch_threads() block of the stage sets (tunescope.threads)
        try:
            result = st.fn(ctx) or {}
            rec = {"name": st.name, "kind": st.kind, "key": key, "config": to_dict(st.config),
                   "inputs": {i: self.records[i]["key"] for i in st.inputs},
                   "result": _moved(to_dict(result), str(partial), str(final)),
                   "wall_s": round(time.perf_counter() - t0, 3),
                   "provenance": provenance(config=None, torch_threads=threads), "files": _inventory(partial)}
            write_json(partial / STAGE_FILE, rec)  # the record last: a stage without one never counts
            _fsync_dir(partial)
        except UserError as e:
            raise UserError(f"stage {st.name} failed: {e} (completed stages are kept; fix it and rerun)") from None
        except Exception as e:  # a bug or an environment problem: one line here, the traceback in a log
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            if out_of_space(e):  # the log could not be written either
                raise UserError(f"stage {st.name} could not write its output ({first}); free disk space under "
                                f"{self.root} and rerun: completed stages are kept") from None
            log = self.root / "logs" / f"{st.name.replace('/', '.')}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(traceback.format_exc())
            raise UserError(f"stage {st.name} failed with {type(e).__name__}: {first} "
                            f"(traceback in {log}; completed stages are kept)") from None
        os.replace(partial, final)
        _fsync_dir(final.parent)
        rec["dir"] = str(final)
        return rec


def _inventory(d: Path) -> dict[str, list]:
    """Every file under `d` (through symbolic links: an imported run's adopted checkpoints), by path
    relative to it: [size, mtime_ns, sha256 or None above HASH_LIMIT]."""
    out = {}
    for top, _dirs, files in os.walk(d, followlinks=True):
        for name in sorted(files):
            f = Path(top) / name
            if not f.is_file():  # a broken link: nothing to read, nothing to check
                continue
            st = f.stat()
            out[str(f.relative_to(d))] = [st.st_size, st.st_mtime_ns, sha256_file(f) if st.st_size <= HASH_LIMIT else None]
    return out


def _changed_file(d: Path, files: dict[str, list]) -> str | None:
    """How the first file of a stage's inventory differs on disk now ("X was deleted", "X was
    edited"), or None when every file is as recorded."""
    for rel, (size, mtime, digest) in files.items():
        f = d / rel
        if not f.is_file():
            return f"{rel} was deleted"
        st = f.stat()
        if st.st_size != size or (st.st_mtime_ns != mtime and (digest is None or sha256_file(f) != digest)):
            return f"{rel} was edited"
    return None


@contextlib.contextmanager
def hold(root: Path) -> Iterator[None]:
    """Hold ROOT for one study run: a second run on the same directory stops at once with one line.
    The lock is an flock on ROOT/.lock, released by the kernel when the holder ends, killed included,
    so a killed run never leaves it stuck (forked stage processes hold it until they end too)."""
    import fcntl

    root.mkdir(parents=True, exist_ok=True)
    f = open(root / ".lock", "a+")  # noqa: SIM115 (held for the block)
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise UserError(f"{root} is in use by another tunescope run ({holder}); wait for it to finish "
                            "or give another --out") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        yield
    finally:
        f.close()


def _execute_in_child(runner: StageRunner, st: Stage, key: str, final: Path, partial: Path, conn: Any) -> None:
    """One stage in a forked process: its record (or its one-line error) goes back through `conn`; what
    it prints (progress bars of stages running side by side) goes to ROOT/logs/NAME.out."""
    log = runner.root / "logs" / f"{st.name.replace('/', '.')}.out"
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    out = open(log, "w", buffering=1)  # noqa: SIM115 (the process's output until it ends)
    os.dup2(out.fileno(), 1)  # native code and subprocesses
    os.dup2(out.fileno(), 2)
    sys.stdout = sys.stderr = out
    try:
        conn.send(("ok", runner._execute(st, key, final, partial)))
    except UserError as e:
        conn.send(("error", str(e)))
    except KeyboardInterrupt:
        pass
    finally:
        conn.close()


def _account(spent: dict[str, list[float]], st: Stage, seconds: float) -> None:
    acc = spent.setdefault(st.kind, [0.0, 0.0])
    acc[0] += seconds
    acc[1] += st.estimate_s


def _chain_costs(stages: list[Stage]) -> dict[str, float]:
    """Each stage's estimate plus the longest chain of estimates that waits on it: the order in which
    parallel jobs pick ready stages, so that the long chains (train -> evaluate -> edit) start first."""
    readers: dict[str, list[str]] = {s.name: [] for s in stages}
    for s in stages:
        for i in s.inputs:
            readers[i].append(s.name)
    cost: dict[str, float] = {}
    for s in reversed(stages):
        cost[s.name] = s.estimate_s + max((cost[r] for r in readers[s.name]), default=0.0)
    return cost


def _scale(spent: dict[str, list[float]], kind: str) -> float:
    """How much slower than estimated stages of `kind` ran (other kinds' median when none ran yet)."""
    if kind in spent and spent[kind][1] > 0:
        return spent[kind][0] / spent[kind][1]
    others = sorted(a / e for k, (a, e) in spent.items() if e > 0 and k != "base")
    return others[len(others) // 2] if others else 1.0


def _moved(obj: Any, old: str, new: str) -> Any:
    """Rewrite paths inside the partial directory to where they live after the rename."""
    if isinstance(obj, str) and obj.startswith(old):
        return new + obj[len(old):]
    if isinstance(obj, list):
        return [_moved(v, old, new) for v in obj]
    if isinstance(obj, dict):
        return {k: _moved(v, old, new) for k, v in obj.items()}
    return obj


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
