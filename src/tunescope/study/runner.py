"""The study runner: a StudyConfig -> a list of cached stages -> DIR/report.html.

    tunescope run [STUDY.yaml] --out DIR [--preset smoke] [key=value ...]

Stages, in order (each cached by its config and inputs, see `stages`):

    base                              build the organism (cached globally) or point at a model dir
    evaluate/base                     the base model on every suite
    train/RUN/sSEED                   one training run per run and seed (from base or another run's ckpt)
    evaluate/RUN/sSEED                every checkpoint of that run on every suite, KL to the base
    diff/RUN/sSEED                    relative weight change of every checkpoint against the base
    spectrum/NAME                     singular values and directions, reference vs target
    intervene/NAME/sSEED, evaluate/NAME/sSEED
                                      a weight edit from a reference checkpoint to a target, re-scored
                                      (one per seed of the run it edits)
    report                            DIR/report.html and DIR/tables/*.csv, from the artifacts only

A run that starts from `sft24:best_ood` reads the evaluation of sft24, so it reruns exactly when that
evaluation changes. DIR/study.json records the resolved config and, per stage, its directory, key and
wall time; the report reads it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from tunescope.checkpoints import ModelRef, list_checkpoints, read_sidecar
from tunescope.config import to_dict
from tunescope.errors import UserError
from tunescope.fsutil import check_outside
from tunescope.provenance import provenance, write_json
from tunescope.study import results as res
from tunescope.study.config import SpectrumSpec, StudyConfig, parse_ref, spec_suites
from tunescope.study.plan import Plan, eval_config, n_layers, recovery_suite, resolve
from tunescope.study.refs import (
    intervention_seeds,
    pick_checkpoint,
    pick_rule,
    ref_inputs,
    resolve_ref,
    seed_of,
)
from tunescope.study.stages import Context, Stage, StageRunner, hold, stage_id
from tunescope.threads import torch_threads
from tunescope.train.config import method_config

# ---------------------------------------------------------------------------------------------------
# The stage list


def build_stages(plan: Plan, out: Path) -> list[Stage]:
    """Every stage of the study, in dependency order: base, its evaluation, each run (train,
    evaluate, diff), the spectra, the interventions (edit, evaluate) and the report."""
    cfg = plan.cfg
    specs = spec_suites(cfg)
    common = {"suites": list(cfg.evaluation.suites), "kl": cfg.evaluation.kl,
              "task_specs": {n: [p, _fingerprint(p)] for n, p in specs.items()},
              "data": {e: _fingerprint(e.partition("=")[2]) for e in cfg.evaluation.data}}

    def eval_for(run: str | None) -> dict[str, Any]:  # the evaluation of a run's checkpoints (None: base)
        return {**common, "settings": to_dict(plan.evals[run])}

    settings = eval_for(None)["settings"]
    eval_cost = len(common["suites"]) * 2e-4 * settings.get("n", 64) * settings.get("max_new_tokens", 256)  # s/model
    stages = [_base_stage(cfg), _eval_stage(stage_id("evaluate", "base"), eval_for(None), "base", lambda ins: [
        ModelRef(path=res.base_model(ins), name="base", step=0, fraction=0.0, method="base")],
        estimate_s=eval_cost + 10)]
    for run in _run_order(cfg):
        for seed in cfg.runs[run].seeds:
            stages += _run_stages(plan, run, seed, eval_for(run), eval_cost)
    for sname, sspec in cfg.analyses.spectra.items():
        inputs = ref_inputs(cfg, [sspec.reference, sspec.target])
        stages.append(Stage(stage_id("spectrum", sname), "spectrum",
                            to_dict(sspec) | pick_rule([sspec.reference, sspec.target]),
                            _spectrum_fn(cfg, sspec), inputs=inputs,
                            estimate_s=20))
    for iname, iv in cfg.interventions.items():  # one edit per seed of the run it edits
        source = parse_ref(iv.reference)[0]
        for seed in intervention_seeds(cfg, iname):
            edit = stage_id("intervene", iname, seed)
            stages.append(Stage(edit, "intervene", to_dict(iv) | pick_rule([iv.reference, iv.target]),
                                _intervene_fn(cfg, iname, seed),
                                inputs=ref_inputs(cfg, [iv.reference, iv.target], seed), estimate_s=20))
            stages.append(_eval_stage(stage_id("evaluate", iname, seed), eval_for(source if source in cfg.runs else None),
                                      edit, lambda ins, e=edit, n=iname: [
                                          ModelRef(path=Path(res.read(ins[e], res.EditResult).model), name=n,
                                                   method="intervention")], estimate_s=eval_cost))
    # the report reads every other stage; its key includes the report code, so edits re-render it
    stages.append(Stage("report", "report", {"code": _report_code_hash(), "study": to_dict(cfg)},
                        _report_fn(plan), inputs=[s.name for s in stages], estimate_s=15))
    return stages


def _base_stage(cfg: StudyConfig) -> Stage:
    """The base model: a local directory or hub id, or the organism (shipped, cached or built)."""
    if cfg.base.path is not None:
        base_conf: dict[str, Any] = {"path": cfg.base.path, "fingerprint": _fingerprint(cfg.base.path)}

        def base_fn(ctx: Context) -> res.BaseResult:
            local = Path(cfg.base.path).expanduser()
            return res.BaseResult(model=str(local.resolve()) if local.exists() else cfg.base.path,
                                  n_layers=n_layers(cfg.base.path))
    else:
        from tunescope.organism.build import cache_key, recipe_for

        # the organism's cache key hashes its recipe and its corpus: a world edit that changes the
        # corpus makes a new organism, and every stage that read the old one is stale
        base_conf = {"organism": cfg.base.organism, "seed": cfg.base.seed,
                     "cache_key": cache_key(recipe_for(cfg.base.organism), cfg.base.seed)}

        def base_fn(ctx: Context) -> res.BaseResult:
            from tunescope.organism import build

            model = build(preset=cfg.base.organism, seed=cfg.base.seed)
            return res.BaseResult(model=str(model), n_layers=n_layers(str(model)))
    return Stage("base", "base", base_conf, base_fn, estimate_s=600 if cfg.base.organism == "default" else 30,
                 valid=_base_still_there)


def _run_stages(plan: Plan, run: str, seed: int, eval_cfg: dict[str, Any], eval_cost: float) -> list[Stage]:
    """A run's training stage (or its import, for runs trained elsewhere), the evaluation of its
    checkpoints and its weight diff."""
    cfg = plan.cfg
    spec, train_id = cfg.runs[run], stage_id("train", run, seed)
    if spec.checkpoints is not None:
        from tunescope.study.imports import import_stage

        first, n_ckpts = import_stage(cfg, run, train_id, _fingerprint), 10
    else:
        first = _train_stage(plan, run, seed, train_id)
        n_ckpts = len(plan.budget(run, seed).checkpoint_steps()) - 1
    # step 0 is the init model, already evaluated (base, or a checkpoint of the source run): the
    # report takes its scores from there
    stages = [first, _eval_stage(stage_id("evaluate", run, seed), eval_cfg, train_id,
                                 lambda ins: [c for c in list_checkpoints(res.read(ins[train_id], res.TrainResult).run)
                                              if c.step != 0], estimate_s=n_ckpts * eval_cost)]
    if cfg.analyses.diff:
        stages.append(Stage(stage_id("diff", run, seed), "diff", {}, _diff_fn(train_id), inputs=["base", train_id],
                            estimate_s=10))
    return stages


def _train_stage(plan: Plan, run: str, seed: int, train_id: str) -> Stage:
    cfg = plan.cfg
    spec = cfg.runs[run]
    src, which = parse_ref(spec.init)
    inputs = ["base"]
    if which:
        inputs.append(stage_id("train", src, seed_of(cfg, src, seed)))
        if which == "best_ood":
            inputs.append(stage_id("evaluate", src, seed_of(cfg, src, seed)))
    budget = plan.budget(run, seed)
    # the resolved budget (packaged file + study settings + run keys, layers at the base's depth),
    # so that an edit of any of them reruns the run
    conf = {"run": run, "method": spec.method, "init": spec.init, "budget": method_config(to_dict(budget), spec.method),
            "dataset": _fingerprint(spec.dataset) if spec.dataset else None} | pick_rule([spec.init])
    # rough priors (seconds), rescaled by the stages that finish: tokens handled per step
    per_step = {"sft": 0.3, "dpo": 0.6}.get(spec.method) or 1e-3 * (
        budget.prompts_per_step * budget.rl(spec.method).num_generations * budget.max_completion_length)
    return Stage(train_id, "train", conf, _train_fn(plan, run, seed), inputs=inputs,
                 estimate_s=budget.max_steps * per_step, resumable=True)


def _base_still_there(rec: dict[str, Any]) -> bool:
    """A finished base stage points at a model outside DIR (the organism cache): rebuild if it is gone."""
    model = res.read(rec, res.BaseResult).model
    return Path(model).is_dir() or not model.startswith("/")  # a hub id resolves through the HF cache


def _run_order(cfg: StudyConfig) -> list[str]:
    order: list[str] = []

    def visit(run: str) -> None:
        if run in order:
            return
        parent = parse_ref(cfg.runs[run].init)[0]
        if parent != "base":
            visit(parent)
        order.append(run)

    for run in cfg.runs:
        visit(run)
    return order


# ---------------------------------------------------------------------------------------------------
# Stage functions (heavy imports inside)


def _train_fn(plan: Plan, run: str, seed: int) -> Callable[[Context], res.TrainResult]:
    def fn(ctx: Context) -> res.TrainResult:
        from tunescope.train import train

        spec = plan.cfg.runs[run]
        budget = plan.budget(run, seed, n_layers=res.read(ctx.inputs["base"], res.BaseResult).n_layers)
        init = resolve_ref(plan.cfg, spec.init, ctx.inputs, seed=seed)
        run_dir = ctx.out / "run"
        if run_dir.exists() and not (run_dir / "run.json").is_file():  # killed before the run started
            shutil.rmtree(run_dir)
        resume = (run_dir / "run.json").is_file()
        if plan.cfg.training.launch is None:
            run_dir = train(spec.method, init.path, run_dir, budget, resume=resume)
        else:
            launched(plan.cfg.training.launch, spec.method, init.path, run_dir, budget, ctx.out, resume)
        return res.TrainResult(run=str(run_dir), init=str(init.path), init_name=init.name, init_step=init.step)
    return fn


def launched(launch: str, method: str, model: Path, run_dir: Path, budget: Any, out: Path, resume: bool) -> None:
    """Train one run as `accelerate launch --config_file LAUNCH -m tunescope.cli train METHOD ...` (every
    process runs the same `train`, the main one writes), its resolved budget written to OUT/budget.yaml
    and its processes' output to this stage's log (DIR/logs/, the stage runs in a process of its own)."""
    import socket
    import subprocess
    import sys

    import yaml

    (out / "budget.yaml").write_text(yaml.safe_dump(to_dict(budget), sort_keys=False))
    with socket.socket() as sock:  # a free rendezvous port, so that two studies on one machine do not collide
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(launch),
           "--main_process_port", str(port), "-m", "tunescope.cli", "train", method, "--model", str(model),
           "--out", str(run_dir), "--config", str(out / "budget.yaml"), *(["--resume"] if resume else [])]
    print("launching:", " ".join(cmd), flush=True)
    rc = subprocess.run(cmd).returncode
    if rc != 0:
        raise UserError(f"training under `accelerate launch --config_file {launch}` failed (exit {rc}); its output is "
                        "in the study's logs/ directory; fix what it names and rerun the study to resume")


def _eval_stage(name: str, eval_cfg: dict[str, Any], model_stage: str,
                models: Callable[[dict[str, dict[str, Any]]], list[ModelRef]], estimate_s: float = 30) -> Stage:
    inputs = ["base", model_stage] if model_stage != "base" else ["base"]

    def fn(ctx: Context) -> res.EvalResult:
        from tunescope.evaluate import evaluate

        refs = models(ctx.inputs)
        ecfg = eval_config(eval_cfg["settings"])
        reference = res.base_model(ctx.inputs) if eval_cfg["kl"] else None
        specs = eval_cfg.get("task_specs", {})
        with torch_threads() as threads:
            evaluate(refs, [s for s in eval_cfg["suites"] if s not in specs], ctx.out, ecfg, reference=reference,
                     task_specs=[p for p, _ in specs.values()], data=list(eval_cfg.get("data", {})))
        return res.EvalResult(models=[str(r.path) for r in refs], torch_threads=threads)
    # resumable: evaluate() keeps finished checkpoints in its output directory and skips them
    return Stage(name, "evaluate", eval_cfg, fn, inputs=inputs, estimate_s=estimate_s, resumable=True)


def _diff_fn(train_id: str) -> Callable[[Context], res.DiffResult]:
    def fn(ctx: Context) -> res.DiffResult:
        from tunescope.analyse.diff import diff

        base = res.base_model(ctx.inputs)
        ckpts = list_checkpoints(res.read(ctx.inputs[train_id], res.TrainResult).run)
        with torch_threads():
            diff(base, ckpts, ctx.out / "diff.csv")
        return res.DiffResult(table=str(ctx.out / "diff.csv"))
    return fn


def _spectrum_fn(cfg: StudyConfig, spec: SpectrumSpec) -> Callable[[Context], res.SpectrumResult]:
    def fn(ctx: Context) -> res.SpectrumResult:
        from tunescope.analyse.spectrum import spectrum

        r, t = resolve_ref(cfg, spec.reference, ctx.inputs), resolve_ref(cfg, spec.target, ctx.inputs)
        with torch_threads():
            spectrum(r.path, t.path, ctx.out / "spectrum.csv", ranks=spec.ranks, null_draws=spec.null_draws)
        return res.SpectrumResult(reference=str(r.path), target=str(t.path), reference_step=r.step, target_step=t.step)
    return fn


def _intervene_fn(cfg: StudyConfig, name: str, seed: int | None) -> Callable[[Context], res.EditResult]:
    def fn(ctx: Context) -> res.EditResult:
        from tunescope.intervene.restore import restore

        iv = cfg.interventions[name]
        r, t = resolve_ref(cfg, iv.reference, ctx.inputs, seed), resolve_ref(cfg, iv.target, ctx.inputs, seed)
        with torch_threads():
            model = restore(r.path, t.path, ctx.out / "model", iv.method, k=iv.k, tail=iv.tail, layers=iv.layers,
                            alpha=iv.alpha)
        return res.EditResult(model=str(model), reference=str(r.path), target=str(t.path), reference_step=r.step,
                              target_step=t.step, suite=recovery_suite(cfg, name))
    return fn


def _report_fn(plan: Plan) -> Callable[[Context], res.ReportResult]:
    def fn(ctx: Context) -> res.ReportResult:
        from tunescope.report import build_report

        manifest = make_manifest(plan, ctx.inputs)
        write_json(ctx.out / "study.json", manifest)
        build_report(manifest, ctx.out)
        return res.ReportResult(report=str(ctx.out / "report.html"))
    return fn


def make_manifest(plan: Plan, records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What the report reads: the resolved config, the runs' roles and every stage's record."""
    cfg, runs = plan.cfg, {}
    depth = _recorded_depth(records) or plan.depth
    for run, spec in cfg.runs.items():
        if spec.checkpoints is not None:  # trained elsewhere: what its own files say of its budget
            from tunescope.study.imports import imported_budget

            budget = imported_budget(records.get(stage_id("train", run, 0)))
        else:
            budget = to_dict(plan.budget(run, spec.seeds[0], n_layers=depth))
        runs[run] = to_dict(spec) | {"label": spec.label or run, "budget_resolved": budget,
                                     "imported": spec.checkpoints is not None}
    return {"config": to_dict(cfg), "runs": runs,
            "interventions": {n: to_dict(iv) | {"suite": recovery_suite(cfg, n)} for n, iv in cfg.interventions.items()},
            "stages": {n: {k: r.get(k) for k in ("name", "kind", "key", "dir", "result", "wall_s", "config")}
                       | {"torch_threads": r.get("provenance", {}).get("torch_threads"),
                          "cpu": r.get("provenance", {}).get("host", {}).get("cpu")}
                       for n, r in records.items()},
            "provenance": provenance(config=None, seed=None, torch_threads=os.environ.get("TUNESCOPE_THREADS"))}


