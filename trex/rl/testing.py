"""Test a policy: its true return on its training levels and on unseen levels, as CSV rows.

"train" is the policy's own training pool [start_level, start_level + num_levels) from its
checkpoint (old checkpoints with num_levels 0: the whole training range [0, 1e9)); "test" is
the unseen range [1e9, 2e9). One summary row per level set goes to ``out_csv`` and one row
per episode to ``<out_csv stem>_episodes.csv`` beside it (same ``time``, ``load_path``,
``level_set`` and ``seed``: confidence intervals can be recomputed from it).

A retry of the same test (same policy, levels, episodes, seed: the same ``run_key``) skips
the level sets whose summary row is there (the commit point, written after the episodes)
and drops the episode rows a killed attempt left for the others.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from trex.common.errors import UserError
from trex.rl.config import TestPolicyConfig
from trex.rl.evaluation import ActFn

log = logging.getLogger(__name__)

#: columns of the per-episode CSV (one row per episode)
EPISODE_COLUMNS = [
    "time",
    "load_path",
    "timesteps",
    "reward",
    "env_name",
    "distribution_mode",
    "level_set",
    "start_level",
    "num_levels",
    "use_backgrounds",
    "deterministic",
    "max_steps",
    "seed",
    "episode",
    "level_seed",
    "return",
    "length",
    "truncated",
    "run_key",
]


def level_ranges(meta: dict, cfg: Any) -> dict[str, tuple[int, int]]:
    """(start_level, num_levels) per level set: "train" is the policy's own training pool
    (the checkpoint's start_level/num_levels, or ``cfg``'s when set), checked to lie inside
    the training range [0, 1e9); num_levels 0 (old checkpoints, the random policy) stands for
    the whole training range. "test" is the unseen range [1e9, 2e9)."""
    from trex.common.envs import TEST_LEVELS, TRAIN_LEVELS, training_pool

    start = cfg.start_level if cfg.start_level is not None else int(meta.get("start_level", 0))
    num = cfg.num_levels if cfg.num_levels is not None else int(meta.get("num_levels", 0))
    train = training_pool(start, num) if num > 0 else TRAIN_LEVELS
    return {"train": train, "test": TEST_LEVELS}


def run_key(
    cfg: Any, load_path: str, env_name: str, mode: str, backgrounds: bool, ranges: dict
) -> str:
    """A hash of what decides a test's episodes: the same test retried gets the same key."""
    what = {
        "load_path": load_path,
        "env_name": env_name,
        "mode": mode,
        "backgrounds": backgrounds,
        "ranges": ranges,
        **{
            k: getattr(cfg, k)
            for k in ("num_runs", "num_envs", "max_steps", "deterministic", "seed", "precision")
        },
    }
    return hashlib.sha1(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:12]


def episodes_csv_path(out_csv: str | Path) -> Path:
    """Where the per-episode rows of a summary CSV go: ``<stem>_episodes.csv`` beside it."""
    out = Path(out_csv)
    return out.with_name(f"{out.stem}_episodes.csv")


