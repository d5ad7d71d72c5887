"""Figures of learned rewards, written as PNG files (never shown on screen).

Figures are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas directly, so
no GUI backend is ever touched (works headless, in threads and on clusters) and pyplot's
global state is not used.

* :func:`plot_correlations`: Pearson and Spearman correlation of predicted with true return
  on held-out demos against the number of training demos (mean +- std over runs, every run
  as a dot), with the episode-length baseline as horizontal lines (the seed project's
  README figure, made readable).
* :func:`plot_reward_predictions`: true vs predicted cumulative reward along held-out demos,
  one panel per demo, predicted rewards scaled to the true returns by one constant.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trex.core.runs import atomic_path

PEARSON_COLOR = "tab:blue"
SPEARMAN_COLOR = "tab:orange"


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


def correlation_summary(rm: pd.DataFrame) -> pd.DataFrame:
    """Per number of demos: runs, mean and std of Pearson and Spearman (std 0 for one run)."""
    g = rm.groupby("num_dems")
    out = pd.DataFrame({
        "runs": g.size(),
        "pearson_mean": g["pearson"].mean(), "pearson_std": g["pearson"].std(ddof=1),
        "spearman_mean": g["spearman"].mean(), "spearman_std": g["spearman"].std(ddof=1),
    })
    return out.fillna({"pearson_std": 0.0, "spearman_std": 0.0}).reset_index()


def plot_correlations(rm: pd.DataFrame, out: str | os.PathLike, title: str = "",
                      baseline: tuple[float, float] | None = None) -> Path:
    """Correlation vs number of training demos, from rm_infos rows (columns num_dems,
    pearson, spearman). ``baseline`` = (Pearson, Spearman) of the episode-length baseline,
    drawn as dashed lines. X positions are evenly spaced, labelled with the demo counts."""
    summary = correlation_summary(rm)
    counts = summary["num_dems"].to_numpy()
    pos = {n: i for i, n in enumerate(counts)}
    fig = _new_figure((max(6.0, 1.1 * len(counts) + 3), 4.5))
    ax = fig.add_subplot(1, 1, 1)
    rng = np.random.default_rng(0)  # fixed jitter: the same CSV gives the same figure
    for name, color, shift in (("pearson", PEARSON_COLOR, -0.12), ("spearman", SPEARMAN_COLOR, 0.12)):
        x = np.array([pos[n] for n in counts]) + shift
        ax.errorbar(x, summary[f"{name}_mean"], yerr=summary[f"{name}_std"], fmt="o-", color=color,
                    capsize=4, lw=1.5, ms=6, label=f"{name.capitalize()} (mean ± std)", zorder=3)
        xs = np.array([pos[n] for n in rm["num_dems"]]) + shift + rng.uniform(-0.05, 0.05, len(rm))
        ax.scatter(xs, rm[name], s=12, color=color, alpha=0.45, zorder=2,
                   label=f"{name.capitalize()}, one run")
    if baseline is not None:
        bp, bs = baseline
        if np.isfinite(bp):
            ax.axhline(bp, color=PEARSON_COLOR, ls="--", lw=1.2, label=f"length baseline, Pearson ({bp:.2f})")
        if np.isfinite(bs):
            ax.axhline(bs, color=SPEARMAN_COLOR, ls="--", lw=1.2,
                       label=f"length baseline, Spearman ({bs:.2f})")
    ax.set_xticks(range(len(counts)))
    ax.set_xticklabels([f"{n}\n({r} run{'s' if r != 1 else ''})" for n, r in zip(counts, summary["runs"])])
    ax.set_xlabel("training demos")
    ax.set_ylabel("correlation with true return (held-out demos)")
    lo = min(0.0, float(np.nanmin(rm[["pearson", "spearman"]].to_numpy())) - 0.05) if len(rm) else 0.0
    ax.set_ylim(max(-1.05, lo), 1.05)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="best", fontsize=8, framealpha=0.8)
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


def plot_reward_predictions(preds: Sequence[DemoPrediction], out: str | os.PathLike,
                            title: str = "") -> Path:
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
    fig.suptitle(f"{title}\npredicted x {scale:.3g}" if title else f"predicted x {scale:.3g}", fontsize=10)
    fig.tight_layout()
    return save_png(fig, out)