def _recorded_depth(records: dict[str, dict[str, Any]]) -> int | None:
    """The base's depth as its finished stage read it (None before the base stage ran)."""
    return res.read(records["base"], res.BaseResult).n_layers if "base" in records else None


def _fingerprint(path: str) -> str:
    """Names, sizes and modification times of a local file or directory (a hub id hashes as itself)."""
    p = Path(path).expanduser()
    if p.is_file():
        st = p.stat()
        return f"{st.st_size}:{st.st_mtime_ns}"
    if not p.is_dir():
        return path
    h = hashlib.sha256()
    for f in sorted(p.iterdir()):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _report_code_hash() -> str:
    h = hashlib.sha256()
    root = resources.files("tunescope") / "report"
    for f in sorted(Path(str(root)).glob("*.py")):
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


# ---------------------------------------------------------------------------------------------------
# Entry point


def check_out(cfg: StudyConfig, out: Path) -> None:
    """The study directory lies outside the local models it reads (base.path, imported checkpoints)."""
    check_outside(out, {"base.path": cfg.base.path} | {
        f"runs.{name}.checkpoints": p for name, r in cfg.runs.items()
        for p in ([r.checkpoints] if isinstance(r.checkpoints, str) else
                  [e["path"] for e in r.checkpoints or [] if isinstance(e, dict) and "path" in e])})


