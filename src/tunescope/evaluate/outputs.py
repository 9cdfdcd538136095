"""The sweep's output directory: append per checkpoint, resume, never mix configs.

    samples.jsonl     one line per completion (or per multiple-choice pick)
    scores.csv        SCORE_COLUMNS, one row per (checkpoint, suite, metric)
    distribution.csv  DIST_COLUMNS, one row per checkpoint
    representations.csv  REPR_COLUMNS, one row per (checkpoint, suite, layer)
    eval.json         resolved config, its hash, provenance, finished and failed checkpoints

A checkpoint's rows are appended only once it is fully evaluated, then it is marked done in
eval.json. On (re)open, rows of checkpoints not marked done (a crash between the two writes) are
dropped, so a rerun never duplicates them.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from tunescope.checkpoints import ModelRef
from tunescope.config import config_hash, to_dict
from tunescope.errors import UserError
from tunescope.fsutil import whole_lines
from tunescope.provenance import provenance, write_json

SCORE_COLUMNS = ["model", "path", "method", "step", "fraction", "suite", "metric", "value", "ci_low", "ci_high", "n"]
DIST_COLUMNS = ["model", "path", "step", "fraction", "reference", "kl", "kl_ci_low", "kl_ci_high",
                "mean_length", "mean_entropy", "n_tokens", "kl_item_sums", "kl_item_tokens",
                "fkl", "fkl_ci_low", "fkl_ci_high", "fkl_item_sums", "fkl_item_tokens"]

REPR_COLUMNS = ["model", "path", "step", "fraction", "suite", "layer", "cka", "n_items"]


def key(m: ModelRef) -> str:
    return str(Path(m.path).resolve())


def open_out(out: Path, cfg: Any, suites: list[str], reference: Path | None) -> dict[str, Any]:
    """Load or start eval.json; refuse to mix configs; drop rows of checkpoints that did not finish."""
    from tunescope.fsutil import check_writable_parent

    check_writable_parent(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"config": to_dict(cfg), "suites": suites, "reference": str(reference) if reference else None}
    digest = config_hash(settings)
    state: dict[str, Any] = {"config_hash": digest, **settings, "done": [], "failed": {}}
    f = out / "eval.json"
    if f.exists():
        try:
            old = json.loads(f.read_text())
        except json.JSONDecodeError:
            raise UserError(f"{f} is not valid JSON; delete {out} or choose another --out") from None
        if old.get("config_hash") != digest:
            raise UserError(f"{out} holds results of a different evaluation config; choose another --out or delete it")
        state["done"] = list(old.get("done", []))
    elif any(out.iterdir()):
        raise UserError(f"output directory {out} is not empty and has no eval.json; choose another --out")
    done = {str(p) for p in state["done"]}
    for name in ("scores.csv", "distribution.csv", "representations.csv"):
        if (out / name).exists():
            if not (lines := whole_lines(out / name)):  # killed while writing the header
                (out / name).unlink()
                continue
            df = pd.read_csv(io.StringIO("\n".join(lines)))
            df[df["path"].map(lambda p: str(Path(p).resolve()) in done)].to_csv(out / name, index=False)
    if (out / "samples.jsonl").exists():
        keep = [line for line in whole_lines(out / "samples.jsonl")
                if str(Path(json.loads(line)["path"]).resolve()) in done]
        (out / "samples.jsonl").write_text("".join(line + "\n" for line in keep))
    write_state(out, state)
    return state


def write_state(out: Path, state: dict[str, Any]) -> None:
    write_json(out / "eval.json", provenance(config=state["config"], seed=state["config"]["seed"], **{
        k: v for k, v in state.items() if k != "config"}))


def append(out: Path, samples: list[dict[str, Any]], scores: list[dict[str, Any]],
           dist: dict[str, Any] | None, reps: list[dict[str, Any]] | None = None) -> None:
    """Append one checkpoint's rows (dist None: no distribution row, e.g. lm-eval only)."""
    with open(out / "samples.jsonl", "a") as fh:
        for rec in samples:
            fh.write(json.dumps(rec, default=str) + "\n")
    for name, rows, cols in (("scores.csv", scores, SCORE_COLUMNS), ("distribution.csv", [dist], DIST_COLUMNS),
                             ("representations.csv", reps or [], REPR_COLUMNS)):
        if not rows or rows == [None]:
            continue
        f = out / name
        if f.exists() and pd.read_csv(f, nrows=0).columns.tolist() != cols:  # written by an older version
            pd.read_csv(f).reindex(columns=cols).to_csv(f, index=False)
        pd.DataFrame(rows, columns=cols).to_csv(f, mode="a", header=not f.exists(), index=False)


def item_scores(dirs: Iterable[Path]) -> dict[tuple[str, str], pd.Series]:
    """Per-item scores of every model in these evaluation directories, by (model path, suite): the
    mean over an item's samples, indexed by item id. A choice suite's score is its likelihood pick
    when it has one (the study's multiple-choice metric)."""
    rows = []
    for d in dirs:
        f = Path(d) / "samples.jsonl"
        if f.is_file():
            rows += [{k: r.get(k) for k in ("path", "suite", "item_id", "score", "mode")}
                     for r in map(json.loads, whole_lines(f))]
    df = pd.DataFrame(rows, columns=["path", "suite", "item_id", "score", "mode"])
    by = {}
    for key_, g in df.groupby(["path", "suite"]):
        ll = g["mode"] == "loglik"
        by[key_] = (g[ll] if ll.any() else g).groupby("item_id")["score"].mean()
    return by
