"""Suite names -> Task objects.

A suite is either an organism task (`tunescope.world.get_task`: maths, maths_hard, game24,
game24_ood, facts, twohop, instruct) or a file task: a shipped spec (gsm8k, math500, mmlu, gpqa,
whose data comes from `--data`) or any spec file given with `--task-spec`.
"""

from __future__ import annotations

from pathlib import Path

from tunescope.errors import UserError
from tunescope.filetasks import FileTask, load_spec, shipped_specs
from tunescope.world import TASKS, get_task
from tunescope.world.task import Task


def known_suites() -> list[str]:
    """Organism tasks (the `tunescope.world.TASKS` registry), then the shipped benchmark specs."""
    return [*TASKS, *shipped_specs()]


def resolve_suites(names: list[str], task_specs: list[str | Path] | None = None,
                   data: list[str] | None = None) -> dict[str, Task]:
    """Tasks by suite name, in the given order.

    `data` entries are `PATH` (when exactly one shipped spec is named) or `SUITE=PATH`.
    """
    data_for = _parse_data(data or [], [n for n in names if n in shipped_specs()])
    tasks: dict[str, Task] = {}
    for name in names:
        if name in tasks:
            continue
        if name in shipped_specs():
            tasks[name] = FileTask(load_spec(shipped_specs()[name], data_for.get(name)))
        elif name in TASKS:
            tasks[name] = get_task(name)
        else:
            raise UserError(f"unknown suite '{name}'; known suites: {', '.join(known_suites())} "
                            "(or declare one with --task-spec FILE.yaml)")
    for path in task_specs or []:
        spec = load_spec(path)
        if spec.name in tasks:
            raise UserError(f"task spec {path} is named '{spec.name}', which is already a suite; rename it")
        tasks[spec.name] = FileTask(spec)
    if not tasks:
        raise UserError(f"no suites to evaluate; pass --suite NAME (known: {', '.join(known_suites())}) "
                        "or --task-spec FILE.yaml")
    return tasks


def _parse_data(entries: list[str], file_suites: list[str]) -> dict[str, str]:
    out = {}
    for entry in entries:
        name, sep, path = entry.partition("=")
        if sep and name in shipped_specs():
            out[name] = path
        elif len(file_suites) == 1:
            out[file_suites[0]] = entry
        else:
            raise UserError(f"--data {entry}: say which suite it is for, as SUITE=PATH "
                            f"(file suites named: {', '.join(file_suites) or 'none'})")
    return out
