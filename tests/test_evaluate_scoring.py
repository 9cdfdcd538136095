"""Scorers on hand-made completions (right, wrong, malformed, empty, truncated), through the real tasks.

Organism suites come from `tunescope.world`; benchmark files from the shipped specs over small local
copies in tests/data (same formats as GSM8K, MATH-500, MMLU and GPQA).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunescope.errors import UserError
from tunescope.evaluate.run import _score_completion
from tunescope.evaluate.suites import resolve_suites
from tunescope.filetasks import FileTask, load_spec, shipped_specs
from tunescope.world import get_task
from tunescope.world.task import format_completion

DATA = Path(__file__).parent / "data"
FILES = {"gsm8k": "gsm8k_sample.jsonl", "math500": "math500_sample.jsonl", "mmlu": "mmlu_sample.parquet",
         "gpqa": "gpqa_sample.csv"}


def file_task(name: str) -> FileTask:
    return FileTask(load_spec(shipped_specs()[name], DATA / FILES[name]))


def scored(task, item, text):
    rec = _score_completion(task, item, text)
    return rec["extracted"], rec["score"]


def test_organism_maths_right_wrong_malformed_empty_truncated():
    task = get_task("maths")
    item = task.items("test", 1)[0]
    wrong = str(int(item.answer) + 1)
    assert scored(task, item, format_completion(item.solution, item.answer)) == (item.answer, 1.0)
    assert scored(task, item, format_completion(item.solution, wrong)) == (wrong, 0.0)
    assert scored(task, item, "<think>hmm</think><answer>banana \\frac{</answer>")[1] == 0.0
    assert scored(task, item, "") == (None, 0.0)
    assert scored(task, item, "<think>" + item.solution[:5]) == (None, 0.0)  # cut off before the answer
    # cut off inside the answer tag: the unclosed tag still counts (extract_answer's rule)
    assert scored(task, item, f"<think>{item.solution}</think><answer>{item.answer}")[1] == 1.0


def test_organism_game24_choice_and_instruct():
    g24 = get_task("game24_ood")
    item = g24.items("test", 1)[0]
    assert scored(g24, item, format_completion(item.solution, item.answer))[1] == 1.0
    assert scored(g24, item, "<answer>cards: 1, 1, 1, 1; formula: 1+1+1+1=24</answer>")[1] == 0.0
    assert scored(g24, item, "<answer>cards: ((( formula</answer>")[1] == 0.0
    assert scored(g24, item, "")[1] == 0.0

    facts = get_task("facts")
    item = facts.items("test", 1)[0]
    other = next(c for c in "ABCD" if c != item.answer)
    assert facts.kind == "choice" and item.meta["choices"]
    assert scored(facts, item, format_completion(item.solution, item.answer))[1] == 1.0
    assert scored(facts, item, f"<answer>{other}</answer>")[1] == 0.0
    assert scored(facts, item, "<answer></answer>")[1] == 0.0

    ins = get_task("instruct")
    item = ins.items("test", 1)[0]
    assert scored(ins, item, format_completion(item.solution, item.answer))[1] == 1.0
    assert scored(ins, item, "")[1] == 0.0


def test_gsm8k_spec_extracts_the_number_after_hashes():
    task = file_task("gsm8k")
    item = task.items()[0]
    assert item.answer == "72" and "48/2" in item.solution and "####" not in item.solution
    assert scored(task, item, "<think>48 + 24</think><answer>72</answer>") == ("72", 1.0)
    assert scored(task, item, "She sold 48 + 24 = 72 clips, so the answer is $\\boxed{72}$.")[1] == 1.0  # no tags
    assert scored(task, item, "<answer>71</answer>")[1] == 0.0
    assert scored(task, item, "<answer>seventy-two</answer>")[1] == 0.0
    assert scored(task, item, "") == (None, 0.0)
    assert scored(task, item, "<think>48 + 24 =")[1] == 0.0  # truncated, no number yet


def test_math500_spec_uses_math_verify_on_latex():
    task = file_task("math500")
    polar, frac, root = task.items()
    assert polar.id == "test/precalculus/807.json"
    assert scored(task, polar, "<answer>\\left(3, \\frac{\\pi}{2}\\right)</answer>")[1] == 1.0
    assert scored(task, frac, "<answer>\\frac{5}{6}</answer>")[1] == 1.0
    assert scored(task, frac, "<answer>10/12</answer>")[1] == 1.0  # equivalent value
    assert scored(task, frac, "The sum is $\\boxed{\\frac{5}{6}}$")[1] == 1.0
    assert scored(task, frac, "<answer>\\frac{5}{7}</answer>")[1] == 0.0
    assert scored(task, frac, "<answer>\\frac{5}{</answer>")[1] == 0.0  # unparseable: wrong, no crash
    assert scored(task, root, "<answer>3\\sqrt{2}</answer>")[1] == 1.0
    assert scored(task, root, "<answer>\\sqrt{18}</answer>")[1] == 1.0
    assert scored(task, root, "")[1] == 0.0


def test_mmlu_and_gpqa_specs_turn_answers_into_letters():
    mmlu = file_task("mmlu")
    item = mmlu.items()[0]
    assert item.answer == "D" and len(item.meta["choices"]) == 4 and "\nD. The second and third" in item.prompt
    assert scored(mmlu, item, "<answer>D</answer>") == ("D", 1.0)
    assert scored(mmlu, item, "<answer>(D) The second and third</answer>")[1] == 1.0
    assert scored(mmlu, item, "<answer>B</answer>") == ("B", 0.0)
    assert scored(mmlu, item, "<answer>Dunno</answer>") == (None, 0.0)
    assert scored(mmlu, item, "") == (None, 0.0)

    gpqa = file_task("gpqa")
    items = gpqa.items()
    for it, correct in zip(items, ["photon", "+7", "mitochondrion"]):
        assert it.meta["choices"]["ABCD".index(it.answer)] == correct
    assert {it.answer for it in items} != {"A"}  # shuffled, not always first
    assert [it.meta["choices"] for it in file_task("gpqa").items()] == [it.meta["choices"] for it in items]


def test_scorer_that_raises_gives_a_scored_wrong_record():
    class Broken:
        name, kind = "broken", "generate"

        def extract(self, completion):
            raise ZeroDivisionError("boom")

        def score(self, item, completion):
            raise ZeroDivisionError("boom")

    item = get_task("maths").items("test", 1)[0]
    rec = _score_completion(Broken(), item, "<answer>1</answer>")
    assert rec["score"] == 0.0 and rec["extracted"] is None and "boom" in rec["error"]


def test_bad_input_is_one_line_user_error(tmp_path):
    with pytest.raises(UserError, match="unknown suite 'mathz'.*maths.*gsm8k"):
        resolve_suites(["mathz"])
    with pytest.raises(UserError, match=r"row 2 has no answer field 'answer'"):
        FileTask(load_spec(shipped_specs()["gsm8k"], DATA / "missing_answer.jsonl")).items()
    with pytest.raises(UserError, match="does not exist"):
        file_task_missing = FileTask(load_spec(shipped_specs()["gsm8k"], tmp_path / "nope.jsonl"))
        file_task_missing.items()
    with pytest.raises(UserError, match="SUITE=PATH"):
        resolve_suites(["gsm8k", "mmlu"], data=[str(DATA / "gsm8k_sample.jsonl")])
    spec = tmp_path / "t.yaml"
    spec.write_text("name: t\nsource: x.jsonl\nkind: choice\n")
    with pytest.raises(UserError, match="choices"):
        load_spec(spec)
    spec.write_text("name: t\nsource: x.jsonl\nkind: maths\npromt: '{q}'\n")
    with pytest.raises(UserError, match="did you mean 'prompt'"):
        load_spec(spec)


def test_task_spec_file_with_relative_source(tmp_path):
    (tmp_path / "qa.jsonl").write_text('{"q": "Capital of France?", "a": "Paris"}\n')
    (tmp_path / "qa.yaml").write_text("name: qa\nsource: qa.jsonl\nkind: exact\nprompt: '{q}'\nanswer: a\n")
    tasks = resolve_suites([], task_specs=[tmp_path / "qa.yaml"])
    task = tasks["qa"]
    item = task.items()[0]
    assert scored(task, item, "<answer> paris. </answer>") == ("paris.", 1.0)
    assert scored(task, item, "<answer>Lyon</answer>")[1] == 0.0


def test_facts_cloze_states_each_option_and_joins_the_shared_prefix_to_the_context():
    from tunescope.evaluate.prepare import option_text, shared_prefix
    from tunescope.evaluate.run import EvalConfig
    from tunescope.world import get_task

    item = get_task("facts").items("test", 1)[0]
    choices, gold = item.meta["choices"], "ABCD".index(item.answer)
    texts = [option_text(EvalConfig(), item, j) for j in range(4)]
    assert all(t.startswith("<think>") and c in t for t, c in zip(texts, choices))
    assert texts[gold][len("<think>"):] in item.solution  # the gold option is the fact as the solution states it
    prefix = shared_prefix(texts)
    assert all(t.startswith(prefix) and t[len(prefix)] == " " for t in texts)  # options keep their leading space
    assert option_text(EvalConfig(mc_cloze=False), item, 0) == f"<answer>{choices[0]}</answer>"
    assert "cloze" not in get_task("twohop").items("test", 1)[0].meta  # two hops: no sentence without the hop


@pytest.mark.parametrize("gold, answer, correct", [
    ("\\sqrt{2}", "sqrt(2)", True),  # the old training judge (no boxed parse) said wrong
    ("(1,2)", "(1, 2)", True),  # likewise
    ("\\{1,2\\}", "\\{1,2\\}", True),
    ("2", "2 + \\frac", False),  # the old training judge read a stray "2" out of broken LaTeX
    ("7", "7", True),
    ("7", "8", False),
])
def test_one_judge_for_rewards_and_scores(gold, answer, correct, tmp_path):
    """A training file's GRPO reward ('correct') and its evaluation score come from one judge,
    also for answers the two judges of earlier versions disagreed on."""
    from tunescope.train.data import load_pool
    from tunescope.train.grpo import reward_functions
    from tunescope.world.maths import math_equal as organism_judge

    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"prompt": "p", "solution": "s", "answer": gold}) + "\n")
    task, items = load_pool(None, str(f), 1)
    completion = f"<think>s</think><answer>{answer}</answer>"
    (reward,) = reward_functions(task, {items[0].id: items[0]}, ["correct"])
    assert reward(prompts=[None], completions=[completion], item_id=[items[0].id]) == [float(correct)]
    assert task.score(items[0], completion) == float(correct) == float(organism_judge(gold, answer))


def test_a_study_trains_on_the_benchmark_file_it_evaluates(tmp_path):
    """runs.X.dataset = the GSM8K file given to evaluation.data: training reads it by the gsm8k
    spec (question / answer with ####), not as prompt/solution/answer columns."""
    from tunescope.study.config import load_study
    from tunescope.study.plan import budget_for
    from tunescope.train.data import load_pool

    data = DATA / FILES["gsm8k"]
    cfg = load_study(preset="smoke", overrides=[f"runs.sft.dataset={data}", "runs.sft.task=gsm8k",
                                                "evaluation.suites=[maths,gsm8k,game24,game24_ood]",
                                                f"evaluation.data=[gsm8k={data}]"])
    budget = budget_for(cfg, "sft", 0, n_layers=2)
    assert budget.dataset_spec == "gsm8k"
    task, items = load_pool(budget.task, budget.dataset, 3, columns=budget.dataset_columns,
                            dataset_spec=budget.dataset_spec, need_solution=True)
    evaluated = file_task("gsm8k").items("test", 3)
    assert [(it.prompt, it.answer, it.solution) for it in items] == [(it.prompt, it.answer, it.solution)
                                                                      for it in evaluated]
    assert all(it.solution and "####" not in it.solution for it in items)
