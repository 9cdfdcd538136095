"""The study plan: what a validated study resolves to at its base model's real depth.

`tunescope.study.config` parses and validates a study file; this module resolves it once the
base is known: each run's typed training budget (packaged budget <- training.settings <- the
run's keys, freeze selectors in layers of this base), the evaluation config, the suite each
intervention's recovery is measured on. The runner builds its stages from these, the report
prints them, and `check` (called by `load_study`) rejects what only the resolved plan shows: a
budget that does not parse, a task with fewer items than asked for, layers outside the model.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunescope.config import from_dict, merge, to_dict
from tunescope.errors import UserError
from tunescope.filetasks import shipped_specs
from tunescope.naming import layer_range, resolve_selector
from tunescope.study.config import StudyConfig, parse_ref, spec_suites
from tunescope.train.config import BudgetConfig, load_budget


def n_layers(model: str) -> int:
    """Number of transformer blocks of a model directory (or a hub id in the local HF cache)."""
    path = Path(model) / "config.json"
    if path.is_file():
        conf = json.loads(path.read_text())
    else:  # a hub id: resolved through the local Hugging Face cache
        from transformers import AutoConfig

        conf = AutoConfig.from_pretrained(model).to_dict()
    conf = conf.get("text_config", conf)
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if key in conf:
            return int(conf[key])
    raise UserError(f"cannot tell how many layers {model} has (no num_hidden_layers in its config)")


def base_depth(cfg: StudyConfig) -> int | None:
    """Number of layers of the study's base, without building or loading it (None when unknown)."""
    if cfg.base.path is None:
        from tunescope.organism.build import recipe_for
        from tunescope.organism.model import MODELS

        recipe = recipe_for(cfg.base.organism)
        return MODELS[recipe.preset](recipe.vocab_size).num_hidden_layers
    try:
        return n_layers(cfg.base.path)
    except (UserError, OSError, ValueError):  # a hub id not in the local cache: resolved when trained
        return None


@dataclass(frozen=True)
class Plan:
    """A study resolved once, at its base's depth: every (run, seed)'s training budget and every
    run's evaluation config (`None`: the base's). Stages, the manifest and `check` read it instead
    of resolving again. `depth` is None only for a hub base not in the local cache; its freeze
    selectors stay as written until the base stage has read the model (`budget(..., n_layers=)`)."""

    cfg: StudyConfig
    depth: int | None
    budgets: dict[tuple[str, int], BudgetConfig]  # trained runs only (not runs.NAME.checkpoints)
    evals: dict[str | None, Any]

    def budget(self, run: str, seed: int, n_layers: int | None = None) -> BudgetConfig:
        if self.depth is None and n_layers:
            return budget_for(self.cfg, run, seed, n_layers)
        return self.budgets[(run, seed)]


def resolve(cfg: StudyConfig) -> Plan:
    """The plan of a validated study (`load_study` has run `check` on it)."""
    evals: dict[str | None, Any] = {}
    for name in cfg.runs:
        try:
            evals[name] = eval_config(eval_settings(cfg, name))
        except UserError as e:
            raise UserError(f"runs.{name}.evaluation: {e}") from None
    evals[None] = eval_config(_base_settings(cfg, list(evals.values())))
    depth = base_depth(cfg)
    budgets = {(name, seed): budget_for(cfg, name, seed, depth) for name, run in cfg.runs.items()
               if run.checkpoints is None for seed in run.seeds}  # imported runs are not trained here
    return Plan(cfg, depth, budgets, evals)


def check(cfg: StudyConfig) -> Plan:
    """Reject what the resolved plan shows to be wrong (one line naming the key and the fix)."""
    _check_n_by_suite(cfg, eval_config(cfg.evaluation.settings), "evaluation.settings")
    plan = resolve(cfg)
    for name, run in cfg.runs.items():
        _check_n_by_suite(cfg, plan.evals[name], f"runs.{name}.evaluation")
        if run.checkpoints is None:
            try:
                plan.budget(name, run.seeds[0]).check_method(run.method)
            except UserError as e:
                raise UserError(f"runs.{name}.budget: {e}") from None
        if run.dataset is None and run.checkpoints is None:
            b = plan.budget(name, run.seeds[0])
            where = f"runs.{name}.budget." + ("skip_train_items + n_train_items" if b.skip_train_items else "n_train_items")
            _check_pool(run.task, b.skip_train_items + b.n_train_items, where)
    depth = plan.depth
    for name, iv in cfg.interventions.items():
        where = f"interventions.{name}"
        if iv.layers and depth:
            try:
                layer_range(iv.layers, depth)
            except UserError as e:
                raise UserError(f"{where}.layers: {e}") from None
        suite = recovery_suite(cfg, name)
        if suite is None:
            raise UserError(f"{where}.recovery_suite: name the suite recovery is measured on "
                            "(or give the reference run an ood_suite)")
        if suite not in cfg.evaluation.suites:
            raise UserError(f"{where}.recovery_suite: unknown suite {suite!r}; use one of "
                            f"{', '.join(sorted(cfg.evaluation.suites))}")
    return plan


@functools.cache
def _pool_problem(task: str, n: int) -> str | None:
    from tunescope.world import get_task

    try:
        get_task(task).items("train", n)
    except UserError as e:
        return str(e)
    return None


