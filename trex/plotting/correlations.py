"""Figures of learned rewards, written as PNG files (never shown on screen).

Figures are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas directly, so
no GUI backend is ever touched (works headless, in threads and on clusters) and pyplot's
global state is not used.

* :func:`plot_correlations`: metrics of predicted vs true return on held-out demos (Pearson,
  Spearman, partial correlation given length, fixed-window Pearson, ...) against the number
  of training demos or any other column (mean +- std over runs, every run as a dot), with
  the episode-length baseline of each metric as a horizontal line (the original project's README
  figure, made readable).
* :func:`plot_reward_predictions`: true vs predicted cumulative reward along held-out demos,
  one panel per demo, predicted rewards scaled to the true returns by one constant.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trex.common.files import atomic_path


def _new_figure(figsize: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, out: str | os.PathLike) -> Path:
    """Write ``fig`` to ``out`` as PNG, atomically."""
    out = Path(out)
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return out


#: what each metric column of rm_infos is compared with: the episode-length baseline's value
#: of that metric (its own column, or 0 by construction for the content metrics)
BASELINE_COLUMNS: dict[str, str | float] = {
    "pearson": "baseline_pearson",
    "spearman": "baseline_spearman",
    "partial": 0.0,
    "window_pearson": 0.0,
}
METRIC_LABELS: dict[str, str] = {
    "pearson": "Pearson",
    "spearman": "Spearman",
    "partial": "partial corr. given length",
    "window_pearson": "fixed-window Pearson",
    "test_acc": "test pair accuracy",
    "val_acc": "validation pair accuracy",
}
METRIC_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def correlation_summary(
    rm: pd.DataFrame, metrics: Sequence[str] = ("pearson", "spearman"), by: str = "num_dems"
) -> pd.DataFrame:
    """Per value of ``by``: runs, and mean and std over runs of each metric (std 0 for one run)."""
    g = rm.groupby(by)
    cols: dict[str, pd.Series] = {"runs": g.size()}
    for m in metrics:
        cols[f"{m}_mean"] = g[m].mean()
        cols[f"{m}_std"] = g[m].std(ddof=1).fillna(0.0)
    return pd.DataFrame(cols).reset_index()


def _group_label(by: str, value) -> str:
    if by == "num_levels" and int(value) >= 10**9:
        return "all"
    return f"{value:g}" if isinstance(value, float) else str(value)


def plot_correlations(
    rm: pd.DataFrame,
    out: str | os.PathLike,
    title: str = "",
    baseline: tuple[float, float] | Mapping[str, float] | None = None,
    metrics: Sequence[str] = ("pearson", "spearman"),
    by: str = "num_dems",
    xlabel: str | None = None,
) -> Path:
    """Metrics of learned rewards (rm_infos rows) by a grouping column (mean +- std over runs,
    every run a dot), with the episode-length baseline of each metric as a dashed line.

    ``baseline``: {metric: value} (or the old (Pearson, Spearman) pair). X positions are
    evenly spaced, labelled with the group values and run counts (num_levels >= 1e9: "all").
    """
    if isinstance(baseline, tuple):
        baseline = {"pearson": baseline[0], "spearman": baseline[1]}
    baseline = dict(baseline or {})
    summary = correlation_summary(rm, metrics, by)
    groups = summary[by].to_numpy()
    pos = {n: i for i, n in enumerate(groups)}
    fig = _new_figure((max(6.0, 1.1 * len(groups) + 3), 4.5))
    ax = fig.add_subplot(1, 1, 1)
    rng = np.random.default_rng(0)  # fixed jitter: the same CSV gives the same figure
    width = 0.12 * (len(metrics) - 1)
    for k, m in enumerate(metrics):
        color = METRIC_COLORS[k % len(METRIC_COLORS)]
        shift = -width + 2 * width * k / max(len(metrics) - 1, 1) if len(metrics) > 1 else 0.0
        name = METRIC_LABELS.get(m, m)
        x = np.array([pos[n] for n in groups]) + shift
        ax.errorbar(
            x,
            summary[f"{m}_mean"],
            yerr=summary[f"{m}_std"],
            fmt="o-",
            color=color,
            capsize=4,
            lw=1.5,
            ms=6,
            label=f"{name} (mean ± std)",
            zorder=3,
        )
        xs = np.array([pos[n] for n in rm[by]]) + shift + rng.uniform(-0.05, 0.05, len(rm))
        ax.scatter(xs, rm[m], s=12, color=color, alpha=0.45, zorder=2, label=f"{name}, one run")
        b = baseline.get(m)
        if b is not None and np.isfinite(b):
            ax.axhline(b, color=color, ls="--", lw=1.2, label=f"length baseline, {name} ({b:.2f})")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(
        [
            f"{_group_label(by, n)}\n({r} run{'s' if r != 1 else ''})"
            for n, r in zip(groups, summary["runs"])
        ]
    )
    ax.set_xlabel(
        xlabel
        or {"num_dems": "training demos", "num_levels": "levels in the training pool"}.get(by, by)
    )
    ax.set_ylabel("on held-out demos (unseen levels)")
    # the runs and the baselines' lines (coinrun's length baseline is negative) all in view
    values = np.concatenate(
        [
            rm[list(metrics)].to_numpy(dtype=float).ravel(),
            np.array([baseline.get(m, np.nan) for m in metrics], dtype=float),
        ]
    )
    lo = min(0.0, float(np.nanmin(values)) - 0.05) if np.isfinite(values).any() else 0.0
    ax.set_ylim(max(-1.05, lo), 1.05)
    ax.grid(True, axis="y", alpha=0.3)
    # below the axes: with many groups a legend inside hides runs
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, fontsize=7, framealpha=0.8)
    if title:
        ax.set_title(title)
    return save_png(fig, out)


@dataclass
class DemoPrediction:
    """One demo's true and predicted per-frame rewards, float (T,)."""

    demo_id: str
    true_rewards: np.ndarray
    pred_rewards: np.ndarray


