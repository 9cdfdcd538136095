"""One self-contained report.html: inline CSS, figures as base64 PNG, no script, no external URL.

The page is the Jinja2 template templates/report.html.j2; this module prepares what it shows (tables
as HTML, figures as <img>, the scorecard and the grouped findings)."""

from __future__ import annotations

import html
import math
from typing import Any

import jinja2
import markupsafe
import pandas as pd
import yaml

from tunescope.report.findings import Finding

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:0 auto;max-width:1200px;padding:0 24px 60px;
color:#1d232a}
h1{font-size:26px;margin:28px 0 4px}h2{font-size:20px;margin:36px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:20px 0 6px}.sub{color:#666;margin:0 0 18px}
table{border-collapse:collapse;margin:8px 0 14px;font-size:12.5px}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f4f5f7}td:first-child,th:first-child{text-align:left}
img{max-width:100%;display:block;margin:8px 0}
.f{margin:6px 0;padding:6px 10px;border-left:4px solid #bbb;background:#fafafa}
.supported{border-color:#2e8540}.notsupported{border-color:#c62828}.inconclusive{border-color:#f0a500}
.v{font-size:11px;font-weight:600;text-transform:uppercase;color:#555}\n.toc{margin:10px 0 4px;font-size:13px}.toc a{color:#1f5fa8;text-decoration:none}\ntable.scorecard td{text-align:left;vertical-align:top}table.scorecard tr.supported td:nth-child(7){background:#e6f4ea}\ntable.scorecard tr.notsupported td:nth-child(7){background:#fdecea}table.scorecard tr.inconclusive td:nth-child(7){background:#fff6e0}
.claim{color:#666;font-size:12px}pre{background:#f6f8fa;padding:10px;overflow:auto;font-size:12px;max-height:420px}
.note{color:#666;font-size:12.5px}
"""


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e5):
            return f"{v:.3g}"
        return f"{v:.3f}" if abs(v) < 10 else f"{v:,.1f}"
    return html.escape(str(v))


def table(df: pd.DataFrame | None, columns: list[str] | None = None, max_rows: int = 200) -> str:
    if df is None or df.empty:
        return '<p class="note">(no data)</p>'
    if columns:
        df = df[[c for c in columns if c in df.columns]]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>"
                   for row in df.head(max_rows).itertuples(index=False))
    more = f'<p class="note">{len(df) - max_rows} more rows in the CSV.</p>' if len(df) > max_rows else ""
    return f"<table><tr>{head}</tr>{body}</table>{more}"


def figure(b64: str | None, alt: str) -> str:
    if not b64:
        return f'<p class="note">({html.escape(alt)}: no data in this study)</p>'
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


SECTIONS = [("scorecard", "Scorecard"), ("findings", "Findings"), ("accuracy", "Accuracy"), ("compute", "Compute"),
            ("distribution", "Distribution shift"), ("weights", "Weights"), ("spectra", "Spectra"),
            ("freezing", "Freezing"), ("ood", "OOD peak and recovery"), ("setup", "Setup")]


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("tunescope.report", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = lambda v: markupsafe.Markup(_fmt(float(v))) if v is not None else ""
    return env


def render(manifest: dict[str, Any], tables: dict[str, pd.DataFrame], figs: dict[str, str | None],
           findings: list[Finding]) -> str:
    """The report page (templates/report.html.j2): scorecard, findings, accuracy, weights, spectra, OOD, setup."""
    cfg, prov = manifest["config"], manifest.get("provenance", {})
    card = tables.get("scorecard")
    card_rows = [] if card is None else card.to_dict("records")
    for r in card_rows:  # counts: int, or None where a claim has no seeds to count
        for k in ("seeds", "seeds_agreeing"):
            r[k] = None if pd.isna(r[k]) else int(r[k])
    groups: dict[str, list[Finding]] = {}
    for f in findings:
        groups.setdefault(f.topic, []).append(f)
    safe = markupsafe.Markup
    return _env().get_template("report.html.j2").render(
        css=safe(CSS), cfg=cfg, git=str(prov.get("git_revision")), created=str(prov.get("created")), sections=SECTIONS, n_runs=len(manifest["runs"]),
        base=str(cfg["base"].get("path") or "organism " + str(cfg["base"]["organism"])),
        seeds=sorted({s for r in manifest["runs"].values() for s in r["seeds"]}),
        scorecard=card_rows, measures=list({r["claim"]: r for r in card_rows}.values()),
        findings=list(groups.items()),
        t=tables.get, table=lambda df, cols=None: safe(table(df, cols)),
        figure=lambda key, alt: safe(figure(figs.get(key), alt)),
        final_wide=_final_wide(tables.get("final")), items_note=_items_note(tables.get("scores")),
        last_distribution=_last_rows(tables.get("distribution")), ranking_wide=_ranking_wide(tables.get("module_ranking")),
        freezing_wide=_freezing_wide(tables.get("freezing")),
        stage_total=sum(r.get("wall_s") or 0 for r in manifest["stages"].values()),
        mixed_note=_mixed_note(tables.get("stages")),
        versions=pd.DataFrame(list(prov.get("versions", {}).items()), columns=["package", "version"]),
        host=str(prov.get("host", {})), config_yaml=yaml.safe_dump(cfg, sort_keys=False),
        budgets_yaml=yaml.safe_dump({r: v.get("budget_resolved") for r, v in manifest["runs"].items()}, sort_keys=False),
        imported=[f"{v['label']} from {v['budget_resolved'].get('imported_from')}" for v in manifest["runs"].values()
                  if v.get("imported")],
        table_names=[f"{n}.csv" for n in tables])


def _mixed_note(stages: pd.DataFrame | None) -> str:
    """A warning when the stages ran with more than one torch thread count or on more than one CPU
    model (a study resumed elsewhere, or with another TUNESCOPE_THREADS): each changes float
    summation order, so such a study is not one machine's bit-for-bit result."""
    if stages is None or stages.empty:
        return ""
    parts = []
    for col, what in (("torch_threads", "torch thread count"), ("cpu", "CPU model")):
        counts = stages[col].astype(object).where(stages[col].notna(), "not recorded").astype(str).value_counts()
        if len(counts) > 1:
            parts.append(f"{what} ({', '.join(f'{v}: {n} stage' + 's' * (n != 1) for v, n in counts.items())})")
    if not parts:
        return ""
    return ("The stages ran with more than one " + " and more than one ".join(parts) + ". Each changes the order "
            "of float sums, so rerunning a stage with the other setting may change its last digits.")


def _items_note(scores: pd.DataFrame | None) -> str:
    """Items scored per suite, at the final checkpoints and (when fewer) at the intermediate ones."""
    if scores is None or scores.empty:
        return "none"
    a = scores[scores["metric"] == "accuracy"]
    last = a["step"] == a.groupby(["run", "seed"], dropna=False)["step"].transform("max")
    parts = []
    for suite, g in a.groupby("suite", sort=False):
        final, mid = int(g.loc[last[g.index], "n"].max()), int(g.loc[~last[g.index], "n"].min()) if (~last[g.index]).any() else None
        parts.append(f"{suite} {final}" + (f" ({mid} at intermediate checkpoints)" if mid is not None and mid < final else ""))
    return ", ".join(parts)


def _last_rows(d: pd.DataFrame | None) -> pd.DataFrame | None:
    if d is None or d.empty:
        return None
    last = d[d["step"] == d.groupby(["run", "seed"], dropna=False)["step"].transform("max")]
    step = pd.Series([int(s) if s >= 0 else None for s in last["step"]], index=last.index, dtype=object)
    return last.assign(step=step)  # step -1 marks an edited model: shown blank


def _ranking_wide(rank: pd.DataFrame | None) -> pd.DataFrame | None:
    if rank is None or rank.empty:
        return None
    return rank.pivot_table(index="module", columns="label", values="mean_rel_change", sort=False).reset_index()


def _freezing_wide(f: pd.DataFrame | None) -> pd.DataFrame | None:
    if f is None or f.empty:
        return None
    cell = f.apply(lambda r: f"{r['value']:.3f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]", axis=1)
    return f.assign(cell=cell).pivot_table(index=["label", "selectors"], columns="suite", values="cell",
                                           aggfunc="first", sort=False).reset_index()


def _final_wide(final: pd.DataFrame | None) -> pd.DataFrame | None:
    """Suites as rows, runs as columns: 'value [low, high]' (and ± seed spread when several seeds)."""
    if final is None or final.empty:
        return None
    cell = final.apply(lambda r: f"{r['value']:.3f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
                       + (f" ±{r['seed_std']:.3f}" if r["seeds"] > 1 else ""), axis=1)
    wide = final.assign(cell=cell).pivot_table(index="suite", columns="label", values="cell", aggfunc="first",
                                               sort=False)
    cols = ["base"] + [c for c in dict.fromkeys(final["label"]) if c != "base"]
    return wide.reindex(columns=[c for c in cols if c in wide.columns]).reset_index()
