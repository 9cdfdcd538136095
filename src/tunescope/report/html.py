"""One self-contained report.html: inline CSS, figures as base64 PNG, no script, no external URL."""

from __future__ import annotations

import html
import math
from typing import Any

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
.v{font-size:11px;font-weight:600;text-transform:uppercase;margin-left:6px;color:#555}
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


def _findings(findings: list[Finding]) -> str:
    if not findings:
        return '<p class="note">No findings: the study produced no comparable data.</p>'
    out = []
    for f in findings:
        cls = f.verdict.replace(" ", "") if f.verdict else ""
        verdict = f'<span class="v">{html.escape(f.verdict)}</span>' if f.verdict else ""
        claim = f'<div class="claim">Original claim: {html.escape(f.claim)}</div>' if f.claim else ""
        out.append(f'<div class="f {cls}"><b>{html.escape(f.topic)}</b>{verdict}<br>{html.escape(f.text)}{claim}</div>')
    return "\n".join(out)


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


def render(manifest: dict[str, Any], tables: dict[str, pd.DataFrame], figs: dict[str, str | None],
           findings: list[Finding]) -> str:
    """The report page: header and findings, accuracy, weights and spectra, OOD, setup."""
    return "".join([_head(manifest, findings), _accuracy(tables.get, figs), _weights(tables.get, figs),
                    _ood(tables.get, figs), _setup(manifest, tables)])


def _head(manifest: dict[str, Any], findings: list[Finding]) -> str:
    cfg, prov = manifest["config"], manifest.get("provenance", {})
    seeds = sorted({s for r in manifest["runs"].values() for s in r["seeds"]})
    return f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>tunescope study: {html.escape(cfg['name'])}</title>
<style>{CSS}</style></head><body>
<h1>tunescope study: {html.escape(cfg['name'])}</h1>
<p class="sub">Base model: {html.escape(str(cfg['base'].get('path') or 'organism ' + str(cfg['base']['organism'])))} ·
{len(manifest['runs'])} training runs · seeds {seeds} · git {html.escape(str(prov.get('git_revision')))} ·
created {html.escape(str(prov.get('created')))}</p>
<h2>Findings</h2>
<p class="note">Computed from this study's data. Where a finding tests a claim of the original studies, the verdict
says whether this data supports it (the OOD peak by paired intervals over items; other differences count only
when 95% intervals do not overlap).</p>
{_findings(findings)}
"""


def _accuracy(t: Any, figs: dict[str, str | None]) -> str:
    return f"""<h2>Accuracy against training progress</h2>
<p class="note">Every suite; SFT dashed, GRPO solid, base dotted grey; bands are 95% bootstrap intervals over items
(vertical bars: the range across seeds, when a run has several).</p>
{figure(figs.get('accuracy'), 'accuracy vs progress')}
<h3>In-domain vs out-of-domain</h3>
<p class="note">Each point a checkpoint: accuracy on the run's training suite against the mean over the other suites
(or the run's out-of-distribution suite). Arrows run from the first checkpoint to the last.</p>
{figure(figs.get('tradeoff'), 'ID vs OOD trade-off')}
<h3>Final checkpoints</h3>
<p class="note">Accuracy [95% interval] of each run's last checkpoint, laid out like the original study's table.</p>
{table(_final_wide(t('final')))}
<h2>Compute spent per run</h2>
<p class="note">Same steps, different compute: GRPO generates its training data, SFT reads it.</p>
{table(t('compute'))}
<h2>Distribution shift</h2>
{figure(figs.get('kl'), 'KL and completion length')}
{table(_last_rows(t('distribution')), ['label', 'seed', 'step', 'kl', 'kl_ci_low', 'kl_ci_high', 'mean_length',
                                        'mean_entropy', 'n_tokens'])}
"""


def _weights(t: Any, figs: dict[str, str | None]) -> str:
    return f"""<h2>Where the weights moved</h2>
<p class="note">Relative change ‖W − W<sub>base</sub>‖<sub>F</sub> / ‖W<sub>base</sub>‖<sub>F</sub> per matrix, in
float32. Heatmaps: last checkpoint, layer × module.</p>
{figure(figs.get('heatmaps'), 'relative weight change heatmaps')}
<h3>Per-module trajectories</h3>
<p class="note">Layer mean per module against the fraction of training, log axes; SFT dashed, GRPO solid.</p>
{figure(figs.get('trajectories'), 'per-module trajectories')}
<h3>Module ranking</h3>
{figure(figs.get('ranking'), 'module ranking')}
{table(_ranking_wide(t('module_ranking')))}
<h2>Spectra: singular values or singular directions?</h2>
<p class="note">Per rank band (top 10% of singular values … bottom 10%): mean |Δσ/σ| and the angle between
index-matched singular vectors; right: mean principal angle of the head, bulk and tail subspaces (k = 10% of rank).</p>
{figure(figs.get('spectra'), 'spectra')}
{table(t('spectrum_sigma'))}
{table(t('spectrum_angles'), ['spectrum', 'k_frac', 'head_u', 'bulk_u', 'tail_u', 'head_v', 'bulk_v', 'tail_v',
                              'mean_abs_rel_sigma_change', 'energy_diag', 'energy_offdiag', 'n_matrices'])}
<h2>Freezing</h2>
<p class="note">The same SFT recipe with mid-depth MLPs frozen or with only Q/K trained: final accuracy
[95% interval].</p>
{table(_freezing_wide(t('freezing')))}
"""


def _ood(t: Any, figs: dict[str, str | None]) -> str:
    return f"""<h2>Out-of-distribution peak, RL recovery and weight surgery</h2>
<p class="note">recovery = (OOD<sub>after</sub> − OOD<sub>target</sub>) / (OOD<sub>peak</sub> − OOD<sub>target</sub>);
1 is back to the peak, 0 no change.</p>
{figure(figs.get('ood'), 'OOD peak and recovery')}
<p class="note">The peak against the start and the end of its run: mean per-item differences on the
items both checkpoints answered, with paired bootstrap 95% intervals (n_items).</p>
{table(t('ood_peak'), ['run', 'suite', 'peak_step', 'start', 'peak', 'last', 'rise', 'rise_low', 'rise_high',
                       'fall', 'fall_low', 'fall_high', 'n_items', 'id_peak', 'id_last'])}
{table(t('recovery'), ['label', 'kind', 'suite', 'ood_reference', 'ood_target', 'ood_after', 'id_after', 'recovery',
                       'recovery_low', 'recovery_high', 'interval'])}
<p class="note">Jin et al.'s RL was PPO; GRPO stands in for it here (TRL 1.16 has no PPO trainer).</p>
<h3>How the out-of-distribution answers go wrong</h3>
<p class="note">Share of each outcome per checkpoint: correct; partial (the card values, not 24);
faces_as_10 (the values J, Q and K have under the training rule, not the stated one); other
wrong_numbers; illegal (does not parse); no_solution. Intervals per share are in scores.csv.</p>
{table(t('ood_outcomes'))}
"""


def _setup(manifest: dict[str, Any], tables: dict[str, pd.DataFrame]) -> str:
    cfg, prov, t = manifest["config"], manifest.get("provenance", {}), tables.get
    total = sum(r.get("wall_s") or 0 for r in manifest["stages"].values())
    host = prov.get("host", {})
    return f"""<h2>Setup</h2>
<h3>Wall time per stage</h3>
<p class="note">Total {total:.1f} s of stage time (cached stages show the time of the run that made them).</p>
{table(t('stages'))}
<h3>Versions and hardware</h3>
{table(pd.DataFrame(list(prov.get('versions', {}).items()), columns=['package', 'version']))}
<p class="note">Host: {html.escape(str(host))}</p>
<h3>Resolved study config</h3>
<pre>{html.escape(yaml.safe_dump(cfg, sort_keys=False))}</pre>
<h3>Resolved training budgets</h3>
<pre>{html.escape(yaml.safe_dump({r: v.get('budget_resolved') for r, v in manifest['runs'].items()}, sort_keys=False))}</pre>
<h3>Tables</h3>
<p class="note">Every number above is in tables/: {', '.join(html.escape(n) + '.csv' for n in tables)}.</p>
</body></html>
"""


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
