"""Figures for the report, each a function from tables to a base64 PNG (matplotlib, Agg backend).

Conventions across figures: one colour per run, SFT dashed, RLOO dash-dotted, GRPO and DPO solid,
the base model grey, interval bands at 95%. Functions return None when their table is missing, so that a study without,
say, interventions still renders.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

from tunescope.report.tables import MODULES, accuracy  # noqa: E402
from tunescope.train.config import METHODS  # noqa: E402

STYLE = {"sft": "--", "rloo": "-.", "intervention": ":", "base": "-"}  # any other kind (GRPO, DPO, imported): solid
TRAINED = METHODS  # the kinds of run trained in the study, drawn against training progress


def png(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)  # every figure uses constrained layout (no tight bbox: 2x slower)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _colours(runs: list[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10")
    return {r: cmap(i % 10) for i, r in enumerate(runs)}


def _grid(n: int, ncols: int = 4, w: float = 3.4, h: float = 2.6):
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols, h * nrows), squeeze=False, layout="constrained")
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def accuracy_vs_progress(scores: pd.DataFrame) -> str | None:
    a = accuracy(scores)
    a = a[a["kind"].isin(TRAINED)]
    if a.empty:
        return None
    base = accuracy(scores)
    base = base[base["run"] == "base"]
    suites = list(dict.fromkeys(a["suite"]))
    runs = list(dict.fromkeys(a["run"]))
    col = _colours(runs)
    fig, axes = _grid(len(suites))
    for ax, suite in zip(axes, suites):
        for run in runs:
            g = a[(a["run"] == run) & (a["suite"] == suite)]
            if g.empty:
                continue
            m = g.groupby("fraction").agg(v=("value", "mean"), lo=("ci_low", "mean"), hi=("ci_high", "mean"),
                                          smin=("value", "min"), smax=("value", "max"), k=("value", "size"))
            ax.plot(m.index, m["v"], STYLE.get(g["kind"].iloc[0], "-"), color=col[run], label=g["label"].iloc[0],
                    marker=".", ms=3)
            ax.fill_between(m.index, m["lo"], m["hi"], color=col[run], alpha=0.12, lw=0)
            if g["seed"].nunique() > 1:  # spread across seeds beside the per-item interval
                ax.vlines(m.index, m["smin"], m["smax"], color=col[run], lw=2, alpha=0.5)
        b = base[base["suite"] == suite]
        if len(b):
            ax.axhline(float(b["value"].iloc[0]), color="grey", lw=1, ls=":", label="base")
        ax.set_title(suite, fontsize=9)
        ax.set_xlabel("fraction of training", fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("accuracy", fontsize=8)
    return _with_legend_below(fig, axes[0])


def _with_legend_below(fig: Any, ax: Any) -> str:
    """One legend for a row of panels, from the first panel's lines, under the figure; the PNG."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 4), fontsize=7)
    return png(fig)


def tradeoff(table: pd.DataFrame) -> str | None:
    if table is None or table.empty:
        return None
    runs = list(dict.fromkeys(table["run"]))
    col = _colours(runs)
    fig, ax = plt.subplots(figsize=(5.5, 4.2), layout="constrained")
    for run in runs:
        g = table[table["run"] == run].groupby("fraction")[["id", "ood"]].mean()
        ax.plot(g["id"], g["ood"], STYLE.get(table.loc[table["run"] == run, "method"].iloc[0], "-"), color=col[run],
                marker="o", ms=3, label=table.loc[table["run"] == run, "label"].iloc[0])
        ax.annotate("", xy=(g["id"].iloc[-1], g["ood"].iloc[-1]), xytext=(g["id"].iloc[0], g["ood"].iloc[0]),
                    arrowprops={"arrowstyle": "->", "color": col[run], "alpha": 0.4})
    ax.set_xlabel("in-domain accuracy (training suite)")
    ax.set_ylabel("out-of-domain accuracy (other suites)")
    ax.legend(fontsize=7)
    return png(fig)


def kl_and_length(dist: pd.DataFrame) -> str | None:
    if dist is None or dist.empty:
        return None
    d = dist[dist["kind"].isin(TRAINED)]
    if d.empty:
        return None
    runs = list(dict.fromkeys(d["run"]))
    col = _colours(runs)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    for run in runs:
        cols = [c for c in ("kl", "kl_ci_low", "kl_ci_high", "fkl", "mean_length") if c in d]
        g = d[d["run"] == run].groupby("fraction")[cols].mean()
        style = STYLE.get(d.loc[d["run"] == run, "kind"].iloc[0], "-")
        lab = d.loc[d["run"] == run, "label"].iloc[0]
        a1.plot(g.index, g["kl"], style, color=col[run], marker=".", label=lab)
        a1.fill_between(g.index, g["kl_ci_low"], g["kl_ci_high"], color=col[run], alpha=0.12, lw=0)
        if "fkl" in g and g["fkl"].notna().any():  # along samples of the base: hollow markers, thin line
            a1.plot(g.index, g["fkl"], style, color=col[run], marker="o", mfc="none", ms=3, lw=0.6)
        a2.plot(g.index, g["mean_length"], style, color=col[run], marker=".", label=lab)
    a1.set(xlabel="fraction of training", ylabel="KL(base || checkpoint) per token")
    a1.set_title("dots: along gold solutions; circles: along samples of the base (RL's Razor)", fontsize=8)
    a2.set(xlabel="fraction of training", ylabel="mean completion length (tokens)")
    a1.legend(fontsize=7)
    return png(fig)