@dataclasses.dataclass
class PolicyTest:
    """A test_policy run, resolved by :meth:`prepare`: the policy loaded, its game and level
    ranges, and which level sets are still to do."""

    cfg: TestPolicyConfig
    act_fn: ActFn
    meta: dict[str, Any]  # the checkpoint's metadata
    load_path: str  # absolute (or "random")
    env_name: str
    mode: str
    backgrounds: bool
    ranges: dict[str, tuple[int, int]]  # level set -> (start_level, num_levels)
    base_key: str  # run_key of the whole test
    todo: list[str]  # level sets without a summary row in out_csv yet

    @property
    def out_csv(self) -> Path:
        return Path(self.cfg.out_csv)

    @property
    def episodes_csv(self) -> Path:
        return episodes_csv_path(self.cfg.out_csv)

    def key(self, level_set: str) -> str:
        return f"{self.base_key}-{level_set}"

    @classmethod
    def prepare(cls, cfg: TestPolicyConfig) -> PolicyTest:
        """Load the policy and resolve the test (UserError for a missing or corrupt
        checkpoint, one of another game, or a CSV written by an older version)."""
        from trex.common.files import csv_column_values
        from trex.rl.evaluation import load_configured_policy

        act_fn, meta, (env_name, mode, backgrounds) = load_configured_policy(cfg)
        ranges = level_ranges(meta, cfg)
        # absolute, so that plot_policy_returns --test_csv can match rows to runs from any
        # directory
        load_path = (
            cfg.load_path if cfg.load_path == "random" else str(Path(cfg.load_path).resolve())
        )
        out_csv, episodes_csv = Path(cfg.out_csv), episodes_csv_path(cfg.out_csv)
        done = csv_column_values(out_csv, "run_key")
        if done is None or csv_column_values(episodes_csv, "run_key") is None:
            raise UserError(
                f"{out_csv} (or {episodes_csv.name}) was written by an older version (no "
                "run_key column): pass another --out_csv"
            )
        base_key = run_key(cfg, load_path, env_name, mode, backgrounds, ranges)
        todo = [ls for ls in cfg.level_sets if f"{base_key}-{ls}" not in done]
        return cls(
            cfg, act_fn, meta, load_path, env_name, mode, backgrounds, ranges, base_key, todo
        )

    def run(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Play the episodes of the level sets to do: (summary rows, episode rows). Drops
        the episode rows a killed attempt of this test left for them first."""
        from trex.common.files import drop_csv_rows
        from trex.rl.evaluation import run_episodes

        cfg = self.cfg
        drop_csv_rows(self.episodes_csv, "run_key", {self.key(ls) for ls in self.todo})
        rows, episode_rows = [], []
        for level_set in self.todo:
            start, num = self.ranges[level_set]
            stats = run_episodes(
                self.act_fn,
                self.env_name,
                distribution_mode=self.mode,
                start_level=start,
                num_levels=num,
                num_episodes=cfg.num_runs,
                num_envs=cfg.num_envs,
                max_steps=cfg.max_steps,
                seed=cfg.seed,
                use_backgrounds=self.backgrounds,
            )
            s = stats.summary()
            key = {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "load_path": self.load_path,
                "timesteps": self.meta.get("timesteps", ""),
                "reward": self.meta.get("reward", "true"),
                "env_name": self.env_name,
                "distribution_mode": self.mode,
                "level_set": level_set,
                "start_level": start,
                "num_levels": num,
                "deterministic": cfg.deterministic,
                "seed": cfg.seed,
                "run_key": self.key(level_set),
            }
            rows.append({**key, **s})
            extra = {"use_backgrounds": self.backgrounds, "max_steps": cfg.max_steps or ""}
            episode_rows += [{**key, **extra, **e} for e in stats.records()]
            log.info(
                "%s levels [%d, %d): return %.2f +- %.2f (min %.1f, max %.1f), "
                "length %.0f +- %.0f, %d episodes",
                level_set,
                start,
                start + num if num else 2**31,
                s["return_mean"],
                s["return_std"],
                s["return_min"],
                s["return_max"],
                s["length_mean"],
                s["length_std"],
                s["episodes"],
            )
        return rows, episode_rows

    def write(self, rows: list[dict[str, Any]], episode_rows: list[dict[str, Any]]) -> None:
        """Append the episodes, then the summary rows (a summary row is never without its
        episodes: it is the commit point a retry looks for)."""
        from trex.common.files import append_csv_rows
        from trex.common.runs import fault_point

        append_csv_rows(self.episodes_csv, episode_rows, columns=EPISODE_COLUMNS)
        fault_point("test_policy_between_episodes_and_summary")
        append_csv_rows(self.out_csv, rows, unique="run_key")


def summary_table(rows: list[dict[str, Any]]) -> str:
    """The summary rows as a small text table, one line per level set."""
    lines = [
        f"{'levels':<6} {'episodes':>8} {'return mean':>11} {'std':>6} {'min':>6} {'max':>6} "
        f"{'length':>7}"
    ]
    for r in rows:
        lines.append(
            f"{r['level_set']:<6} {r['episodes']:>8} {r['return_mean']:>11.2f} "
            f"{r['return_std']:>6.2f} {r['return_min']:>6.1f} {r['return_max']:>6.1f} "
            f"{r['length_mean']:>7.0f}"
        )
    return "\n".join(lines)
