"""Figure of PPO runs on different rewards: true return against environment steps.

One line per run (true reward, learned reward, constant reward, ...) from each run's
``progress.csv`` (``true_return_mean``: the game's own return, whatever the run optimised),
with the demonstrations' return range drawn as a band, so one sees whether a policy trained
on a learned reward beats its demonstrators (T-REX's claim, Brown et al. 2019, arXiv 1904.06387).
Optionally, each run's held-out score from ``test_policy``'s CSV (mean true return on unseen
levels, with its standard error) is drawn as a marker at its checkpoint's step, and a random
policy's score on the same levels as a line. Runs that share a label (seeds of one reward)
are drawn as one line, their mean, with their range as a band. Published reference curves
(openai/train-procgen's ``results/<mode>-<levels>-run*/progress-<game>-{train,test}.csv``,
baselines' logger format) can be drawn beside them. :func:`policy_returns_figure` is the
plot_policy_returns stage, its flags the fields of :class:`PlotPolicyReturnsConfig`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trex.common.config import Config, flag, require
from trex.common.errors import UserError
from trex.common.files import read_csv_checked
from trex.plotting.correlations import _new_figure, save_png
from trex.plotting.tables import reward_label
from trex.preferences.tags import reward_tag

log = logging.getLogger(__name__)

TRUE_RETURN_COLUMNS = ("true_return_mean", "ep_return_mean")


@dataclass
class RunCurve:
    """A run's true return curve: timesteps int (K,), true_return float (K,); with a learned
    (or constant) reward, the return of the reward it optimised, learned_return float (K,)
    (NaN where no episode had ended; None for a run on the true reward)."""

    label: str
    timesteps: np.ndarray
    true_return: np.ndarray
    learned_return: np.ndarray | None = None


@dataclass
class CurveGroup:
    """Runs drawn as one line: on the steps all of them logged, timesteps int (K,) and the
    mean, min and max of their true returns float (K,); ``runs`` is how many."""

    label: str
    timesteps: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    runs: int


def _combine(label: str, curves: Sequence[RunCurve]) -> CurveGroup:
    """Mean/min/max of several curves on the timesteps they share (UserError if none)."""
    common = curves[0].timesteps
    for c in curves[1:]:
        common = np.intersect1d(common, c.timesteps)
    if len(common) == 0:
        raise UserError(f"the {len(curves)} runs labelled {label!r} share no logged step")
    values = np.stack([c.true_return[np.searchsorted(c.timesteps, common)] for c in curves])
    return CurveGroup(label, common, values.mean(0), values.min(0), values.max(0), len(curves))


def group_curves(curves: Sequence[RunCurve]) -> list[CurveGroup]:
    """One group per distinct label, in order of first appearance (seeds of one reward)."""
    by_label: dict[str, list[RunCurve]] = {}
    for c in curves:
        by_label.setdefault(c.label, []).append(c)
    return [_combine(label, members) for label, members in by_label.items()]


BASELINES_COLUMNS = ("misc/total_timesteps", "eprewmean")


def read_reference_curves(paths: Sequence[str | os.PathLike], label: str) -> CurveGroup:
    """Published curves in baselines' logger format (train-procgen's ``progress-<game>-*.csv``:
    ``misc/total_timesteps``, ``eprewmean`` = mean return of the last 100 episodes), combined
    as one group (UserError naming a file that is not such a CSV)."""
    curves = []
    for path in paths:
        df = read_csv_checked(path, "baselines progress CSV", BASELINES_COLUMNS)
        df = df.dropna(subset=list(BASELINES_COLUMNS)).sort_values("misc/total_timesteps")
        curves.append(
            RunCurve(
                label,
                df["misc/total_timesteps"].to_numpy(np.int64),
                df["eprewmean"].to_numpy(float),
            )
        )
    return _combine(label, curves)


def _run_args(run_dir: Path) -> dict[str, Any] | None:
    """The flags in a run's config.json, or None where it has none (or an unreadable one)."""
    try:
        return json.loads((run_dir / "config.json").read_text()).get("args", {})
    except (OSError, json.JSONDecodeError):
        return None


def run_label(run_dir: Path) -> str:
    """A label from the run's config.json: which reward it was trained on."""
    args = _run_args(run_dir)
    if args is None:
        return run_dir.name
    if args.get("num_queries") is not None:  # train_preferences: labelled by its reward tag
        return reward_label(reward_tag(args))
    if args.get("rm_id") or args.get("reward_model"):
        return f"learned reward ({args.get('rm_id') or Path(args['reward_model']).stem})"
    if args.get("constant_reward") is not None:
        return f"constant reward (+{args['constant_reward']:g}/step)"
    return "true reward"


