"""The report: DIR/report.html and DIR/tables/*.csv, made from a study's artifacts only.

    from tunescope.report import build_report
    build_report(manifest, out)       # manifest: DIR/study.json written by the study runner

`tables` reads the artifacts into tidy tables (every number of the report; `compare` the paired
comparisons of two models), `findings` turns them into plain-language findings and verdicts on the
claims of `claims` (the scorecard), `figures` draws them (matplotlib -> base64 PNG), `html` lays out one
self-contained file. Nothing here trains or evaluates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def build_report(manifest: dict[str, Any], out: str | Path) -> Path:
    """Write out/report.html and out/tables/*.csv; return the path of report.html."""
    import os

    from tunescope.report import claims, figures, findings, html, tables

    out = Path(out)
    t = tables.collect(manifest)
    found = findings.compute(t)
    t["findings"] = findings.as_table(found)
    t["scorecard"] = claims.scorecard(found)
    figs = {
        "accuracy": figures.accuracy_vs_progress(t["scores"]) if "scores" in t else None,
        "tradeoff": figures.tradeoff(t.get("tradeoff")),
        "kl": figures.kl_and_length(t.get("distribution")),
        "forgetting": figures.forgetting(t.get("forgetting"), t.get("forgetting_fit")),
        "representations": figures.representation_drift(t.get("representation_drift")),
        "heatmaps": figures.heatmaps(t.get("weight_change_final")),
        "trajectories": figures.trajectories(t.get("module_trajectory")),
        "ranking": figures.ranking(t.get("module_ranking")),
        "spectra": figures.spectra(t.get("spectrum_sigma"), t.get("spectrum_angles")),
        "ood": figures.ood_curve(t.get("ood_curve"), t.get("recovery")),
    }
    tables.write_tables(t, out / "tables")
    page = html.render(manifest, t, figs, found)
    tmp = out / ".report.html.tmp"
    tmp.write_text(page)
    os.replace(tmp, out / "report.html")
    return out / "report.html"


__all__ = ["build_report"]
