"""Test a policy's true return on its training levels and on unseen levels.

    python -m trex.test_policy --load_path experts/starpilot/easy/checkpoint_0000491520.zip --num_runs 100
    python -m trex.test_policy --load_path experts_shipped/starpilot/checkpoint_0000491520.safetensors

"train" is the policy's own training pool [start_level, start_level + num_levels) from its
checkpoint (old checkpoints with num_levels 0: the whole training range [0, 1e9)); "test" is
the unseen range [1e9, 2e9). ``--load_path random`` tests a uniformly random policy (the
baseline to beat). One row per level set is appended to ``--out_csv``, and one row per
episode to ``<out_csv stem>_episodes.csv`` beside it (same ``time``, ``load_path``,
``level_set`` and ``seed``: confidence intervals can be recomputed from it).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from trex.common.cli import (
    add_config_flag,
    cli_entry,
    nonnegative_int,
    parse_args,
    positive_int,
    setup_logging,
    str2bool,
)
from trex.common.device import PRECISIONS
from trex.common.errors import UserError
from trex.common.runs import seed_everything

log = logging.getLogger("trex.test_policy")

LEVEL_SETS = ("train", "test")
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trex-test-policy",
        description="Mean/std/min/max true return and length of a policy on training and unseen levels.",
    )
    add_config_flag(p)
    p.add_argument(
        "--load_path",
        required=True,
        help="policy checkpoint (.zip, or weights-only .safetensors from export_policy), "
        "or 'random' for a uniformly random policy",
    )
    p.add_argument("--env_name", default=None, help="default: the checkpoint's game")
    p.add_argument("--distribution_mode", default=None, help="default: the checkpoint's mode")
    p.add_argument(
        "--num_levels",
        type=nonnegative_int,
        default=None,
        help="size of the 'train' level pool (default: the checkpoint's training pool; "
        "0 = the whole training range [0, 1e9))",
    )
    p.add_argument(
        "--start_level",
        type=nonnegative_int,
        default=None,
        help="first level of the 'train' pool (default: the checkpoint's)",
    )
    p.add_argument(
        "--use_backgrounds",
        type=str2bool,
        default=None,
        help="default: as the policy was trained (the checkpoint's), else True",
    )
    p.add_argument(
        "--level_sets",
        nargs="+",
        choices=LEVEL_SETS,
        default=list(LEVEL_SETS),
        help="train: the policy's training levels; test: unseen levels [1e9, 2e9)",
    )
    p.add_argument("--num_runs", type=positive_int, default=100, help="episodes per level set")
    p.add_argument("--num_envs", type=positive_int, default=32, help="environments run in parallel")
    p.add_argument(
        "--max_steps", type=positive_int, default=None, help="cut episodes at this length"
    )
    p.add_argument(
        "--deterministic",
        type=str2bool,
        nargs="?",
        const=True,
        default=False,
        help="take the most likely action instead of sampling",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out_csv", default="results/test_policy.csv")
    p.add_argument("--precision", choices=PRECISIONS, default="auto")
    p.add_argument("--device", default="auto")
    return p


def level_ranges(meta: dict, args: argparse.Namespace) -> dict[str, tuple[int, int]]:
    """(start_level, num_levels) per level set: "train" is the policy's own training pool
    (the checkpoint's start_level/num_levels, or the flags'), checked to lie inside the
    training range [0, 1e9); num_levels 0 (old checkpoints, the random policy) stands for the
    whole training range. "test" is the unseen range [1e9, 2e9)."""
    from trex.common.envs import TEST_LEVELS, TRAIN_LEVELS, training_pool

    start = args.start_level if args.start_level is not None else int(meta.get("start_level", 0))
    num = args.num_levels if args.num_levels is not None else int(meta.get("num_levels", 0))
    train = training_pool(start, num) if num > 0 else TRAIN_LEVELS
    return {"train": train, "test": TEST_LEVELS}


def run_key(
    args: argparse.Namespace,
    load_path: str,
    env_name: str,
    mode: str,
    backgrounds: bool,
    ranges: dict,
) -> str:
    """A hash of what decides a test's episodes: the same test retried gets the same key."""
    import hashlib
    import json

    what = {
        "load_path": load_path,
        "env_name": env_name,
        "mode": mode,
        "backgrounds": backgrounds,
        "ranges": ranges,
        **{
            k: getattr(args, k)
            for k in ("num_runs", "num_envs", "max_steps", "deterministic", "seed", "precision")
        },
    }
    return hashlib.sha1(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:12]