def _starts_unfitted(run_dir: Path) -> bool:
    """Whether a run is train_preferences' from a fresh reward network (no ``--init_reward``):
    its first update's learned return is the unfitted network's, collected before the first
    fit (its scale is arbitrary, often 10-100x the fitted reward's)."""
    args = _run_args(run_dir) or {}
    return args.get("num_queries") is not None and not args.get("init_reward")


def read_curve(path: str | os.PathLike, label: str | None = None) -> RunCurve:
    """Read a run directory's (or a direct) progress.csv; UserError naming the file if unusable."""
    p = Path(path)
    csv = p / "progress.csv" if p.is_dir() else p
    df = read_csv_checked(csv, "progress CSV")
    col = next((c for c in TRUE_RETURN_COLUMNS if c in df.columns), None)
    if col is None or "timesteps" not in df.columns:
        raise UserError(
            f"{csv} lacks the timesteps/true_return_mean columns of a train_policy progress CSV"
        )
    df = df.dropna(subset=[col]).sort_values("timesteps")  # rows before any episode ended
    learned = None
    if "learned_return_mean" in df.columns and df["learned_return_mean"].notna().any():
        learned = df["learned_return_mean"].to_numpy(float)
        if "updates" in df.columns and _starts_unfitted(csv.parent):
            # its first rollout ran on the network before any fit: not the reward it learned
            learned = np.where(df["updates"].to_numpy() == 1, np.nan, learned)
    return RunCurve(
        label or run_label(csv.parent), df["timesteps"].to_numpy(), df[col].to_numpy(float), learned
    )


@dataclass
class HeldOutScore:
    """One test_policy row: a checkpoint's mean true return over ``episodes`` episodes on a
    level set, with the standard error of that mean."""

    timesteps: int
    mean: float
    sem: float
    episodes: int


TEST_CSV_COLUMNS = (
    "load_path",
    "timesteps",
    "level_set",
    "env_name",
    "episodes",
    "return_mean",
    "return_std",
)


def _score(row: pd.Series) -> HeldOutScore:
    n = int(row["episodes"])
    sem = float(row["return_std"]) / np.sqrt(n - 1) if n > 1 else float("nan")  # std is ddof=0
    ts = pd.to_numeric(row["timesteps"], errors="coerce")
    return HeldOutScore(0 if pd.isna(ts) else int(ts), float(row["return_mean"]), sem, n)


def read_held_out_scores(
    test_csv: str | os.PathLike | Sequence[str | os.PathLike],
    run_paths: Sequence[str | os.PathLike],
    level_set: str = "test",
    env_name: str | None = None,
) -> tuple[list[list[HeldOutScore]], HeldOutScore | None]:
    """Scores from test_policy CSV(s) (several: their rows together): for each run (a run
    directory or its progress.csv), the rows of checkpoints inside that directory on
    ``level_set``, the latest row per checkpoint,
    sorted by step; and the latest random-policy row on those levels (of ``env_name``, or of
    the runs' game), or None."""
    paths = [test_csv] if isinstance(test_csv, (str, os.PathLike)) else list(test_csv)
    df = pd.concat(
        [read_csv_checked(p, "test_policy CSV", TEST_CSV_COLUMNS) for p in paths],
        ignore_index=True,
    )
    df = df[df["level_set"] == level_set]
    is_random = df["load_path"].astype(str) == "random"
    checkpoint_rows = df[~is_random]
    parents = checkpoint_rows["load_path"].map(lambda p: Path(str(p)).resolve().parent)
    per_run, envs = [], set()
    for run in run_paths:
        run_dir = Path(run).resolve()
        run_dir = run_dir.parent if run_dir.is_file() else run_dir
        rows = checkpoint_rows[parents == run_dir].drop_duplicates("load_path", keep="last")
        envs.update(rows["env_name"])
        per_run.append(sorted((_score(r) for _, r in rows.iterrows()), key=lambda s: s.timesteps))
    random_rows = df[is_random]
    wanted_envs = {env_name} if env_name else envs
    random_rows = random_rows[random_rows["env_name"].isin(wanted_envs)]
    random_score = _score(random_rows.iloc[-1]) if len(random_rows) else None
    return per_run, random_score


