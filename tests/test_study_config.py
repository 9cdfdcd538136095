"""Study config: the built-in studies load, and every bad input is one line naming the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunescope.cli import main
from tunescope.errors import UserError
from tunescope.naming import resolve_selector
from tunescope.study.config import load_study


@pytest.mark.parametrize("preset", ["default", "smoke"])
def test_builtin_studies_are_valid(preset):
    cfg = load_study(preset=preset)
    assert {r.method for r in cfg.runs.values()} == {"sft", "grpo", *(["rloo", "dpo"] if preset == "smoke" else [])}
    assert cfg.runs["grpo24"].init == "sft24:last"
    assert cfg.interventions["restore_top20"].k == 0.2
    assert cfg.base.organism == preset


@pytest.mark.parametrize("overrides, fragment", [
    (["runs.sft.lrr=1"], "unknown config key 'runs.sft.lrr'"),
    (["evaluaton.suites=[maths]"], "did you mean 'evaluation'"),
    (["runs.sft.seeds=3"], "runs.sft.seeds: expected a list"),
    (["runs.sft.method=ppo"], "runs.sft.method: unknown method 'ppo'; use one of sft, grpo, rloo, chord, dpo"),
    (["evaluation.suites=[maths,chess]"], "evaluation.suites[1]: unknown suite 'chess'"),
    (["runs.sft.task=chess"], "runs.sft.task: unknown suite 'chess'"),
    (["base.path=/no/such/model"], "base.path: /no/such/model does not exist"),
    (["base.organism=huge"], "base.organism: 'huge' is not a preset"),
    (["runs.grpo24.init=sft25:last"], "runs.grpo24.init: run 'sft25'"),
    (["runs.grpo24.init=sft:best_ood"], "needs runs.sft.ood_suite"),
    (["runs.grpo24.init=sft24:1.5"], "must lie between 0 and 1"),
    (["runs.sft24.init=grpo24:last"], "in a cycle"),
    (["runs.sft.freeze=[gate@60%-20%]"], "runs.sft.freeze[0]: selector 'gate@60%-20%': layer range"),
    (["runs.sft.freeze=[mlp@1-2]"], "runs.sft.freeze[0]: selector 'mlp@1-2': unknown module type"),
    (["interventions.reset_first25.layers=null"], "interventions.reset_first25.layers: reset needs"),
    (["interventions.restore_top20.method=magic"], "unknown intervention 'magic'"),
    (["interventions.restore_top20.k=0"], "interventions.restore_top20.k"),
    (["analyses.spectra.x={target: nowhere}"], "analyses.spectra.x.target: 'nowhere' is not a checkpoint ref"),
    (["runs.sft.seeds=[0,0]"], "runs.sft.seeds: give a non-empty list of distinct seeds"),
    (["runs.sft.dataset=/no/data.jsonl"], "runs.sft.dataset: /no/data.jsonl does not exist"),
    (["evaluation.task_specs=[/no/spec.yaml]"], "evaluation.task_specs[0]: /no/spec.yaml does not exist"),
    (["evaluation.data=[gsm8k]"], "evaluation.data[0]: write SUITE=PATH"),
    (["evaluation.settings.temperature=-1"], "eval: temperature must be >= 0"),
    (["evaluation.settings.n_itmes=3"], "unknown config key 'evaluation.settings.n_itmes'"),
    (["runs.sft.budget.max_steps=0"], "runs.sft.budget: max_steps must be at least 1"),
    (["runs.sft24.budget.n_train_items=5000"], "runs.sft24.budget.n_train_items: game24/train: asked for 5000"),
    (["runs.sft24.budget.skip_train_items=960"],
     "runs.sft24.budget.skip_train_items + n_train_items: game24/train: asked for"),
])
def test_bad_input_is_one_line_naming_the_key(overrides, fragment):
    with pytest.raises(UserError) as e:
        load_study(preset="smoke", overrides=overrides)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_base_path_must_be_a_model_dir_or_hub_id(tmp_path):
    with pytest.raises(UserError, match="has no config.json"):
        load_study(preset="smoke", overrides=[f"base.path={tmp_path}"])
    (tmp_path / "config.json").write_text("{}")
    assert load_study(preset="smoke", overrides=[f"base.path={tmp_path}"]).base.path == str(tmp_path)
    assert load_study(preset="smoke", overrides=["base.path=org/model"]).base.path == "org/model"


def test_dataset_run_and_file_suites(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"prompt": "1+1?", "solution": "1+1=2", "answer": "2"}\n')
    cfg = load_study(preset="smoke", overrides=[f"runs.sft.dataset={data}", "runs.sft.task=gsm8k",
                                                "evaluation.suites=[maths,gsm8k,game24,game24_ood]",
                                                f"evaluation.data=[gsm8k={data}]"])
    assert cfg.runs["sft"].dataset == str(data)
    with pytest.raises(UserError, match="runs.sft.task: with a dataset, task names the in-domain suite"):
        load_study(preset="smoke", overrides=[f"runs.sft.dataset={data}", "runs.sft.task=twohop"])


def test_layer_fractions_resolve_against_depth():
    assert resolve_selector("gate,up,down@60%-80%", 32) == "gate,up,down@19-25"  # the layers the original froze
    assert resolve_selector("*@0%-25%", 32) == "*@0-7"
    assert resolve_selector("*@0%-25%", 4) == "*@0-0"
    assert resolve_selector("q@3-5", 6) == "q@3-5"
    assert resolve_selector("gate,up,down@60%-80%", 8) == "gate,up,down@4-6"
    assert resolve_selector("q,k", 8) == "q,k"


def test_manifest_budgets_resolve_selectors_at_the_real_depth(tmp_path):
    """The resolved budgets the report prints use the base's depth, not a placeholder."""
    from tunescope.study.plan import resolve
    from tunescope.study.runner import make_manifest

    cfg = load_study(None, overrides=["base.organism=smoke"])  # the default study: 60%-80% of a 2-layer organism
    manifest = make_manifest(resolve(cfg), {})
    assert manifest["runs"]["sft_frozen_mlp"]["budget_resolved"]["freeze"] == ["gate,up,down@1-1"]


