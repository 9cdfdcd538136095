"""The study config: one YAML file describes a whole study, from base model to report.

    base:        which model every run starts from (an organism preset, a local directory or a hub id)
    evaluation:  the suites every checkpoint is scored on, and evaluation settings
    runs:        named training runs: method (tunescope.train.METHODS), training task, budget overrides, where the run
                 starts (base or another run's checkpoint), freeze / train-only selectors, seeds
    analyses:    weight diffs against the base, spectra of named (reference, target) pairs
    interventions: named weight edits from a reference checkpoint to a target one, re-evaluated

Everything is validated before any work starts: an unknown key, a wrong type, an unknown suite, method
or run, a checkpoint reference that cannot resolve, a base path that does not exist -> one `UserError`
line naming the key and the fix (`tunescope run --check`).

Checkpoint references ("refs") name a model of the study:

    base                 the base model
    sft24:best_ood       the checkpoint of run sft24 with the best score on its `ood_suite`
    sft24:last           the last checkpoint of run sft24
    sft24:0.75           the first checkpoint at or after 75% of run sft24's training
    restore_top20        the edited model of intervention restore_top20

Layer ranges in selectors may be written as fractions of the model's depth, "gate,up,down@60%-80%",
and are resolved against the base model (32 layers: 19-25, the layers the original study froze).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from tunescope.config import apply_overrides, from_dict, merge, read_yaml
from tunescope.errors import UserError
from tunescope.filetasks import load_spec, shipped_specs
from tunescope.intervene import METHODS as INTERVENTIONS
from tunescope.naming import parse_layer_range
from tunescope.organism.build import PRESETS as ORGANISMS
from tunescope.train.config import IMPORTED_METHODS, METHODS
from tunescope.world import TASKS

CONFIGS = Path(str(resources.files("tunescope") / "configs"))
PRESETS = tuple(sorted(p.stem.removeprefix("study_") for p in CONFIGS.glob("study_*.yaml")))  # packaged studies


@dataclass
class BaseSpec:
    organism: str | None = "default"  # organism preset (smoke|default), built and cached on first use
    path: str | None = None  # a local model directory or a hub id; overrides `organism` when set
    seed: int = 0  # organism pretraining seed


@dataclass
class RunSpec:
    method: str = "sft"  # sft | grpo | rloo | chord | dpo (tunescope.train.METHODS)
    task: str = "maths"  # training task (an organism suite); with `dataset`, the in-domain evaluation suite
    dataset: str | None = None  # train on a JSONL file / HF dataset dir or hub id (prompt, solution, answer)
    init: str = "base"  # where training starts: base or a checkpoint ref such as sft24:0.75
    budget: dict[str, Any] = field(default_factory=dict)  # training-config overrides (lr, steps, ...)
    freeze: list[str] = field(default_factory=list)  # selectors of frozen tensors ("gate,up,down@60%-80%")
    train_only: list[str] = field(default_factory=list)  # selectors of the only trained tensors ("q,k")
    seeds: list[int] = field(default_factory=lambda: [0])  # one training run per seed
    ood_suite: str | None = None  # the suite that picks this run's best_ood checkpoint
    evaluation: dict[str, Any] = field(default_factory=dict)  # evaluation.settings overrides for this run's
    # checkpoints and the interventions from it, e.g. {n_by_suite: {game24_ood: 0}} (all OOD hands)
    label: str | None = None  # display name in the report (defaults to the run's key)
    # a run trained elsewhere instead of training: a run directory in any layout tunescope reads, or a
    # list of {path, step} (model directories or hub ids); `method` says what produced it (IMPORTED_METHODS)
    checkpoints: Any = None


@dataclass
class TrainingSpec:
    budget: str = "default"  # packaged budget (smoke | default) or a budget YAML that every run starts from
    settings: dict[str, Any] = field(default_factory=dict)  # overrides shared by every run (max_steps, ...)
    # an accelerate config file (configs/accelerate/*.yaml): each run trains under `accelerate launch
    # --config_file LAUNCH -m tunescope.cli train ...` on its processes (several GPUs); null = in the study's process
    launch: str | None = None


@dataclass
class EvaluationSpec:
    suites: list[str] = field(default_factory=lambda: list(TASKS))
    settings: dict[str, Any] = field(default_factory=dict)  # evaluation-config overrides (n items, ...)
    task_specs: list[str] = field(default_factory=list)  # file-task spec YAMLs; their names become suites
    data: list[str] = field(default_factory=list)  # SUITE=PATH: local data for shipped specs (gsm8k, math500, ...)
    kl: bool = True  # KL to the base model, teacher-forced, at every checkpoint


@dataclass
class SpectrumSpec:
    reference: str = "base"
    target: str = ""
    ranks: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.5, 1.0])  # rank bands (fractions)
    null_draws: int = 3  # random updates of the same size per matrix: the angles' null model (0: none)


@dataclass
class AnalysesSpec:
    diff: bool = True  # relative weight change of every checkpoint against the base
    spectra: dict[str, SpectrumSpec] = field(default_factory=dict)


@dataclass
class InterventionSpec:
    method: str = "direction"  # direction | full | values | reset | interpolate (tunescope.intervene)
    reference: str = ""  # checkpoint ref whose weights are restored (e.g. sft24:best_ood)
    target: str = ""  # checkpoint ref that is edited (e.g. sft24:last)
    k: float = 0.2  # share of singular directions restored (top k of the spectrum)
    tail: bool = False  # also restore the bottom k
    layers: str | None = None  # reset (required) or narrowing the others: "0%-25%" or "0-7"
    alpha: float = 0.5  # interpolate: W = alpha * R + (1 - alpha) * T
    recovery_suite: str | None = None  # the suite recovery is measured on (default: reference run's ood_suite)


@dataclass
class StudyConfig:
    name: str = "study"
    base: BaseSpec = field(default_factory=BaseSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    evaluation: EvaluationSpec = field(default_factory=EvaluationSpec)
    runs: dict[str, RunSpec] = field(default_factory=dict)
    analyses: AnalysesSpec = field(default_factory=AnalysesSpec)
    interventions: dict[str, InterventionSpec] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------
# Loading


def builtin_path(preset: str) -> Path:
    """The packaged study file for a preset (default | smoke)."""
    if preset not in PRESETS:
        raise UserError(f"--preset {preset!r} is unknown; use one of {', '.join(PRESETS)}")
    return CONFIGS / f"study_{preset}.yaml"


def read_study(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A study file as a mapping, with `extends: PRESET_OR_FILE` read first and merged under it
    (mappings merge key by key; lists and scalars in the file replace the parent's)."""
    data = read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    parent_path = builtin_path(parent) if parent in PRESETS else (path.parent / str(parent))
    if not parent_path.is_file():
        raise UserError(f"{path}: extends {parent!r}, which is neither a packaged study "
                        f"({', '.join(PRESETS)}) nor a study file")
    if parent_path.resolve() in _seen:
        raise UserError(f"{path}: extends {parent!r}, which extends it back; break the cycle")
    return merge(read_study(parent_path, (*_seen, path.resolve())), data)


