"""Interventions: weight surgery that restores what fine-tuning took, and the recovery it buys.

    from tunescope.intervene.restore import restore          # write an edited model directory
    from tunescope.intervene.recovery import Score, recovery  # (edited - target) / (ref - target)

`edits` holds the pure tensor -> tensor edits, `restore` streams them over a model directory,
`recovery` scores the result. See docs/intervene.md. Nothing heavy is imported here, so that
`tunescope --help` stays fast.
"""

METHODS = ("direction", "full", "values", "reset", "interpolate")
