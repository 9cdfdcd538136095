"""Checkpoint refs (`base`, `RUN:last`, `RUN:best_ood`, `RUN:0.5`, an intervention's name): the stages a
ref reads, and the model it names once those stages have finished. Runs resolve with their first
seed unless a seed is given; a run started from another run takes that run's same seed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunescope.checkpoints import ModelRef, list_checkpoints
from tunescope.errors import UserError
from tunescope.study import results as res
from tunescope.study.config import StudyConfig, parse_ref
from tunescope.study.stages import stage_id


def seed_of(cfg: StudyConfig, run: str, seed: int) -> int:
    """The seed of `run` that a run with `seed` starts from (the same seed when it exists)."""
    seeds = cfg.runs[run].seeds
    return seed if seed in seeds else seeds[0]


def _score_table(eval_rec: dict[str, Any]):
    import pandas as pd

    return pd.read_csv(Path(eval_rec["dir"]) / "scores.csv")


def pick_checkpoint(ckpts: list[ModelRef], which: str, eval_rec: dict[str, Any] | None,
                    ood_suite: str | None) -> ModelRef:
    """The checkpoint a ref names: last, first, a fraction, or best_ood (highest OOD accuracy after
    step 0, on the items that pick a peak: `_ood_by_step`)."""
    if not ckpts:
        raise UserError("the run has no complete checkpoints")
    if which == "last":
        return ckpts[-1]
    if which == "first":
        return ckpts[0]
    if which == "best_ood":
        assert eval_rec is not None and ood_suite is not None
        by_step = _ood_by_step(eval_rec, ood_suite)
        candidates = [c for c in ckpts if c.step and c.step in by_step.index]
        if not candidates:
            raise UserError(f"no scored checkpoint after step 0 on {ood_suite}; evaluate more checkpoints")
        return max(candidates, key=lambda c: (by_step[c.step], -c.step))  # ties: the earliest
    frac = float(which)
    later = [c for c in ckpts if c.fraction is not None and c.fraction >= frac - 1e-9]
    return later[0] if later else ckpts[-1]


def _ood_by_step(eval_rec: dict[str, Any], ood_suite: str):
    """Each checkpoint's OOD accuracy on the items that pick the peak (`evaluate.stats.picks_peak`;
    the others measure it, in the report), over the items every checkpoint answered; the mean on
    all items when per-item scores are unknown (a suite scored by lm-eval only)."""
    import pandas as pd

    from tunescope.evaluate.outputs import item_scores
    from tunescope.evaluate.stats import picks_peak

    s = _score_table(eval_rec)
    s = s[(s["suite"] == ood_suite) & (s["metric"] == primary_metric(s))]
    per = item_scores([Path(eval_rec["dir"])])
    series = {step: per.get((str(path), ood_suite)) for path, step in zip(s["path"], s["step"])}
    if not series or any(v is None for v in series.values()):
        return s.groupby("step")["value"].mean()
    ids = None
    for v in series.values():
        ids = v.index if ids is None else ids.intersection(v.index)
    picking = ids[[picks_peak(i) for i in ids]]
    ids = picking if len(picking) else ids  # a suite of a few items may have none on the picking side
    return pd.Series({step: float(v.loc[ids].mean()) for step, v in series.items()})


def primary_metric(scores) -> str:
    """The accuracy-like metric of a scores table: 'accuracy' when present, else the first one."""
    metrics = list(dict.fromkeys(scores["metric"]))
    return "accuracy" if "accuracy" in metrics else metrics[0]


def intervention_seeds(cfg: StudyConfig, name: str) -> list[int | None]:
    """The seeds an intervention is made for: one edit per seed of the run its refs name (the
    reference's, else the target's; the other run takes the same seed where it has it), or [None]
    when its refs name no run."""
    iv = cfg.interventions[name]
    for ref in (iv.reference, iv.target):
        src, which = parse_ref(ref)
        if which:
            return list(cfg.runs[src].seeds)
    return [None]


def pick_rule(refs: list[str]) -> dict[str, str]:
    """The peak-picking rule, for the config of a stage whose refs include a RUN:best_ood (it decides
    which checkpoint the stage reads, so a change of the rule must change the stage's key)."""
    from tunescope.evaluate.stats import PEAK_RULE

    return {"best_ood_rule": PEAK_RULE} if any(parse_ref(r)[1] == "best_ood" for r in refs) else {}


def ref_inputs(cfg: StudyConfig, refs: list[str], seed: int | None = None) -> list[str]:
    """Stages a ref reads; runs use `seed` where they have it, else their first seed; an intervention
    named as a ref is its first seed's edit."""
    inputs = ["base"]
    for ref in refs:
        src, which = parse_ref(ref)
        if which:
            s = seed_of(cfg, src, seed) if seed is not None else cfg.runs[src].seeds[0]
            inputs.append(stage_id("train", src, s))
            if which == "best_ood":
                inputs.append(stage_id("evaluate", src, s))
        elif src in cfg.interventions:
            inputs.append(stage_id("intervene", src, intervention_seeds(cfg, src)[0]))
    return list(dict.fromkeys(inputs))


def resolve_ref(cfg: StudyConfig, ref: str, inputs: dict[str, dict[str, Any]], seed: int | None = None) -> ModelRef:
    """The model a checkpoint ref names, from the records of finished stages."""
    src, which = parse_ref(ref)
    if not which:
        if src == "base":
            return ModelRef(path=res.base_model(inputs), name="base", step=0, fraction=0.0)
        edit = stage_id("intervene", src, intervention_seeds(cfg, src)[0])
        return ModelRef(path=Path(res.read(inputs[edit], res.EditResult).model), name=src)
    s = seed_of(cfg, src, seed) if seed is not None else cfg.runs[src].seeds[0]
    ckpts = list_checkpoints(res.read(inputs[stage_id("train", src, s)], res.TrainResult).run)
    return pick_checkpoint(ckpts, which, inputs.get(stage_id("evaluate", src, s)), cfg.runs[src].ood_suite)
