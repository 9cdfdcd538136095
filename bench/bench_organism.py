"""Organism benchmark: build the `default` organism (pretraining time) and measure what it can do.

    .venv/bin/python -m bench bench_organism      # or: .venv/bin/python bench/bench_organism.py
    .venv/bin/python bench/bench_organism.py strategy MODEL_DIR ...   # maths strategy of any checkpoint
    .venv/bin/python bench/bench_organism.py ship [MODEL_DIR [RESULT_JSON]]   # ship a built default organism

Capabilities, on the test split of each world task (items never seen in pretraining):
- facts (MMLU analogue), by option log-likelihood: for each of the four options, the log-likelihood
  of the gold-format completion that picks it (`<think>{fact with that option} That is option X.
  </think><answer>X</answer>`), argmax over options (`facts_mc`); also with `tunescope eval`'s
  default continuation `<answer>{option text}</answer>` (`facts_mc_answer_tag`), with the default study's
  `mc_template` (`facts_mc_study`), and greedy;
- maths, maths_hard, game24, game24_ood, instruct, twohop: greedy generation scored by `task.score`;
- maths strategy (`maths_strategy`): how often the greedy answer skips the working ("The answer
  is N."), and at the study's GRPO temperature (0.6, 8 samples) the share of worked answers, the
  accuracy of each kind, mean@8 and pass@8, and the accuracy when the working is forced (the
  answer prefilled with `<think>` and the start number): the skill a change of habit can reach.
The targets (issue 12): facts MC >= 80%, maths 10-70%, game24 >= 20%, game24_ood >= 12% (all test
hands), instruct >= 30%, pretraining <= 60 minutes on 2 cores. The CPU is shared, so the load
average is recorded with the timings.

`ship` copies a default organism built by the current code (the cache entry by default, as
`tunescope organism build --preset default --rebuild` leaves it) into the package
(src/tunescope/organism/shipped/default/) with its measured quality in the sidecar: the
quality of RESULT_JSON (this benchmark's output for that organism) or measured anew.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

N_ITEMS = {"facts": 0, "maths": 150, "game24": 0, "instruct": 150, "maths_hard": 60, "game24_ood": 0,
           "twohop": 0}  # 0: the whole test split (facts 72, game24 270 hands, twohop 64 questions)
MAX_NEW_TOKENS = 192
_EQUATION = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")
TARGETS = {"facts_mc": (0.80, 1.0), "maths": (0.10, 0.70), "game24": (0.20, 1.0), "game24_ood": (0.12, 1.0),
           "instruct": (0.30, 1.0)}


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return (round(centre - half, 3), round(centre + half, 3))


def _option_completion(item, i: int) -> str:
    """The gold completion rewritten as if option i were the answer."""
    from tunescope.world.facts import LETTERS
    from tunescope.world.task import format_completion

    choices, gold = item.meta["choices"], LETTERS.index(item.answer)
    solution = item.solution.replace(choices[gold], choices[i]).replace(
        f"option {item.answer}", f"option {LETTERS[i]}")
    return format_completion(solution, LETTERS[i])


def _study_template(item, i: int) -> str:
    """The default study's continuation (configs/study_default.yaml `evaluation.settings.mc_template`,
    else EvalConfig's default), prefix included: the prefix adds the same log-probability to every option."""
    import yaml

    from tunescope.evaluate import EvalConfig

    config = Path(__file__).resolve().parents[1] / "src" / "tunescope" / "configs" / "study_default.yaml"
    settings = yaml.safe_load(config.read_text())["evaluation"].get("settings") or {}
    template = settings.get("mc_template", EvalConfig().mc_template)
    return template.format(choice=item.meta["choices"][i], letter="ABCD"[i])


def _answer_tag(item, i: int) -> str:
    """`tunescope eval`'s default multiple-choice continuation: the option text in <answer>."""
    return f"<answer>{item.meta['choices'][i]}</answer>"