def test_the_plan_resolves_each_budget_once(tmp_path, monkeypatch):
    """One resolution per (run, seed), at the base's depth, read by the stages and the manifest alike."""
    from tunescope.study import plan as plan_mod
    from tunescope.study.runner import build_stages, make_manifest

    cfg = load_study(None, overrides=["base.organism=smoke", "runs.sft.seeds=[0,1]"])
    calls = []
    real = plan_mod.budget_for
    monkeypatch.setattr(plan_mod, "budget_for", lambda *a, **k: calls.append(a[1:3]) or real(*a, **k))
    plan = plan_mod.resolve(cfg)
    stages = {s.name: s for s in build_stages(plan, tmp_path)}
    make_manifest(plan, {})
    assert sorted(calls) == sorted((r, s) for r, spec in cfg.runs.items() for s in spec.seeds)
    assert stages["train/sft_frozen_mlp/s0"].config["budget"]["freeze"] == ["gate,up,down@1-1"]
    assert stages["train/sft/s1"].config["budget"]["seed"] == 1


def test_the_peak_rule_is_in_the_key_of_every_stage_that_picks_a_peak(tmp_path, monkeypatch):
    """Stages that read RUN:best_ood (the interventions, the peak-to-last spectrum) hash the rule that
    picks it, so a change of the rule reruns them; stages that do not are left alone."""
    from tunescope.evaluate import stats
    from tunescope.study.plan import resolve
    from tunescope.study.runner import build_stages
    from tunescope.study.stages import StageRunner

    cfg = load_study(None, overrides=["base.organism=smoke"])
    keys = {st.name: k for st, k, _ in StageRunner(tmp_path).plan(build_stages(resolve(cfg), tmp_path))}
    monkeypatch.setattr(stats, "PEAK_RULE", "another rule")
    again = {st.name: k for st, k, _ in StageRunner(tmp_path).plan(build_stages(resolve(cfg), tmp_path))}
    changed = {n for n in keys if keys[n] != again[n]}
    assert {"intervene/restore_top20/s0", "evaluate/restore_top20/s0", "spectrum/sft24_peak_vs_last",
            "report"} <= changed
    assert not {n for n in changed if n.startswith(("train/", "diff/", "spectrum/sft_vs"))}


