"""One file task: a dataset file (or Hugging Face dataset) turned into a Task for training, rewards
and evaluation, with one answer judge.

A YAML spec declares a benchmark as data:

    # gsm8k.yaml: run with `tunescope eval MODEL --task-spec gsm8k.yaml` or `--suite gsm8k --data FILE`
    name: gsm8k
    source: openai/gsm8k       # a local .jsonl/.json/.csv/.parquet file, a saved dataset directory, or a hub id
    config: main               # hub dataset config (optional)
    split: test
    kind: maths                # maths (math-verify) | choice (multiple choice) | exact (string match)
    prompt: "{question}"       # the user turn; {field} is replaced by the row's field
    answer: answer             # the field with the gold answer
    answer_regex: "####\\s*(.+?)\\s*$"   # optional: the gold is this regex's group 1 in that field
    solution: answer           # optional: the field with the gold reasoning (the regex match is removed)
    id: null                   # optional: the field with a stable id (default: the row number)

Training reads the same class: `dataset=PATH` with `prompt`, `solution`, `answer` columns (renamed
with `dataset_columns`) is `training_spec(PATH, columns)`, and a study run that trains on a file of
a shipped benchmark (`runs.X.dataset` with `runs.X.task: gsm8k`) reads it with that benchmark's
spec, so GRPO is rewarded by the judge that scores it.

Multiple choice specs name a `choices` list field (MMLU: `choices`) or several fields (GPQA:
`[Correct Answer, Incorrect Answer 1, ...]`, with `shuffle: true` so that the correct one is not
always first; the shuffle is seeded by the row id). The gold `answer` may be an index, a letter or
the text of one choice; it becomes a letter. The options are appended to the prompt as "A. ...", as in the organism's facts suite.

The judge (`math_equal`, also the organism's maths judge): extraction and scoring are separate, as
in lm-evaluation-harness. The body of the last <answer> tag (or, for models that do not use the
tags, the whole completion) is parsed by math-verify, a tag body as a boxed expression so that
bare LaTeX works, and compared to the gold with `verify(gold, pred)` (gold first: it is not
symmetric); anything the verifier cannot parse or compare is wrong, never an exception.
math-verify's timeouts use SIGALRM, which only works on the main thread; elsewhere they are off.
"""

from __future__ import annotations

import json
import random
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tunescope.config import from_dict, read_yaml
from tunescope.errors import UserError
from tunescope.world.task import Item, extract_answer, follows_format

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
SPECS_DIR = Path(__file__).resolve().parent / "specs"


@dataclass
class TaskSpec:
    name: str
    source: str  # local .jsonl/.json/.csv/.parquet path (relative to the spec file) or a hub dataset id
    kind: Literal["maths", "choice", "exact"]
    prompt: str = "{question}"  # user turn; {field} placeholders are row fields
    answer: str = "answer"  # field with the gold answer
    split: str = "test"
    config: str | None = None  # hub dataset config name
    answer_regex: str | None = None  # gold = group 1 of this regex in the answer field
    solution: str | None = None  # field with gold reasoning (used for the KL analysis)
    choices: str | list[str] | None = None  # one list field, or several fields (choice kind)
    shuffle: bool = False  # shuffle choices per row (seeded by row id); for GPQA-style fields
    id: str | None = None  # field with a stable item id (default: row number)
    format_reward: float = 0.2  # RL reward 'task': correct + this for the <think>/<answer> format (maths kind)

    def __post_init__(self) -> None:
        if self.kind == "choice" and not self.choices:
            raise UserError(f"task spec '{self.name}': kind choice needs a 'choices' field")


def load_spec(path: str | Path, data: str | Path | None = None) -> TaskSpec:
    """Read a spec file; `data` replaces its source (e.g. a local copy of the benchmark)."""
    path = Path(path)
    spec = from_dict(TaskSpec, read_yaml(path))
    if data is not None:
        spec.source = str(data) if _is_hub_id(str(data)) else str(Path(data).resolve())
    elif not _is_hub_id(spec.source):
        spec.source = str((path.parent / spec.source).resolve())
    return spec


def training_spec(path: str | Path, columns: dict[str, str] | None = None) -> TaskSpec:
    """The spec of a training file with `prompt`, `solution`, `answer` (and optional `id`) columns;
    `columns` renames them, e.g. {"prompt": "problem"} for OpenR1-Math."""
    columns = columns or {}
    bad = sorted(set(columns) - {"prompt", "solution", "answer", "id"})
    if bad:
        raise UserError(f"dataset_columns: unknown field {bad[0]!r}; map prompt, solution, answer or id")
    source = str(path) if _is_hub_id(str(path)) else str(Path(path).expanduser().resolve())
    return TaskSpec(name=f"file:{Path(path).name}", source=source, kind="maths", split="train",
                    prompt="{" + columns.get("prompt", "prompt") + "}", answer=columns.get("answer", "answer"),
                    solution=columns.get("solution", "solution"), id=columns.get("id", "id"))