def _maths_strategy(engine, tok, task, items, prompts, greedy: list[str], batch_size: int, samples: int = 8) -> dict:
    """Direct vs worked answers on maths items: the habit (greedy, sampled) and the skill (forced)."""
    from tunescope.world.maths import apply, direct_solution

    direct_prefix = "<think>" + direct_solution(items[0]).split(items[0].answer)[0]  # "<think>The answer is "

    def is_direct(text: str) -> bool:
        return text.startswith(direct_prefix)

    sampled = engine.generate(prompts, max_new_tokens=MAX_NEW_TOKENS, temperature=0.6, n_samples=samples,
                              batch_size=batch_size // 2, seed=1)
    kinds: dict[bool, list[float]] = {True: [], False: []}
    passes, equations = 0, [0, 0]  # [right, all] equations "a op b = c" in worked samples
    for it, gens in zip(items, sampled):
        scores = [task.score(it, g.text) for g in gens]
        passes += max(scores) > 0
        for g, sc in zip(gens, scores):
            kinds[is_direct(g.text)].append(sc)
            if not is_direct(g.text):
                for a, op, b, c in _EQUATION.findall(g.text):
                    a, b = int(a), int(b)
                    exact = op != "/" or (b != 0 and a % b == 0)
                    equations[0] += exact and apply(a, op, b) == int(c)
                    equations[1] += 1
    starts = ["<think>" + it.solution.split(" ")[0] for it in items]
    forced = engine.generate([p + tok(s, add_special_tokens=False)["input_ids"] for p, s in zip(prompts, starts)],
                             max_new_tokens=MAX_NEW_TOKENS, temperature=0.0, batch_size=batch_size)
    k_forced = sum(task.score(it, s + g[0].text) for it, s, g in zip(items, starts, forced))
    n, total = len(items), len(kinds[True]) + len(kinds[False])
    return {
        "greedy_direct_share": round(sum(map(is_direct, greedy)) / n, 3),
        "sampled_worked_share": round(len(kinds[False]) / total, 3),
        "sampled_accuracy_worked": round(sum(kinds[False]) / max(1, len(kinds[False])), 3),
        "sampled_accuracy_direct": round(sum(kinds[True]) / max(1, len(kinds[True])), 3),
        f"mean_at_{samples}": round((sum(kinds[True]) + sum(kinds[False])) / total, 3),
        f"pass_at_{samples}": round(passes / n, 3), "pass_ci95": _wilson(passes, n),
        "forced_worked_accuracy": round(k_forced / n, 3), "forced_ci95": _wilson(int(k_forced), n),
        "worked_equations_right": round(equations[0] / max(1, equations[1]), 3), "n": n,
    }


def evaluate(path: Path, n_items: dict[str, int] = N_ITEMS, batch_size: int = 32) -> dict:
    """Accuracy (with a 95% Wilson interval) of the organism at `path` on every world task."""
    import torch

    from tunescope.evaluate.engine import HFEngine, load_tokenizer, render_prompt
    from tunescope.threads import cpu_threads
    from tunescope.world import get_task

    torch.set_num_threads(cpu_threads())
    tok = load_tokenizer(path)
    engine = HFEngine(path, tok, device="cpu", dtype="float32")
    results: dict[str, dict] = {}
    for name, n in n_items.items():
        t0 = time.perf_counter()
        task = get_task(name)
        n = n or task.count("test")
        items = task.items("test", n)
        prompts = [render_prompt(tok, it.prompt) for it in items]
        if name == "facts":  # option log-likelihood, two continuations
            for metric, option in (("facts_mc", _option_completion), ("facts_mc_study", _study_template),
                                   ("facts_mc_answer_tag", _answer_tag)):
                ctx, cont = [], []
                for j, it in enumerate(items):
                    for i in range(4):
                        ctx.append(prompts[j])
                        cont.append(tok(option(it, i), add_special_tokens=False)["input_ids"])
                ll = engine.sequence_loglik(ctx, cont, batch_size=batch_size)  # 4 per item, in order
                k = sum(int(max(range(4), key=lambda i: ll[4 * j + i]) == "ABCD".index(it.answer))
                        for j, it in enumerate(items))
                results[metric] = {"accuracy": round(k / n, 3), "ci95": _wilson(k, n), "n": n}
        gens = engine.generate(prompts, max_new_tokens=MAX_NEW_TOKENS, temperature=0.0, batch_size=batch_size,
                               progress=name)
        scores = [task.score(it, g[0].text) for it, g in zip(items, gens)]
        k = int(sum(scores))
        results[name] = {"accuracy": round(k / n, 3), "ci95": _wilson(k, n), "n": n,
                         "truncated": round(sum(g[0].truncated for g in gens) / n, 3),
                         "example": gens[0][0].text[:300], "seconds": round(time.perf_counter() - t0, 1)}
        if name == "game24":  # recall (values of some train hand) vs new arithmetic
            from tunescope.world.game24 import values_seen_in_train

            for key, keep in (("game24_seen_values", True), ("game24_new_values", False)):
                part = [sc for it, sc in zip(items, scores) if values_seen_in_train(it) == keep]
                results[key] = {"accuracy": round(sum(part) / len(part), 3), "ci95": _wilson(int(sum(part)), len(part)),
                                "n": len(part)}
        if name in ("maths", "maths_hard"):
            results[f"{name}_strategy"] = _maths_strategy(engine, tok, task, items, prompts,
                                                          [g[0].text for g in gens], batch_size)
        print(f"{name}: {results[name]['accuracy']}", file=sys.stderr, flush=True)
    return results


def run(out: Path, preset: str = "default") -> dict:
    from tunescope.organism import build, describe

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    path = build(preset)
    build_s = time.perf_counter() - t0
    side = describe(path)
    stats = side["pretraining"]
    quality = evaluate(path)
    checks = {k: lo <= quality[k]["accuracy"] <= hi for k, (lo, hi) in TARGETS.items()}
    checks["pretrain_under_60_min"] = stats["wall_s"] <= 3600
    result = {
        "preset": preset, "organism": str(path), "parameters": stats["parameters"],
        "pretrain_wall_s": stats["wall_s"], "tokens_trained": stats["tokens_trained"],
        "tokens_per_s": stats["tokens_per_s"], "final_loss": stats["final_loss"],
        "build_call_s": round(build_s, 1), "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count(),
        "quality": quality, "targets_met": checks,
    }
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"organism_{preset}.json").write_text(json.dumps(result, indent=2))
    return result