def test_cli_check_validates_without_work(tmp_path, capsys):
    bad = tmp_path / "study.yaml"
    bad.write_text("runs:\n  a: {method: sft, task: maths, budjet: {}}\n")
    assert main(["run", str(bad), "--out", str(tmp_path / "o"), "--check"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown config key 'runs.a.budjet'") and err.count("\n") == 1
    assert main(["run", "--preset", "smoke", "--out", str(tmp_path / "o"), "--check"]) == 0
    assert "smoke" in capsys.readouterr().out
    assert not (tmp_path / "o").exists()


def test_base_stage_key_follows_the_organism_cache_key(tmp_path, monkeypatch):
    """An edit of the world that changes the corpus makes a new organism (a new cache key); the base
    stage's key, and with it every stage downstream, must change too rather than reuse results
    computed on the old organism."""
    import importlib

    from tunescope.study.plan import resolve
    from tunescope.study.runner import build_stages
    from tunescope.study.stages import stage_key

    organism_build = importlib.import_module("tunescope.organism.build")  # the package exports build()
    cfg = load_study(None, preset="smoke")
    base = next(s for s in build_stages(resolve(cfg), tmp_path) if s.name == "base")
    before = stage_key(base, {})
    assert base.config["cache_key"] == organism_build.cache_key(organism_build.recipe_for(cfg.base.organism), 0)
    monkeypatch.setattr(organism_build, "corpus_digest", lambda name, seed: "edited-world")
    base = next(s for s in build_stages(resolve(cfg), tmp_path) if s.name == "base")
    assert stage_key(base, {}) != before


def test_smoke_study_is_the_default_study_made_tiny(tmp_path):
    from tunescope.config import to_dict

    default, smoke = to_dict(load_study(preset="default")), to_dict(load_study(preset="smoke"))
    assert smoke["runs"].keys() - {"rloo", "dpo"} == default["runs"].keys()  # plus RLOO and DPO, for the tests
    assert (smoke["runs"]["rloo"]["method"], smoke["runs"]["dpo"]["method"]) == ("rloo", "dpo")
    assert smoke["analyses"] == default["analyses"] and smoke["interventions"] == default["interventions"]
    for run, spec in default["runs"].items():  # same roles; only budgets, item counts and seeds differ
        assert {k: v for k, v in smoke["runs"][run].items() if k not in ("budget", "evaluation", "seeds")} == \
               {k: v for k, v in spec.items() if k not in ("budget", "evaluation", "seeds")}
    assert [default["runs"][r]["seeds"] for r in ("sft_lowlr", "sft", "grpo", "sft24", "grpo24")] == [[0, 1, 2]] * 5
    assert smoke["runs"]["sft"]["seeds"] == smoke["runs"]["grpo"]["seeds"] == [0, 1]  # seeds x items in make test
    assert smoke["base"]["organism"] == "smoke" and smoke["evaluation"]["settings"]["n"] == 4
    # a user's study can extend a packaged one or a file; a cycle is a one-line error
    (tmp_path / "mine.yaml").write_text("extends: smoke\nname: mine\nruns: {sft: {budget: {lr: 0.01}}}\n")
    mine = load_study(tmp_path / "mine.yaml")
    assert mine.name == "mine" and mine.runs["sft"].budget == {"lr": 0.01} and mine.base.organism == "smoke"
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(UserError, match="extends it back"):
        load_study(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: nosuch\n")
    with pytest.raises(UserError, match="neither a packaged study"):
        load_study(tmp_path / "c.yaml")


def test_an_intervention_is_made_once_per_seed_of_the_run_it_edits(tmp_path):
    from tunescope.study.plan import resolve
    from tunescope.study.runner import build_stages

    stages = {s.name: s for s in build_stages(resolve(load_study(preset="default")), tmp_path)}
    for seed in (0, 1, 2):
        edit = stages[f"intervene/restore_top20/s{seed}"]
        assert {f"train/sft24/s{seed}", f"evaluate/sft24/s{seed}"} <= set(edit.inputs)  # best_ood of that seed
        assert stages[f"evaluate/restore_top20/s{seed}"].inputs == ["base", edit.name]
    assert "intervene/restore_top20" not in stages and "intervene/restore_top20/s3" not in stages


@pytest.mark.parametrize("overrides, fragment", [
    (["runs.sft.freeze=[q@0-99]"], "runs.sft.budget: selector 'q@0-99': layer range '0-99' is outside the model, "
                                   "which has layers 0-1"),
    (["interventions.reset_first25.layers=2-5"], "interventions.reset_first25.layers: layer range '2-5' is "
                                                 "outside the model"),
])
def test_layers_outside_the_base_are_caught_before_work_starts(overrides, fragment):
    with pytest.raises(UserError) as e:
        load_study(preset="smoke", overrides=overrides)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_per_run_evaluation_settings_and_the_base_scored_on_their_union(tmp_path):
    from tunescope.study.plan import eval_settings, resolve
    from tunescope.study.runner import build_stages

    cfg = load_study(preset="smoke", overrides=["runs.sft24.evaluation={n_by_suite: {game24_ood: 0}}",
                                                "runs.grpo24.evaluation={n_by_suite: {game24_ood: 7, maths: 9}, "
                                                "n_final_by_suite: {game24: 0}}"])
    assert eval_settings(cfg, "sft24")["n_by_suite"] == {"game24_ood": 0}
    assert eval_settings(cfg, "sft")["n"] == 4 and "n_by_suite" not in eval_settings(cfg, "sft")
    assert eval_settings(cfg, None)["n_by_suite"] == {"game24_ood": 0, "maths": 9}  # 0 = all wins
    assert eval_settings(cfg, None)["n_final_by_suite"] == {"game24": 0}
    # KL on each run's own training task's prompts: 24-point runs on 24-point, maths runs on maths
    assert eval_settings(cfg, "sft24")["kl_suite"] == "game24" and eval_settings(cfg, "sft")["kl_suite"] == "maths"
    assert eval_settings(cfg, None).get("kl_suite") is None  # the base: KL to itself is 0 on any suite
    kept = load_study(preset="smoke", overrides=["runs.sft24.evaluation={kl_suite: maths}"])
    assert eval_settings(kept, "sft24")["kl_suite"] == "maths"  # what a run sets wins
    stages = {s.name: s for s in build_stages(resolve(cfg), tmp_path)}
    assert stages["evaluate/sft24/s0"].config["settings"]["n_by_suite"] == {"game24_ood": 0}
    assert stages["evaluate/restore_top20/s0"].config["settings"]["n_by_suite"] == {"game24_ood": 0}  # from sft24
    assert stages["evaluate/sft/s0"].config["settings"]["n_by_suite"] == {}
    with pytest.raises(UserError, match="runs.sft24.evaluation: unknown config key"):
        load_study(preset="smoke", overrides=["runs.sft24.evaluation={nn: 3}"])
    for bad, message in [("{n_by_suite: {game24_ood: all}}", "runs.sft24.evaluation: "),
                         ("{n_by_suite: [3]}", "runs.sft24.evaluation: "),
                         ("{n_by_suite: {game42_ood: 0}}", "'game42_ood' is not one of evaluation.suites")]:
        with pytest.raises(UserError, match=message) as e:
            load_study(preset="smoke", overrides=[f"runs.sft24.evaluation={bad}"])
        assert "\n" not in str(e.value)


def test_an_override_cannot_add_a_run_by_a_typo():
    with pytest.raises(UserError, match="the study has no run 'sft_lowrl'; did you mean 'sft_lowlr'") as e:
        load_study(preset="smoke", overrides=["runs.sft_lowrl.budget.lr=1e-4"])
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="no intervention 'restore'"):
        load_study(preset="smoke", overrides=["interventions.restore.k=0.3"])
    assert float(load_study(preset="smoke", overrides=["runs.sft.budget.lr=1e-4"]).runs["sft"].budget["lr"]) == 1e-4


@pytest.mark.parametrize("name, plan", [("sft24_recipes", "3 runs, 21 stages"), ("methods", "9 runs, 87 stages"),
                                        ("rl24_variants", "9 runs, 87 stages")])
def test_the_shipped_recipe_studies_plan(name, plan, tmp_path, capsys):
    """configs/studies/sft24_recipes.yaml (the measured table of docs/organism.md) and methods.yaml
    (the RL methods side by side, docs/study.md) parse and plan."""
    recipe = Path(__file__).resolve().parents[1] / "configs" / "studies" / f"{name}.yaml"
    assert main(["run", str(recipe), "--out", str(tmp_path / "s"), "--check"]) == 0
    assert f"study '{name}' is valid: {plan}" in capsys.readouterr().out