def prediction_scale(preds: Sequence[DemoPrediction]) -> float:
    """One constant mapping predicted to true returns over all shown demos (least squares
    through the origin); 1 if the predictions are all zero."""
    t = np.array([np.sum(p.true_rewards, dtype=np.float64) for p in preds])
    q = np.array([np.sum(p.pred_rewards, dtype=np.float64) for p in preds])
    den = float(np.dot(q, q))
    return float(np.dot(t, q) / den) if den > 0 else 1.0


def plot_reward_predictions(
    preds: Sequence[DemoPrediction], out: str | os.PathLike, title: str = ""
) -> Path:
    """True vs predicted cumulative reward, one panel per demo (up to a 4-column grid);
    predicted rewards multiplied by :func:`prediction_scale`."""
    n = len(preds)
    if n == 0:
        raise ValueError("no demos to plot")
    cols = min(4, n)
    rows = math.ceil(n / cols)
    scale = prediction_scale(preds)
    fig = _new_figure((3.2 * cols, 2.4 * rows + 0.8))
    axes = fig.subplots(rows, cols, squeeze=False, sharex=False, sharey=False)
    for i, ax in enumerate(axes.ravel()):
        if i >= n:
            ax.set_visible(False)
            continue
        p = preds[i]
        ax.axhline(0, color="dimgray", lw=0.8)
        ax.plot(np.cumsum(p.true_rewards), lw=2, color="mediumseagreen", label="true")
        ax.plot(np.cumsum(p.pred_rewards) * scale, lw=2, color="salmon", label="predicted (scaled)")
        ax.set_title(f"{p.demo_id}\nreturn {np.sum(p.true_rewards):.1f}", fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=7)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", fontsize=8)
    fig.supxlabel("timestep", fontsize=9)
    fig.supylabel("cumulative reward", fontsize=9)
    fig.suptitle(
        f"{title}\npredicted x {scale:.3g}" if title else f"predicted x {scale:.3g}", fontsize=10
    )
    fig.tight_layout()
    return save_png(fig, out)