def plot_policy_returns(
    curves: Sequence[RunCurve],
    out: str | os.PathLike,
    demo_returns: np.ndarray | None = None,
    title: str = "",
    held_out: Sequence[Sequence[HeldOutScore]] | None = None,
    random_score: HeldOutScore | None = None,
    held_out_name: str = "unseen levels",
    references: Sequence[CurveGroup] = (),
    learned: bool = False,
) -> Path:
    """True return vs steps, one line per label (runs sharing a label: their mean, with their
    min-max as a band); the demos' 10th-90th percentile return as a band, their median as a
    dotted line and their best as a dashed line. ``held_out[i]`` (optional) are run i's
    test_policy scores, drawn as diamonds with standard-error bars in the run's colour;
    ``random_score`` a random policy's, as a dash-dotted line; ``references`` published curves
    in black, cut at the runs' last step. ``learned``: also each run's return of the reward
    it optimised (learned or constant), dashed in the run's colour on its own right-hand
    axis, so a learned return rising while the true return falls (reward hacking) shows at a
    glance. Writes a PNG."""
    fig = _new_figure((7.5, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    if demo_returns is not None and len(demo_returns):
        lo, med, hi = np.percentile(demo_returns, [10, 50, 90])
        best = float(np.max(demo_returns))
        n = len(demo_returns)
        ax.axhspan(
            lo,
            hi,
            color="0.85",
            zorder=0,
            label=f"demos ({n}): 10th-90th percentile return {lo:.1f} to {hi:.1f}",
        )
        ax.axhline(med, color="0.4", ls=":", lw=1.2, zorder=1, label=f"demos: median {med:.1f}")
        ax.axhline(best, color="0.4", ls="--", lw=1, zorder=1, label=f"demos: best {best:.1f}")
    if random_score is not None:
        ax.axhline(
            random_score.mean,
            color="tab:red",
            ls="-.",
            lw=1,
            zorder=1,
            label=f"random policy, {held_out_name}: {random_score.mean:.2f} "
            f"({random_score.episodes} episodes)",
        )
    groups = group_curves(curves)
    colours = {}
    for g in groups:
        label = g.label if g.runs == 1 else f"{g.label}, mean of {g.runs} runs (band: range)"
        member_scores = [
            held_out[i][-1]
            for i, c in enumerate(curves)
            if held_out is not None and c.label == g.label and held_out[i]
        ]
        if member_scores:  # the latest tested checkpoint's score of each run goes into the legend
            label += f"; {held_out_name} " + ", ".join(
                f"{s.mean:.2f} +- {s.sem:.2f}" for s in member_scores
            )
        (line,) = ax.plot(
            g.timesteps, g.mean, marker="o" if g.runs == 1 else None, ms=3, lw=1.5, label=label
        )
        colours[g.label] = line.get_color()
        if g.runs > 1:
            ax.fill_between(g.timesteps, g.low, g.high, color=line.get_color(), alpha=0.2, lw=0)
    for i, curve in enumerate(curves):
        for s in held_out[i] if held_out is not None else []:
            ax.errorbar(
                [s.timesteps],
                [s.mean],
                yerr=[s.sem],
                fmt="D",
                ms=7,
                color=colours[curve.label],
                mec="black",
                capsize=4,
                zorder=5,
            )
    if learned and any(c.learned_return is not None for c in curves):
        twin = ax.twinx()
        for curve in curves:
            if curve.learned_return is not None:
                twin.plot(
                    curve.timesteps, curve.learned_return, ls="--", lw=1.1,
                    color=colours[curve.label], alpha=0.8,
                )  # fmt: skip
        twin.set_ylabel("learned return (dashed: the reward each run optimised)")
        ax.plot([], [], ls="--", color="0.3", label="dashed: learned return (right axis)")
    last_step = max(int(g.timesteps[-1]) for g in groups)
    for ref, style in zip(references, ("--", ":", "-.")):
        keep = ref.timesteps <= last_step * 1.02
        ax.plot(
            ref.timesteps[keep],
            ref.mean[keep],
            color="black",
            ls=style,
            lw=1.3,
            label=f"{ref.label} (mean of {ref.runs} runs)",
        )
    if held_out is not None and any(held_out):
        ax.errorbar(
            [],
            [],
            yerr=[],
            fmt="D",
            ms=7,
            color="white",
            mec="black",
            capsize=4,
            label=f"{held_out_name}: test_policy mean +- s.e.",
        )
    ax.set_xlabel("environment steps")
    ax.set_ylabel("true return (lines: last 100 training episodes)")
    ax.set_title(title or "PPO on different rewards, scored by the game's true reward")
    ax.grid(alpha=0.3)
    ax.legend(
        fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2
    )  # below: never over a curve
    return save_png(fig, out)


# ----------------------------------------------------------------------------- the stage


@dataclass
class PlotPolicyReturnsConfig(Config):
    """plot_policy_returns: true return vs steps for several PPO runs (PNG)."""

    runs: list[str] = flag(
        required=True, help="train_policy run directories (or their progress.csv files)"
    )
    labels: list[str] | None = flag(None, help="one label per run (default: from config.json)")
    demo_csv: list[str] | None = flag(None, help="demo index CSV(s): draw the demos' return range")
    env_name: str | None = flag(None, help="filter the demos (default: all in the CSVs)")
    distribution_mode: str | None = flag(None, help=None)
    set_name: str = flag("train", choices=("train", "test"), help="which demos to draw")
    test_csv: list[str] | None = flag(
        None,
        help="test_policy CSV(s): mark each run's checkpoints' held-out return (and a random "
        "policy's)",
    )
    test_level_set: str = flag(
        "test",
        choices=("train", "test"),
        help="which test_policy level set to mark (test = unseen levels)",
    )
    reference_train: list[str] | None = flag(
        None,
        metavar="CSV",
        help="published curves on training levels in baselines' progress-CSV format, drawn "
        "as one mean line (e.g. openai/train-procgen's "
        "train_procgen/results/easy-200-run*/progress-coinrun-train.csv)",
    )
    reference_test: list[str] | None = flag(
        None, metavar="CSV", help="the same on unseen levels (progress-<game>-test.csv)"
    )
    reference_name: str = flag(
        "openai/train-procgen", help="who published the reference curves (legend)"
    )
    learned: bool = flag(
        False,
        help="also draw each run's learned (optimised) return, on its own axis: reward "
        "hacking shows as a learned return rising while the true return falls",
    )
    title: str = flag("", help=None)
    out: str = flag("figures/policy_returns.png", help=None)

    def check(self) -> None:
        super().check()
        self.check_flags()
        require(
            self.labels is None or len(self.labels) == len(self.runs),
            f"--labels has {len(self.labels or [])} entries for {len(self.runs or [])} runs",
        )


def policy_returns_figure(cfg: PlotPolicyReturnsConfig) -> Path:
    """The plot_policy_returns stage: read the runs' curves (leaving out, with a warning,
    runs without a finished episode), the demos' returns, the held-out scores and the
    reference curves that ``cfg`` names, and draw them (:func:`plot_policy_returns`).
    UserError when no run has finished an episode or no demo matches."""
    labels = cfg.labels or [None] * len(cfg.runs)
    kept_runs, curves = [], []
    for run, label in zip(cfg.runs, labels):
        curve = read_curve(run, label)
        if len(curve.timesteps) == 0:
            log.warning("%s: no finished episode yet, left out of the figure", run)
            continue
        kept_runs.append(run)
        curves.append(curve)
    if not curves:
        raise UserError("none of the runs has finished an episode yet")
    demo_returns = None
    if cfg.demo_csv:
        from trex.demos.store import DemoIndex

        index = DemoIndex.read(cfg.demo_csv).filter(
            env_name=cfg.env_name, mode=cfg.distribution_mode, set_name=cfg.set_name
        )
        if len(index) == 0:
            raise UserError(f"no {cfg.set_name} demos match in {', '.join(cfg.demo_csv)}")
        demo_returns = index.df["return"].to_numpy(float)
    held_out, random_score = None, None
    if cfg.test_csv:
        held_out, random_score = read_held_out_scores(
            cfg.test_csv, kept_runs, cfg.test_level_set, cfg.env_name
        )
        if not any(held_out):
            log.warning(
                "%s has no %s-level rows for checkpoints of these runs",
                cfg.test_csv,
                cfg.test_level_set,
            )
    references = [
        read_reference_curves(paths, f"{cfg.reference_name}, {levels}")
        for paths, levels in (
            (cfg.reference_train, "training levels"),
            (cfg.reference_test, "unseen levels"),
        )
        if paths
    ]
    return plot_policy_returns(
        curves,
        cfg.out,
        demo_returns,
        cfg.title,
        held_out,
        random_score,
        "unseen levels" if cfg.test_level_set == "test" else "training levels",
        references,
        cfg.learned,
    )
