"""The study runner: one YAML file -> every stage, cached -> DIR/report.html.

    from tunescope.study.config import load_study
    from tunescope.study.runner import run_study
    run_study(load_study(preset="smoke"), "runs/smoke")      # = tunescope run --preset smoke --out runs/smoke

`config` (StudyConfig, validation), `plan` (what it resolves to), `stages` (the hash-keyed stage
cache), `results` (what each kind of stage returns), `runner` (the stage list of a study), `cli`
(`tunescope run`). See docs/study.md.
"""