def _check_pool(task: str, n: int, where: str) -> None:
    """The training task must hold skip_train_items + n_train_items distinct training items."""
    problem = _pool_problem(task, n)
    if problem:
        raise UserError(f"{where}: {problem}")


def budget_for(cfg: StudyConfig, run: str, seed: int, n_layers: int | None) -> BudgetConfig:
    """The run's training config: the study budget <- training.settings <- the run's own keys.

    Shares of depth in freeze selectors ("gate,up,down@60%-80%") are resolved to layers when
    `n_layers` is known (the runner reads the base's depth) and kept as written otherwise; a range
    outside the model is an error either way, here or when training selects the tensors.
    """
    spec = cfg.runs[run]
    try:
        base = to_dict(load_budget(cfg.training.budget))
    except UserError as e:
        raise UserError(f"training.budget: {e}; name a packaged budget (smoke, default) or a YAML file") from None
    merged = merge(merge(base, cfg.training.settings), spec.budget)
    merged.update(task=None if spec.dataset else spec.task, dataset=spec.dataset, seed=seed,
                  dataset_spec=dataset_spec(cfg, spec.task) if spec.dataset else None,
                  freeze=list(spec.freeze), train_only=list(spec.train_only))
    try:
        if n_layers:
            merged["freeze"] = [resolve_selector(s, n_layers) for s in spec.freeze]
            merged["train_only"] = [resolve_selector(s, n_layers) for s in spec.train_only]
        return from_dict(BudgetConfig, merged)
    except UserError as e:
        raise UserError(f"runs.{run}.budget: {e}") from None


def dataset_spec(cfg: StudyConfig, suite: str) -> str | None:
    """The spec a run's dataset is read by: that of its in-domain suite when the suite is a
    benchmark file (shipped, or one of evaluation.task_specs), so training, rewards and scoring
    read the file alike; None for plain prompt/solution/answer files."""
    if suite in shipped_specs():
        return suite
    return spec_suites(cfg).get(suite)


def eval_config(settings: dict[str, Any]) -> Any:
    """The evaluation config of every evaluate stage."""
    from tunescope.evaluate.run import EvalConfig

    try:
        return from_dict(EvalConfig, settings, prefix="evaluation.settings.")
    except UserError as e:
        msg = str(e)
        raise UserError(msg if msg.startswith(("unknown", "evaluation")) else f"evaluation.settings: {msg}") from None


def recovery_suite(cfg: StudyConfig, intervention: str) -> str | None:
    iv = cfg.interventions[intervention]
    if iv.recovery_suite:
        return iv.recovery_suite
    run = parse_ref(iv.reference)[0]
    return cfg.runs[run].ood_suite if run in cfg.runs else None


def _check_n_by_suite(cfg: StudyConfig, ecfg: Any, where: str) -> None:
    for key in ("n_by_suite", "n_final_by_suite"):
        unknown = sorted(set(getattr(ecfg, key)) - set(cfg.evaluation.suites))
        if unknown:
            raise UserError(f"{where}.{key}: {unknown[0]!r} is not one of evaluation.suites "
                            f"({', '.join(cfg.evaluation.suites)})")


def eval_settings(cfg: StudyConfig, run: str | None) -> dict[str, Any]:
    """The evaluation settings of a run's checkpoints (`run=None`: the base): evaluation.settings <-
    the run's own `evaluation` keys; a run's KL is measured on its training task's prompts (`kl_suite`
    = its task when that is an evaluated suite and nothing else is set). The base is scored on as many items of each suite as any run's
    `n_by_suite` (and `n_final_by_suite`) asks for (0 = all wins), so that every run's step 0 pairs
    item by item with its later checkpoints. Only these two are united: a run that changes `n` or the generation
    settings, or a run started from another run's checkpoint with more items than that run, has a
    step 0 scored otherwise, and the report's paired comparisons then use the items both share."""
    settings = dict(cfg.evaluation.settings)
    if run is not None:
        own = dict(merge(settings, cfg.runs[run].evaluation))
        if own.get("kl_suite") is None and cfg.runs[run].task in cfg.evaluation.suites:
            own["kl_suite"] = cfg.runs[run].task  # KL (RL's Razor's forward KL too) on the run's own task's prompts
        return own
    return _base_settings(cfg, [eval_config(eval_settings(cfg, name)) for name in cfg.runs])


def _base_settings(cfg: StudyConfig, run_evals: list[Any]) -> dict[str, Any]:
    from tunescope.evaluate.run import EvalConfig

    settings = dict(cfg.evaluation.settings)
    base = eval_config(settings)
    by_suite: dict[str, int] = dict(base.n_by_suite)
    final_by_suite: dict[str, int] = dict(base.n_final_by_suite)
    for ecfg in run_evals:
        for suite, n in ecfg.n_by_suite.items():
            have = by_suite.get(suite, base.n if base.n is not None else EvalConfig().n)
            by_suite[suite] = 0 if 0 in (n, have) else max(n, have)
        for suite, n in ecfg.n_final_by_suite.items():
            have = final_by_suite.get(suite, by_suite.get(suite, base.n if base.n_final is None else base.n_final))
            final_by_suite[suite] = 0 if 0 in (n, have) else max(n, have)
    if by_suite:
        settings["n_by_suite"] = by_suite
    if final_by_suite:
        settings["n_final_by_suite"] = final_by_suite
    return settings

