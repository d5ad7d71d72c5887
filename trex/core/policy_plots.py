"""Figure of PPO runs on different rewards: true return against environment steps.

One line per run (true reward, learned reward, constant reward, ...) from each run's
``progress.csv`` (``true_return_mean``: the game's own return, whatever the run optimised),
with the demonstrations' return range drawn as a band, so one sees whether a policy trained
on a learned reward beats its demonstrators (T-REX's claim, Brown et al. 2019, arXiv 1904.06387).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trex.core.plots import _new_figure, save_png
from trex.core.runs import UserError

TRUE_RETURN_COLUMNS = ("true_return_mean", "ep_return_mean")


@dataclass
class RunCurve:
    """A run's true return curve: timesteps int (K,), true_return float (K,)."""

    label: str
    timesteps: np.ndarray
    true_return: np.ndarray


def run_label(run_dir: Path) -> str:
    """A label from the run's config.json: which reward it was trained on."""
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        return run_dir.name
    try:
        args = json.loads(cfg_path.read_text()).get("args", {})
    except json.JSONDecodeError:
        return run_dir.name
    if args.get("rm_id") or args.get("reward_model"):
        return f"learned reward ({args.get('rm_id') or Path(args['reward_model']).stem})"
    if args.get("constant_reward") is not None:
        return f"constant reward (+{args['constant_reward']:g}/step)"
    return "true reward"


def read_curve(path: str | os.PathLike, label: str | None = None) -> RunCurve:
    """Read a run directory's (or a direct) progress.csv; UserError naming the file if unusable."""
    p = Path(path)
    csv = p / "progress.csv" if p.is_dir() else p
    if not csv.is_file():
        raise UserError(f"no progress CSV at {csv}")
    try:
        df = pd.read_csv(csv)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"{csv} is not a valid CSV ({type(err).__name__})") from None
    col = next((c for c in TRUE_RETURN_COLUMNS if c in df.columns), None)
    if col is None or "timesteps" not in df.columns:
        raise UserError(f"{csv} lacks the timesteps/true_return_mean columns of a train_policy progress CSV")
    df = df.dropna(subset=[col]).sort_values("timesteps")  # rows before any episode ended
    return RunCurve(label or run_label(csv.parent), df["timesteps"].to_numpy(), df[col].to_numpy(float))


def plot_policy_returns(curves: Sequence[RunCurve], out: str | os.PathLike,
                        demo_returns: np.ndarray | None = None, title: str = "") -> Path:
    """True return vs steps, one line per run; the demos' 10th-90th percentile return as a
    band, their median as a dotted line and their best as a dashed line. Writes a PNG."""
    fig = _new_figure((7.5, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    if demo_returns is not None and len(demo_returns):
        lo, med, hi = np.percentile(demo_returns, [10, 50, 90])
        best = float(np.max(demo_returns))
        n = len(demo_returns)
        ax.axhspan(lo, hi, color="0.85", zorder=0,
                   label=f"demos ({n}): 10th-90th percentile return {lo:.1f} to {hi:.1f}")
        ax.axhline(med, color="0.4", ls=":", lw=1.2, zorder=1, label=f"demos: median {med:.1f}")
        ax.axhline(best, color="0.4", ls="--", lw=1, zorder=1, label=f"demos: best {best:.1f}")
    for curve in curves:
        ax.plot(curve.timesteps, curve.true_return, marker="o", ms=3, lw=1.5, label=curve.label)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("true return (last 100 training episodes)")
    ax.set_title(title or "PPO on different rewards, scored by the game's true reward")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return save_png(fig, out)