def episodes_csv_path(out_csv: str | Path) -> Path:
    """Where the per-episode rows of a summary CSV go: ``<stem>_episodes.csv`` beside it."""
    out = Path(out_csv)
    return out.with_name(f"{out.stem}_episodes.csv")


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    setup_logging()
    from trex.common.envs import check_distribution_mode, check_env_name
    from trex.common.files import append_csv_rows, csv_column_values, drop_csv_rows
    from trex.common.runs import fault_point
    from trex.rl.evaluation import load_act_fn, run_episodes

    seed_everything(args.seed)  # the policy samples its actions with torch's generator
    act_fn, meta = load_act_fn(
        args.load_path,
        args.env_name,
        device=args.device,
        precision=args.precision,
        deterministic=args.deterministic,
        seed=args.seed,
    )
    env_name = check_env_name(args.env_name or meta["env_name"])
    mode = check_distribution_mode(args.distribution_mode or meta.get("distribution_mode", "easy"))
    ranges = level_ranges(meta, args)
    backgrounds = (
        args.use_backgrounds
        if args.use_backgrounds is not None
        else bool(meta.get("use_backgrounds", True))
    )
    # absolute, so that plot_policy_returns --test_csv can match rows to runs from any directory
    load_path = (
        args.load_path if args.load_path == "random" else str(Path(args.load_path).resolve())
    )
    # a retry of the same run (same policy, levels, episodes, seed) skips the level sets whose
    # summary row (the commit point, written after the episodes) is there, and drops the
    # episode rows a killed attempt left for the others
    out_csv, episodes_csv = Path(args.out_csv), episodes_csv_path(args.out_csv)
    done = csv_column_values(out_csv, "run_key")
    if done is None or csv_column_values(episodes_csv, "run_key") is None:
        raise UserError(
            f"{out_csv} (or {episodes_csv.name}) was written by an older version (no run_key "
            "column): pass another --out_csv"
        )
    base_key = run_key(args, load_path, env_name, mode, backgrounds, ranges)
    keys = {ls: f"{base_key}-{ls}" for ls in args.level_sets}
    todo = [ls for ls in args.level_sets if keys[ls] not in done]
    if not todo:
        log.info(
            "this test (run_key %s) is already complete in %s: nothing to do", base_key, out_csv
        )
        return 0
    drop_csv_rows(episodes_csv, "run_key", {keys[ls] for ls in todo})
    rows, episode_rows = [], []
    for level_set in todo:
        start, num = ranges[level_set]
        stats = run_episodes(
            act_fn,
            env_name,
            distribution_mode=mode,
            start_level=start,
            num_levels=num,
            num_episodes=args.num_runs,
            num_envs=args.num_envs,
            max_steps=args.max_steps,
            seed=args.seed,
            use_backgrounds=backgrounds,
        )
        s = stats.summary()
        key = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "load_path": load_path,
            "timesteps": meta.get("timesteps", ""),
            "reward": meta.get("reward", "true"),
            "env_name": env_name,
            "distribution_mode": mode,
            "level_set": level_set,
            "start_level": start,
            "num_levels": num,
            "deterministic": args.deterministic,
            "seed": args.seed,
            "run_key": keys[level_set],
        }
        rows.append({**key, **s})
        episode_rows += [
            {**key, "use_backgrounds": backgrounds, "max_steps": args.max_steps or "", **e}
            for e in stats.records()
        ]
        log.info(
            "%s levels [%d, %d): return %.2f +- %.2f (min %.1f, max %.1f), length %.0f +- %.0f, "
            "%d episodes",
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
    # episodes first: a summary row is never without its episodes
    append_csv_rows(episodes_csv, episode_rows, columns=EPISODE_COLUMNS)
    fault_point("test_policy_between_episodes_and_summary")
    append_csv_rows(out_csv, rows, unique="run_key")
    print(
        f"{'levels':<6} {'episodes':>8} {'return mean':>11} {'std':>6} {'min':>6} {'max':>6} {'length':>7}"
    )
    for r in rows:
        print(
            f"{r['level_set']:<6} {r['episodes']:>8} {r['return_mean']:>11.2f} {r['return_std']:>6.2f} "
            f"{r['return_min']:>6.1f} {r['return_max']:>6.1f} {r['length_mean']:>7.0f}"
        )
    log.info(
        "appended %d row(s) to %s and %d episode(s) to %s",
        len(rows),
        args.out_csv,
        len(episode_rows),
        episodes_csv_path(args.out_csv),
    )
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