def forgetting(pts: pd.DataFrame | None, fit: pd.DataFrame | None) -> str | None:
    """OOD drop against each forgetting predictor, one point per checkpoint, with the fitted line and R^2."""
    from tunescope.report.forgetting import PREDICTORS

    if pts is None or fit is None:
        return None
    fit = fit.set_index("predictor")
    cols = [c for c in PREDICTORS if c in fit.index and fit.loc[c, "points"] > 0]
    if not cols:
        return None
    runs = list(dict.fromkeys(pts["run"]))
    col = _colours(runs)
    fig, axes = _grid(len(cols), ncols=3, w=4.2, h=3.4)
    for ax, c in zip(axes, cols):
        for run in runs:
            g = pts[pts["run"] == run].dropna(subset=[c, "ood_drop"])
            ax.scatter(g[c], g["ood_drop"], s=10, color=col[run], label=g["label"].iloc[0] if len(g) else run)
        f = fit.loc[c]
        if np.isfinite(f["r2"]):
            x = np.linspace(0, float(pts[c].max()), 20)
            ax.plot(x, f["intercept"] + f["slope"] * x, color="black", lw=1)
            ax.set_title(f"R² {f['r2']:.2f} [{f['r2_ci_low']:.2f}, {f['r2_ci_high']:.2f}], {int(f['points'])} checkpoints",
                         fontsize=8)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set(xlabel=PREDICTORS[c], ylabel="OOD drop from the base")
    axes[0].legend(fontsize=6)
    return png(fig)


def representation_drift(drift: pd.DataFrame | None) -> str | None:
    """1 - CKA to the base at the last checkpoint: one panel per suite, runs x layers."""
    if drift is None or drift.empty:
        return None
    suites = list(dict.fromkeys(drift["suite"]))
    labels = list(dict.fromkeys(drift["label"]))
    fig, axes = _grid(len(suites), ncols=3, w=4.0, h=0.5 + 0.28 * len(labels))
    top = float(drift["drift"].max()) or 1.0
    for ax, suite in zip(axes, suites):
        g = drift[drift["suite"] == suite].pivot_table(index="label", columns="layer", values="drift", sort=False)
        g = g.reindex(index=[lab for lab in labels if lab in g.index])
        im = ax.imshow(g.to_numpy(float), aspect="auto", cmap="magma", vmin=0, vmax=top)
        ax.set_yticks(range(len(g.index)), g.index, fontsize=6)
        # hidden_states index j: the embeddings (0), then block j-1's output, the last one after the final norm
        ax.set_xticks(range(len(g.columns)), ["emb" if c == 0 else str(c - 1) for c in g.columns], fontsize=6)
        ax.set_title(suite, fontsize=8)
        ax.set_xlabel("after block (the weight heatmaps' layer)", fontsize=7)
    cb = fig.colorbar(im, ax=axes, fraction=0.03)
    cb.ax.tick_params(labelsize=6)
    cb.set_label("1 - linear CKA to the base", fontsize=7)
    return png(fig)


def heatmaps(heat: pd.DataFrame) -> str | None:
    if heat is None or heat.empty:
        return None
    heat = heat[heat["module"].isin(MODULES)]
    runs = list(dict.fromkeys(heat["run"]))
    fig, axes = _grid(len(runs), ncols=4, w=3.0, h=3.0)
    for ax, run in zip(axes, runs):
        g = heat[heat["run"] == run].groupby(["layer", "module"])["rel_change"].mean().unstack("module")
        g = g.reindex(columns=[m for m in MODULES if m in g.columns])
        im = ax.imshow(g.to_numpy(float), aspect="auto", cmap="viridis", origin="lower")
        ax.set_xticks(range(len(g.columns)), g.columns, fontsize=7)
        ax.set_yticks(range(len(g.index)), [str(i) for i in g.index], fontsize=6)
        ax.set_title(heat.loc[heat["run"] == run, "label"].iloc[0], fontsize=8)
        ax.set_ylabel("layer", fontsize=7)
        cb = fig.colorbar(im, ax=ax, fraction=0.046)
        cb.ax.tick_params(labelsize=6)
    return png(fig)