def shipped_specs() -> dict[str, Path]:
    """Spec files that ship with tunescope, by suite name."""
    return {p.stem: p for p in sorted(SPECS_DIR.glob("*.yaml"))}


def _is_hub_id(source: str) -> bool:
    return not Path(source).suffix and not Path(source).exists() and source.count("/") == 1


def read_rows(spec: TaskSpec) -> list[dict[str, Any]]:
    """The rows of the spec's source, as dicts."""
    src = Path(spec.source)
    if _is_hub_id(spec.source):
        try:
            import datasets

            return list(datasets.load_dataset(spec.source, spec.config, split=spec.split))
        except Exception as e:  # offline, unknown id, missing split: all user-fixable
            raise UserError(f"cannot load dataset {spec.source} (split {spec.split}): {str(e).splitlines()[0]}; "
                            "download it and pass the local file with --data") from None
    if src.is_dir():
        return _read_saved_dataset(src, spec.split)
    if not src.is_file():
        raise UserError(f"data file {src} for task '{spec.name}' does not exist; pass a JSONL file or a "
                        "dataset directory")
    try:
        if src.suffix == ".jsonl":
            rows = []
            for i, line in enumerate(src.read_text().splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        raise UserError(f"{src} line {i} is not valid JSON; fix or remove it") from None
            return rows
        if src.suffix == ".json":
            rows = json.loads(src.read_text())
            return rows if isinstance(rows, list) else rows.get(spec.split) or rows["data"]
        if src.suffix in (".parquet", ".csv"):
            import pandas as pd

            df = pd.read_parquet(src) if src.suffix == ".parquet" else pd.read_csv(src, dtype=str, keep_default_na=False)
            return df.to_dict("records")
    except (json.JSONDecodeError, KeyError, OSError, ValueError) as e:
        raise UserError(f"cannot read {src}: {e}; it must be JSON lines, a JSON list, CSV or parquet") from None
    raise UserError(f"{src}: unsupported file type '{src.suffix}'; use .jsonl, .json, .csv or .parquet")


def _read_saved_dataset(path: Path, split: str) -> list[dict[str, Any]]:
    """Rows of a Hugging Face dataset directory (`save_to_disk`): the spec's split, else 'train'."""
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as e:
        raise UserError(f"{path} is not a Hugging Face dataset directory ({e}); save it with save_to_disk "
                        f"or pass a JSONL file") from None
    if isinstance(ds, datasets.DatasetDict):
        name = split if split in ds else "train"
        if name not in ds:
            raise UserError(f"dataset {path} has splits {list(ds)} but no '{split}' or 'train' split")
        ds = ds[name]
    return [dict(r) for r in ds]


class FileTask:
    """A Task over the rows of a file (kind 'generate' for maths/exact, 'choice' for MC): the one
    class for training items, RL rewards and evaluation."""

    def __init__(self, spec: TaskSpec) -> None:
        self.spec, self.name = spec, spec.name
        self.kind: Literal["generate", "choice"] = "choice" if spec.kind == "choice" else "generate"
        self._items: list[Item] | None = None

    # ------------------------------------------------------------ items
    def count(self, split: str = "test") -> int:
        """Rows of the file (a file task has one split: what the spec's source holds)."""
        return len(self.items(split))

    def items(self, split: str = "test", n: int | None = None) -> list[Item]:
        if self._items is None:
            rows = read_rows(self.spec)
            for i, row in enumerate(rows):
                if not isinstance(row, dict):
                    raise UserError(f"{self.spec.source} row {i + 1} must be an object with named fields")
            self._items = [self._item(i, row) for i, row in enumerate(rows)]
            if not self._items:
                raise UserError(f"task '{self.name}': {self.spec.source} has no rows")
            if len({it.id for it in self._items}) != len(self._items):
                raise UserError(f"{self.spec.source}: the '{self.spec.id}' column has duplicate ids; make them "
                                "unique or drop the column")
        return self._items[:n] if n else list(self._items)

    def _item(self, i: int, row: dict[str, Any]) -> Item:
        s = self.spec
        where = f"{s.source} row {i + 1}"
        if s.answer not in row or row[s.answer] is None or not str(row[s.answer]).strip():
            raise UserError(f"{where} has no answer field '{s.answer}' (fields: {', '.join(map(str, row))}); "
                            "fix the data or the spec's 'answer'")
        try:
            prompt = s.prompt.format(**row)
        except KeyError as e:
            raise UserError(f"{where} has no field {e} used by the prompt template") from None
        if not prompt.strip():
            raise UserError(f"{where}: the prompt ({s.prompt}) is empty; fix the data or the spec's 'prompt'")
        item_id = str(row[s.id]) if s.id and row.get(s.id) is not None else str(i)
        answer, solution = str(row[s.answer]), ""
        if s.answer_regex:
            m = re.search(s.answer_regex, answer, re.MULTILINE | re.DOTALL)
            if not m:
                raise UserError(f"{where}: answer field '{s.answer}' does not match answer_regex")
            if s.solution == s.answer:
                solution = (answer[: m.start()] + answer[m.end():]).strip()
            answer = m.group(1).strip()
        if s.solution and s.solution != s.answer:
            solution = str(row.get(s.solution) or "")
        meta: dict[str, Any] = {}
        if s.kind == "choice":
            choices, answer = self._choices(row, answer, item_id, where)
            prompt += "\n\n" + "\n".join(f"{LETTERS[j]}. {c}" for j, c in enumerate(choices))
            prompt += "\nAnswer with the letter of the correct option."
            meta["choices"] = choices
        return Item(id=item_id, prompt=prompt, solution=solution, answer=answer, meta=meta)

    def _choices(self, row: dict[str, Any], answer: str, item_id: str, where: str) -> tuple[list[str], str]:
        fields = self.spec.choices
        if isinstance(fields, str):
            if not isinstance(row.get(fields), (list, tuple)) and not hasattr(row.get(fields), "tolist"):
                raise UserError(f"{where} has no list field '{fields}' for the choices")
            choices = [str(c).strip() for c in list(row[fields])]
        else:
            missing = [f for f in fields if f not in row]
            if missing:
                raise UserError(f"{where} has no choice field(s) {', '.join(missing)}")
            choices = [str(row[f]).strip() for f in fields]
        gold = _gold_index(answer.strip(), choices)
        if gold is None:
            raise UserError(f"{where}: answer {answer!r} is neither an index, a letter nor one of the choices")
        if self.spec.shuffle:
            perm = list(range(len(choices)))
            random.Random(f"{self.name}/{item_id}").shuffle(perm)
            choices, gold = [choices[p] for p in perm], perm.index(gold)
        return choices, LETTERS[gold]

    # ------------------------------------------------------------ extraction and scoring
    def extract(self, completion: str) -> str | None:
        tagged = extract_answer(completion)
        if self.spec.kind == "maths":
            if tagged is None and not (completion or "").strip():
                return None
            parsed = _parse_math(tagged if tagged is not None else completion, boxed=tagged is not None)
            return parsed[-1] if parsed else None
        if self.spec.kind == "choice":
            m = re.match(r"^\(?([A-Z])\)?(?:[.:)\s]|$)", tagged or "")
            return m.group(1) if m else None
        return tagged

    def score(self, item: Item, completion: str) -> float:
        pred = self.extract(completion)
        if pred is None:
            return 0.0
        if self.spec.kind == "maths":
            return float(math_equal(item.answer, pred))
        if self.spec.kind == "choice":
            return float(pred == item.answer)
        return float(_norm(pred) == _norm(item.answer))

    def reward(self, item: Item, completion: str) -> float:
        bonus = self.spec.format_reward if self.spec.kind == "maths" and follows_format(completion) else 0.0
        return self.score(item, completion) + bonus


def _gold_index(answer: str, choices: list[str]) -> int | None:
    if answer.isdigit() and int(answer) < len(choices):
        return int(answer)
    if len(answer) == 1 and answer.upper() in LETTERS[: len(choices)]:
        return LETTERS.index(answer.upper())
    stripped = [c.strip() for c in choices]
    return stripped.index(answer) if answer in stripped else None


def _norm(s: str) -> str:
    return " ".join(s.casefold().split()).rstrip(".")


def _timeout() -> int | None:
    """math-verify's SIGALRM timeout only works on the main thread."""
    return 5 if threading.current_thread() is threading.main_thread() else None


def _parse_math(text: str, boxed: bool) -> list[Any]:
    """math-verify parse; an answer-tag body is parsed as a boxed expression (so bare LaTeX works)."""
    from math_verify import parse

    try:
        if boxed:
            parsed = parse(f"\\boxed{{{text}}}", parsing_timeout=_timeout())
            if parsed:
                return parsed
        return parse(text, parsing_timeout=_timeout())
    except Exception:  # the verifier cannot parse model output: scored wrong, never a crash
        return []


def math_equal(gold: str, pred: str | None) -> bool:
    """The answer judge: verify(gold, pred) with math-verify, gold first (the comparison is not
    symmetric), both parsed as boxed expressions; None, unparsable or failing input is False."""
    from math_verify import verify

    if not pred:
        return False
    g, p = _parse_math(gold, boxed=True), _parse_math(pred, boxed=True)
    if not g or not p:
        return False
    try:
        return bool(verify(g, p, timeout_seconds=_timeout()))
    except Exception:
        return False