def load_study(path: str | Path | None = None, overrides: list[str] | None = None,
               preset: str = "default") -> StudyConfig:
    """Read a study file (the preset's built-in study when `path` is None), apply overrides, validate
    it, and check what it resolves to at the base's depth (`tunescope.study.plan.check`)."""
    data = read_study(Path(path) if path is not None else builtin_path(preset))
    _check_named_entries(data, overrides or [])
    data = apply_overrides(data, overrides or [])
    cfg = from_dict(StudyConfig, data)
    validate(cfg)
    from tunescope.study.plan import check  # the plan reads this module's types

    check(cfg)
    return cfg


def _check_named_entries(data: dict[str, Any], overrides: list[str]) -> None:
    """An override may change a run or an intervention but not add one: a typo in its name would
    otherwise add a run with default settings (new ones belong in a study file)."""
    import difflib

    for item in overrides:
        parts = item.partition("=")[0].strip().split(".")
        if len(parts) < 3 or parts[0] not in ("runs", "interventions"):
            continue
        known = list((data.get(parts[0]) or {}).keys())
        if parts[1] not in known:
            close = difflib.get_close_matches(parts[1], known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UserError(f"override '{item}': the study has no {parts[0][:-1]} {parts[1]!r}; {hint}"
                            f"{parts[0]}: {', '.join(known) or 'none'} (add a new one in a study file)")


# ---------------------------------------------------------------------------------------------------
# Validation


def _organism_suites() -> set[str]:
    return set(TASKS)


def spec_suites(cfg: StudyConfig) -> dict[str, str]:
    """Suite name -> spec file for evaluation.task_specs (each file must exist and parse)."""
    out = {}
    for i, path in enumerate(cfg.evaluation.task_specs):
        if not Path(path).is_file():
            raise UserError(f"evaluation.task_specs[{i}]: {path} does not exist; give a task spec YAML file")
        try:
            out[load_spec(path).name] = path
        except UserError as e:
            raise UserError(f"evaluation.task_specs[{i}]: {e}") from None
    return out


def _suites(cfg: StudyConfig) -> set[str]:
    """Every suite an evaluation can name: organism tasks, shipped file specs, the study's task specs."""
    return _organism_suites() | set(spec_suites(cfg)) | set(shipped_specs())


_REF_RE = re.compile(r"^(?P<run>[A-Za-z0-9_.-]+):(?P<which>best_ood|last|first|\d*\.?\d+)$")
_HUB_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


def parse_ref(ref: str) -> tuple[str, str]:
    """("base" | run | intervention, which) for a checkpoint ref; which is "" for base/interventions."""
    m = _REF_RE.match(ref)
    return (m.group("run"), m.group("which")) if m else (ref, "")


def _check_ref(cfg: StudyConfig, ref: str, where: str, *, allow_interventions: bool) -> None:
    name, which = parse_ref(ref)
    if not which:
        if name == "base" or (allow_interventions and name in cfg.interventions):
            return
        raise UserError(f"{where}: {ref!r} is not a checkpoint ref; write base, RUN:last, RUN:best_ood "
                        f"or RUN:0.5 with RUN one of {', '.join(cfg.runs) or '(no runs)'}")
    if name not in cfg.runs:
        raise UserError(f"{where}: run {name!r} in {ref!r} is not defined under runs "
                        f"(known: {', '.join(cfg.runs) or 'none'})")
    if which == "best_ood" and not cfg.runs[name].ood_suite:
        raise UserError(f"{where}: {ref!r} needs runs.{name}.ood_suite, the suite that picks the best checkpoint")
    if which not in ("best_ood", "last", "first") and not 0.0 <= float(which) <= 1.0:
        raise UserError(f"{where}: fraction in {ref!r} must lie between 0 and 1")


def _check_suite(name: str, where: str, suites: set[str]) -> None:
    if name not in suites:
        raise UserError(f"{where}: unknown suite {name!r}; use one of {', '.join(sorted(suites))}")


def _check_selector(text: str, where: str) -> None:
    from tunescope.naming import parse_selector

    try:
        parse_selector(text)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None


def validate(cfg: StudyConfig) -> None:
    """Reject every problem that can be seen before work starts (one line naming the key and the fix)."""
    _validate_base(cfg)
    if cfg.training.launch is not None and not Path(cfg.training.launch).is_file():
        raise UserError(f"training.launch: {cfg.training.launch} is not a file; give an accelerate config such as "
                        "configs/accelerate/deepspeed_zero2.yaml, or null to train in the study's process")
    _validate_evaluation(cfg)
    _validate_runs(cfg)
    _check_acyclic(cfg)
    for name, spec in cfg.analyses.spectra.items():
        for key in ("reference", "target"):
            _check_ref(cfg, getattr(spec, key), f"analyses.spectra.{name}.{key}", allow_interventions=True)
        if not spec.ranks or any(not 0 < r <= 1 for r in spec.ranks):
            raise UserError(f"analyses.spectra.{name}.ranks: give rank bands as fractions in (0, 1]")
        if spec.null_draws < 0:
            raise UserError(f"analyses.spectra.{name}.null_draws: give 0 (no null model) or more random updates")
    _validate_interventions(cfg)


def _validate_base(cfg: StudyConfig) -> None:
    base = cfg.base
    if base.path is None and base.organism is None:
        raise UserError("base: set base.organism (smoke|default) or base.path (a model directory or hub id)")
    if base.path is None and base.organism not in ORGANISMS:
        raise UserError(f"base.organism: {base.organism!r} is not a preset; use one of {', '.join(ORGANISMS)}")
    if base.path is not None:
        p = Path(base.path).expanduser()
        if not p.exists() and not _HUB_RE.match(base.path):
            raise UserError(f"base.path: {base.path} does not exist; give an existing model directory "
                            "or a hub id such as org/name")
        if p.exists() and not (p / "config.json").is_file():
            raise UserError(f"base.path: {base.path} has no config.json; point it at a Hugging Face model directory")
        if p.is_dir():
            from tunescope.weights import verify

            try:
                verify(p)
            except UserError as e:
                raise UserError(f"base.path: {e}") from None


def _validate_evaluation(cfg: StudyConfig) -> None:
    suites = _suites(cfg)
    for i, entry in enumerate(cfg.evaluation.data):
        name, sep, path = entry.partition("=")
        if not sep or name not in cfg.evaluation.suites:
            raise UserError(f"evaluation.data[{i}]: write SUITE=PATH with SUITE one of evaluation.suites")
        if not Path(path).exists() and not _HUB_RE.match(path):
            raise UserError(f"evaluation.data[{i}]: {path} does not exist; give a local data file or a hub id")
    if not cfg.evaluation.suites:
        raise UserError("evaluation.suites: list at least one suite")
    for i, s in enumerate(cfg.evaluation.suites):
        _check_suite(s, f"evaluation.suites[{i}]", suites)



def _validate_runs(cfg: StudyConfig) -> None:
    suites = _suites(cfg)
    if not cfg.runs:
        raise UserError("runs: define at least one training run (method: sft or grpo)")
    for name, run in cfg.runs.items():
        where = f"runs.{name}"
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name == "base":
            raise UserError(f"{where}: run names may use letters, digits, '_', '.', '-' and may not be 'base'")
        if run.checkpoints is not None:
            _validate_imported(cfg, name, run)
            continue
        if run.method not in METHODS:
            raise UserError(f"{where}.method: unknown method {run.method!r}; use one of {', '.join(METHODS)}")
        if run.dataset is None:
            _check_suite(run.task, f"{where}.task", _organism_suites())
        else:
            if not Path(run.dataset).exists() and not _HUB_RE.match(run.dataset):
                raise UserError(f"{where}.dataset: {run.dataset} does not exist; give a JSONL file, a dataset "
                                "directory or a hub id")
            if run.task not in cfg.evaluation.suites:
                raise UserError(f"{where}.task: with a dataset, task names the in-domain suite; "
                                f"{run.task!r} must be one of evaluation.suites")
        if run.ood_suite is not None:
            _check_suite(run.ood_suite, f"{where}.ood_suite", suites)
            if run.ood_suite not in cfg.evaluation.suites:
                raise UserError(f"{where}.ood_suite: {run.ood_suite!r} must also be in evaluation.suites")
        if not run.seeds or len(set(run.seeds)) != len(run.seeds):
            raise UserError(f"{where}.seeds: give a non-empty list of distinct seeds, e.g. [0, 1, 2]")
        if run.freeze and run.train_only:
            raise UserError(f"{where}: set freeze or train_only, not both")
        for key in ("freeze", "train_only"):
            for i, sel in enumerate(getattr(run, key)):
                _check_selector(sel, f"{where}.{key}[{i}]")
        _check_ref(cfg, run.init, f"{where}.init", allow_interventions=False)
        if parse_ref(run.init)[0] == name:
            raise UserError(f"{where}.init: a run cannot start from its own checkpoint")


def _validate_imported(cfg: StudyConfig, name: str, run: RunSpec) -> None:
    """A run trained elsewhere: what produced it, its in-domain suite, where its checkpoints are, and
    none of the keys that only training reads."""
    where = f"runs.{name}"
    if run.method not in IMPORTED_METHODS:
        raise UserError(f"{where}.method: say what produced the imported checkpoints, one of "
                        f"{', '.join(IMPORTED_METHODS)}")
    if run.task not in cfg.evaluation.suites:
        raise UserError(f"{where}.task: names the imported run's in-domain suite; {run.task!r} must be one of "
                        "evaluation.suites")
    if run.ood_suite is not None and run.ood_suite not in cfg.evaluation.suites:
        raise UserError(f"{where}.ood_suite: {run.ood_suite!r} must also be in evaluation.suites")
    given = [k for k in ("dataset", "budget", "freeze", "train_only") if getattr(run, k)]
    if given or run.init != "base" or run.seeds != [0]:
        key = given[0] if given else ("init" if run.init != "base" else "seeds")
        raise UserError(f"{where}.{key}: an imported run (checkpoints:) is not trained here; drop {key} "
                        "(it is read as one run from the study's base)")
    ck = run.checkpoints
    if isinstance(ck, str):
        if not Path(ck).expanduser().exists() and not _HUB_RE.match(ck):
            raise UserError(f"{where}.checkpoints: {ck} does not exist; give a run directory or a list of "
                            "{path, step}")
        return
    if not isinstance(ck, list) or not ck or not all(isinstance(e, dict) and set(e) == {"path", "step"} for e in ck):
        raise UserError(f"{where}.checkpoints: give a run directory, or a list of {{path: DIR or hub id, step: N}}")
    steps = [e["step"] for e in ck]
    if not all(isinstance(x, int) and x > 0 for x in steps) or len(set(steps)) != len(steps):
        raise UserError(f"{where}.checkpoints: steps must be distinct integers > 0 (step 0 is the study's base)")
    for e in ck:
        if not Path(str(e["path"])).expanduser().exists() and not _HUB_RE.match(str(e["path"])):
            raise UserError(f"{where}.checkpoints: {e['path']} does not exist; give a model directory or a hub id")


def _validate_interventions(cfg: StudyConfig) -> None:
    for name, iv in cfg.interventions.items():
        where = f"interventions.{name}"
        if name in cfg.runs or name == "base":
            raise UserError(f"{where}: the name is already used by a run; rename the intervention")
        if iv.method not in INTERVENTIONS:
            raise UserError(f"{where}.method: unknown intervention {iv.method!r}; use one of {', '.join(INTERVENTIONS)}")
        for key in ("reference", "target"):
            _check_ref(cfg, getattr(iv, key), f"{where}.{key}", allow_interventions=False)
        if not 0 < iv.k <= 1:
            raise UserError(f"{where}.k: {iv.k} must be a share of directions in (0, 1]")
        if iv.method == "reset" and not iv.layers:
            raise UserError(f"{where}.layers: reset needs a layer range such as 0%-25% or 0-7")
        if iv.layers:
            try:
                parse_layer_range(iv.layers)
            except UserError as e:
                raise UserError(f"{where}.layers: {e}") from None


def _check_acyclic(cfg: StudyConfig) -> None:
    for start in cfg.runs:
        seen, name = [start], start
        while (parent := parse_ref(cfg.runs[name].init)[0]) != "base":
            if parent in seen:
                raise UserError(f"runs.{start}.init: runs start from each other in a cycle "
                                f"({' -> '.join([*seen, parent])}); start one of them from base")
            seen.append(parent)
            name = parent