def trajectories(traj: pd.DataFrame) -> str | None:
    if traj is None or traj.empty:
        return None
    runs = list(dict.fromkeys(traj["run"]))
    col = _colours(runs)
    mods = [m for m in (*MODULES, "all") if m in set(traj["module"])]
    fig, axes = _grid(len(mods), ncols=4, w=3.2, h=2.5)
    for ax, mod in zip(axes, mods):
        for run in runs:
            g = traj[(traj["run"] == run) & (traj["module"] == mod)].groupby("fraction")["mean_rel_change"].mean()
            g = g[(g.index > 0) & (g > 0)]  # log axes: step 0 and exact zeros (e.g. a warm-up step) left out
            if g.empty:
                continue
            kind = traj.loc[traj["run"] == run, "kind"].iloc[0]
            ax.plot(g.index, g.to_numpy(), STYLE.get(kind, "-"), color=col[run], marker=".", ms=3,
                    label=traj.loc[traj["run"] == run, "label"].iloc[0])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.set_title("layer mean" if mod == "all" else mod, fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("relative change", fontsize=8)
    return _with_legend_below(fig, axes[0])


def ranking(rank: pd.DataFrame) -> str | None:
    if rank is None or rank.empty:
        return None
    runs = list(dict.fromkeys(rank["run"]))
    col = _colours(runs)
    fig, ax = plt.subplots(figsize=(8, 3.4), layout="constrained")
    width = 0.8 / len(runs)
    for i, run in enumerate(runs):
        g = rank[rank["run"] == run].set_index("module").reindex(MODULES)
        ax.bar(np.arange(len(MODULES)) + i * width, g["mean_rel_change"], width, color=col[run],
               label=rank.loc[rank["run"] == run, "label"].iloc[0])
    ax.set_xticks(np.arange(len(MODULES)) + 0.4 - width / 2, MODULES)
    ax.set_yscale("log")
    ax.set_ylabel("final relative change (layer mean)")
    fig.legend(fontsize=7, ncol=1, loc="outside right upper")
    return png(fig)


def spectra(sigma: pd.DataFrame | None, angles: pd.DataFrame | None) -> str | None:
    if sigma is None or sigma.empty:
        return None
    specs = list(dict.fromkeys(sigma["spectrum"]))
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
    col = _colours(specs)
    for s in specs:
        g = sigma[sigma["spectrum"] == s]
        a1.plot(g["band"], g["mean_abs_rel_sigma_change"], marker="o", color=col[s], label=s)
        a2.plot(g["band"], g["u_angle_deg"], marker="o", color=col[s], label=f"{s} (U)")
        a2.plot(g["band"], g["v_angle_deg"], marker="x", ls="--", color=col[s], label=f"{s} (V)")
        if angles is not None and not angles.empty:
            h = angles[angles["spectrum"] == s]
            if not h.empty:
                row = h.iloc[(h["k_frac"] - 0.1).abs().argmin()]
                i = specs.index(s)
                a3.bar(np.arange(3) + i * 0.8 / len(specs), [row["head_u"], row["bulk_u"], row["tail_u"]],
                       0.8 / len(specs), color=col[s], label=s)
    a3.set_xticks(np.arange(3) + 0.4 - 0.4 / len(specs), ["head", "bulk", "tail"])
    a1.set(ylabel="mean |Δσ/σ|", xlabel="rank band", yscale="log")
    a2.set(ylabel="angle of matched singular vector (deg)", xlabel="rank band")
    a3.set(ylabel="principal angle, k = 10% of rank (deg)")
    a3.legend(fontsize=6)
    a1.legend(fontsize=7)
    a2.legend(fontsize=6)
    return png(fig)


def ood_curve(curve: pd.DataFrame | None, rec: pd.DataFrame | None) -> str | None:
    if curve is None or curve.empty:
        return None
    runs = list(dict.fromkeys(curve["run"]))
    fig, axes = _grid(len(runs), ncols=2, w=6.0, h=3.8)
    for ax, run in zip(axes, runs):
        c = curve[curve["run"] == run]
        for key, colour, lab in (("id", "tab:blue", "in-distribution"), ("ood", "tab:red", "out-of-distribution")):
            ax.plot(c["step"], c[key], "--", color=colour, marker=".", label=f"SFT {lab}")
            ax.fill_between(c["step"], c[f"{key}_ci_low"], c[f"{key}_ci_high"], color=colour, alpha=0.12, lw=0)
        p = c[c["is_peak"]].iloc[0]
        ax.plot([p["step"]], [p["ood"]], "*", color="tab:red", ms=14, label=f"OOD peak (step {int(p['step'])})")
        if rec is not None and not rec.empty:
            last = c["step"].max()
            markers = iter("osD^vP")
            for _, r in rec[rec["source"] == run].iterrows():
                ax.errorbar([last], [r["ood_after"]], yerr=[[r["ood_after"] - r["ood_after_ci_low"]],
                                                           [r["ood_after_ci_high"] - r["ood_after"]]],
                            fmt=next(markers), capsize=3,
                            label=f"{r['label']}: OOD {r['ood_after']:.2f}, recovery {r['recovery']:.0%}"
                            if np.isfinite(r["recovery"]) else f"{r['label']}: OOD {r['ood_after']:.2f}")
        ax.set(xlabel="SFT step", ylabel="accuracy", title=run, ylim=(-0.02, 1.02))
        ax.legend(fontsize=6)
    return png(fig)
