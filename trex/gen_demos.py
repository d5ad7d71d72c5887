"""Generate demonstrations of varied skill from PPO checkpoints (or a random policy).

Writes ``<log_dir>/demo_infos.csv`` (one row per demo, appended) and
``<log_dir>/demo_files/<demo_id>.npz``; with ``--name X`` ``demo_infos_X.csv`` and
``demo_files_X/``. Training demos come from levels [0, 1e9), ``--test_set`` demos from
[1e9, 2e9); ``--start_level``/``--num_levels`` draw them from a pool of N levels inside
that range (procgen's generalization protocol), recorded in every index row.

    python -m trex.gen_demos --env_name starpilot --models_dir experts/starpilot/easy --num_dems 200
    python -m trex.gen_demos --env_name starpilot --models_dir experts/starpilot/easy --num_dems 100 --test_set
    python -m trex.gen_demos --env_name starpilot --policy experts/starpilot/easy/ckpt.zip --noise 0 0.25 0.5 0.75 1
    python -m trex.gen_demos --env_name starpilot --policy random --num_dems 20
"""

from __future__ import annotations

import argparse
import logging
import os
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
from trex.common.errors import UserError
from trex.common.runs import seed_everything, write_run_config

log = logging.getLogger("trex.gen_demos")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trex-gen-demos",
        description="Collect demonstrations of varied skill into the demo store "
        "(demo_infos.csv + demo_files/<demo_id>.npz).",
    )
    add_config_flag(p)
    p.add_argument("--env_name", default="starpilot")
    p.add_argument("--distribution_mode", default="easy")
    p.add_argument(
        "--test_set",
        action="store_true",
        help="demos from the unseen test levels [1e9, 2e9) instead of [0, 1e9)",
    )
    p.add_argument(
        "--start_level",
        type=nonnegative_int,
        default=None,
        help="first level of the pool (default: 0, or 1e9 with --test_set)",
    )
    p.add_argument(
        "--num_levels",
        type=nonnegative_int,
        default=None,
        help="pool size: demos are drawn from [start_level, start_level + num_levels), "
        "several per level allowed (default: the rest of the training / test range)",
    )
    p.add_argument("--num_dems", type=positive_int, default=100, help="number of demos to collect")
    p.add_argument(
        "--max_ep_len",
        type=positive_int,
        default=1000,
        help="cut episodes at this length (kept, with done=False in the index)",
    )
    p.add_argument(
        "--models_dir",
        default=None,
        help="checkpoint directory written by train_policy (its checkpoints.csv); "
        "checkpoints are chosen so the demos spread over the skill range",
    )
    p.add_argument(
        "--policy",
        default=None,
        help="'random' for a uniformly random policy, or one checkpoint (.zip or .safetensors) "
        "(instead of --models_dir)",
    )
    p.add_argument(
        "--noise",
        type=float,
        nargs="+",
        default=None,
        metavar="EPS",
        help="epsilon-greedy noise levels (D-REX); demos split evenly over them (default 0 = none)",
    )
    p.add_argument(
        "--sequential",
        type=nonnegative_int,
        default=0,
        help="nonzero: procgen's sequential levels (finishing a level continues to "
        "the next instead of ending the episode); the value is recorded",
    )
    p.add_argument("--use_backgrounds", type=str2bool, default=True)
    p.add_argument(
        "--num_envs",
        type=positive_int,
        default=64,
        help="environments stepped in parallel, one batched policy forward per step",
    )
    p.add_argument(
        "--deterministic",
        type=str2bool,
        default=False,
        help="take the policy's most likely action instead of sampling",
    )
    p.add_argument("--log_dir", default="demos", help="where the index CSV and demo files go")
    p.add_argument(
        "--name",
        default=None,
        help="name of this batch of demos: demo_infos_<name>.csv and demo_files_<name>/",
    )
    p.add_argument(
        "--seed",
        type=nonnegative_int,
        default=None,
        help="seeds policy sampling, noise and the levels (default: a random seed, recorded)",
    )
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--progress", type=str2bool, default=True, help="show a progress bar")
    return p


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    setup_logging()
    import numpy as np

    from trex.common.envs import check_distribution_mode, check_env_name
    from trex.demos.generation import (
        CollectConfig,
        check_existing_index,
        generate_demos,
        index_paths,
        summarize_rows,
    )
    from trex.demos.planning import (
        RANDOM_POLICY,
        check_noise,
        checkpoint_source,
        manifest_sources,
        plan_jobs,
        remaining_jobs,
    )

    check_env_name(args.env_name)
    check_distribution_mode(args.distribution_mode)
    if args.name is not None and (not args.name or any(c in args.name for c in "/\\")):
        raise UserError(f"--name must be a plain name, got {args.name!r}")
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "little") % 2**31
    if args.policy is not None and args.models_dir is not None:
        raise UserError("give either --models_dir or --policy, not both")
    if args.policy == RANDOM_POLICY:
        if args.noise is not None:
            raise UserError(
                "--noise does not apply to --policy random (its demos are recorded with noise 1.0)"
            )
        sources = None
    elif args.policy is not None:
        sources = [checkpoint_source(args.policy, args.env_name)]
    elif args.models_dir is not None:
        sources = manifest_sources(args.models_dir, args.env_name)
    else:
        raise UserError(
            "give --models_dir (a train_policy checkpoint directory), --policy CKPT.zip "
            "or --policy random"
        )
    noise = check_noise(args.noise if args.noise is not None else [0.0])
    jobs = plan_jobs(args.num_dems, noise, sources)

    cfg = CollectConfig(
        env_name=args.env_name,
        distribution_mode=args.distribution_mode,
        test_set=args.test_set,
        start_level=args.start_level,
        num_levels=args.num_levels,
        sequential=args.sequential,
        use_backgrounds=args.use_backgrounds,
        max_ep_len=args.max_ep_len,
        num_envs=args.num_envs,
        seed=args.seed,
        deterministic=args.deterministic,
        device=args.device,
        precision=args.precision,
    )
    pool = cfg.pool()  # a clear error for a bad pool before anything is written
    csv_path, demo_dir = index_paths(args.log_dir, args.name)
    check_existing_index(csv_path)  # a clear error before anything is written
    # a retry of the same run (same arguments and seed) finishes what a killed attempt began
    key = run_key(args)
    done = demos_of_run(csv_path, key)
    if len(done):
        jobs = remaining_jobs(jobs, done)
        log.info(
            "%d demos of this run (key %s) are already in %s; %d left to collect",
            len(done),
            key,
            csv_path,
            len(jobs),
        )
        cfg.seed = int(np.random.SeedSequence([args.seed, len(done)]).generate_state(1)[0] % 2**31)
        if not jobs:
            log.info("nothing left to do")
            return 0
    run_dir = (
        Path(args.log_dir) / "gen_demos_runs" / f"{time.strftime('%Y%m%d-%H%M%S')}_{os.getpid()}"
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(run_dir / "log.txt")
    write_run_config(run_dir / "config.json", args, index=str(csv_path), demo_dir=str(demo_dir))
    seed_everything(args.seed)
    n_policies = len({j.policy.name for j in jobs})
    log.info(
        "collecting %d %s demos of %s (%s) on levels [%d, %d) from %d polic%s, noise %s, "
        "%d envs, seed %d -> %s",
        len(jobs),
        "test" if args.test_set else "train",
        args.env_name,
        args.distribution_mode,
        pool[0],
        sum(pool),
        n_policies,
        "y" if n_policies == 1 else "ies",
        sorted({j.noise for j in jobs}),
        min(args.num_envs, len(jobs)),
        args.seed,
        csv_path,
    )
    rows, stats = generate_demos(jobs, cfg, csv_path, demo_dir, progress=args.progress, run_key=key)
    log.info(
        "%d demos, %d steps in %.1f s (%.0f demo steps/s); index %s",
        stats.demos,
        stats.demo_steps,
        stats.seconds,
        stats.demo_steps_per_s,
        csv_path,
    )
    summary = summarize_rows(rows)
    if not summary.empty:
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    return 0


def run_key(args: argparse.Namespace) -> str:
    """A hash of the arguments that decide which demos a run makes (not where they go, how
    fast or how verbosely): the same run retried gets the same key."""
    import hashlib
    import json

    skip = {"config", "progress", "device", "precision", "num_envs", "log_dir", "name"}
    chosen = {k: v for k, v in sorted(vars(args).items()) if k not in skip}
    return hashlib.sha1(json.dumps(chosen, sort_keys=True, default=str).encode()).hexdigest()[:12]


def demos_of_run(csv_path: Path, key: str):
    """The index rows a run with this key already wrote (empty if none)."""
    import pandas as pd

    from trex.demos.store import DemoIndex

    if not csv_path.exists() or csv_path.stat().st_size == 0:
        return pd.DataFrame(columns=["policy", "noise"])
    df = DemoIndex.read(csv_path).df
    return df[df["run_key"].astype(str) == key] if "run_key" in df.columns else df.iloc[:0]


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