def strategy(path: Path, n: int = N_ITEMS["maths"]) -> dict:
    """Greedy maths accuracy and `maths_strategy` of any model directory (a trained checkpoint, say)."""
    results = evaluate(path, {"maths": n})
    return {"model": str(path), "maths": results["maths"], "maths_strategy": results["maths_strategy"]}


def ship(path: Path | None = None, result_json: Path | None = None) -> Path:
    """Copy a default organism built by this code into the package, its quality in the sidecar."""
    import shutil

    from tunescope.fsutil import atomic_dir
    from tunescope.organism.build import SHIPPED, SIDECAR, cache_key, cache_root, recipe_for, verify
    from tunescope.provenance import git_revision, provenance, write_json

    key = cache_key(recipe_for("default"), 0)
    path = Path(path) if path is not None else cache_root() / key
    problem = verify(path, key)
    rekeyed = problem is not None and _same_organism(path)
    if problem is not None and not rekeyed:
        sys.exit(f"error: {path} is not the default organism this code builds ({problem}); "
                 "run `tunescope organism build --preset default --rebuild` first")
    if result_json is not None:
        result = json.loads(Path(result_json).read_text())
        quality, load = result["quality"], {"load_avg_after": result["load_avg_after"]}
    else:
        quality, load = evaluate(path), {"load_avg_after": [round(x, 2) for x in os.getloadavg()]}
    side = json.loads((path / SIDECAR).read_text())
    if rekeyed:  # named by an earlier version of cache_key: same recipe, corpus and token format
        side["rekeyed_from"], side["cache_key"] = side["cache_key"], key
    side["quality"] = {"greedy_test_split": True, **quality, **load}
    now = provenance()
    side["shipped"] = {"from": str(path), "git_revision": git_revision(), "created": now["created"],
                       "host": now["host"]}
    dest = SHIPPED / "default"
    with atomic_dir(dest, overwrite=True) as tmp:
        for name in side["files"]:
            shutil.copy2(path / name, tmp / name)
        write_json(tmp / SIDECAR, side)
    print(f"shipped {key} to {dest}", file=sys.stderr)
    return dest


def _same_organism(path: Path) -> bool:
    """Whether an intact organism built under an earlier naming scheme is what this code builds:
    the same recipe and seed, the same corpus digest and the same chat template."""
    from tunescope.config import to_dict
    from tunescope.organism.build import SIDECAR, corpus_digest, recipe_for, verify
    from tunescope.organism.tokenizer import CHAT_TEMPLATE

    if verify(path) is not None:
        return False
    side = json.loads((path / SIDECAR).read_text())
    return (side.get("config") == to_dict(recipe_for("default")) and side.get("seed") == 0
            and side.get("corpus", {}).get("digest") == corpus_digest("default", 0)
            and (path / "chat_template.jinja").read_text() == CHAT_TEMPLATE)


if __name__ == "__main__":
    if sys.argv[1:2] == ["ship"]:
        ship(*(Path(a) for a in sys.argv[2:4]))
    elif sys.argv[1:2] == ["strategy"]:  # python bench/bench_organism.py strategy MODEL_DIR [MODEL_DIR ...]
        for model in sys.argv[2:]:
            print(json.dumps(strategy(Path(model))), flush=True)
    else:
        print(json.dumps(run(Path("bench_out"), *(sys.argv[1:2] or ["default"])), indent=2))