def run_study(cfg: StudyConfig, out: str | Path, jobs: int = 1) -> Path:
    """Run (or resume) the study into `out`, up to `jobs` stages at once; return the path of report.html."""
    out = Path(out)
    check_out(cfg, out)
    if cfg.training.launch is not None and jobs > 1:
        raise UserError(f"training.launch trains each run on all the processes its accelerate config names; run "
                        f"the study with --jobs 1 (got --jobs {jobs}), so that two stages do not share the GPUs")
    # One torch thread unless the user says otherwise: thread count changes float summation order, so a
    # fixed count makes a resumed stage give the same numbers whatever the machine's load; and on a shared
    # CPU one thread is also the fastest (see tunescope.threads).
    pinned = "TUNESCOPE_THREADS" not in os.environ
    if pinned:
        os.environ["TUNESCOPE_THREADS"] = "1"
    try:
        with hold(out):
            plan = resolve(cfg)
            # with training.launch each stage runs in its own process, so that nothing an evaluation
            # left on a GPU (vLLM's memory) is held when accelerate launches the next training on all of them
            records = StageRunner(out).run(build_stages(plan, out), jobs=jobs, warm=lambda: warm(cfg),
                                           isolate=cfg.training.launch is not None)
            write_json(out / "study.json", make_manifest(plan, records))
            rep = Path(records["report"]["dir"])
            _publish(rep / "report.html", out / "report.html")
            tables = out / "tables"
            if tables.exists():
                shutil.rmtree(tables)
            shutil.copytree(rep / "tables", tables)
    finally:
        if pinned:  # leave the caller's environment as it was
            os.environ.pop("TUNESCOPE_THREADS", None)
    return out / "report.html"


def warm(cfg: StudyConfig) -> None:
    """Load, once in the parent before it forks stage processes, what every stage would otherwise load
    again in its own process: the libraries (transformers' Llama classes, TRL; ~4 s per process) and the
    suites' item lists (the 24-point hand lists take ~3 s to enumerate). Nothing here runs torch work,
    so forking stays safe."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM  # noqa: F401  (lazy modules)

    import tunescope.evaluate.run  # noqa: F401
    from tunescope.evaluate.suites import resolve_suites

    if any(not r.checkpoints for r in cfg.runs.values()):
        from trl import GRPOTrainer, SFTTrainer  # noqa: F401

        import tunescope.train  # noqa: F401
    try:
        tasks = resolve_suites(cfg.evaluation.suites, cfg.evaluation.task_specs, cfg.evaluation.data)
        for task in tasks.values():
            task.count("test")
    except Exception:  # noqa: BLE001  a head start only: the stage that needs a suite reports its error itself
        pass


def _publish(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)


__all__ = ["build_stages", "make_manifest", "pick_checkpoint", "read_sidecar", "resolve_ref", "run_study"]
