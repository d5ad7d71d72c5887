"""Train a PPO agent on a Procgen game (train-procgen's settings, IMPALA CNN).

Checkpoints go every ``--save_interval`` updates into ``<log_dir>/<env_name>/<mode>[/<log_name>]``
with a ``checkpoints.csv`` manifest: the directory ``gen_demos --models_dir`` reads.

    python -m trex.train_policy --env_name starpilot --timesteps_per_proc 500000
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from trex.common.cli import (
    add_config_flag,
    cli_entry,
    nonnegative_int,
    parse_args,
    positive_float,
    positive_int,
    setup_logging,
    str2bool,
)
from trex.common.device import PRECISIONS
from trex.common.errors import UserError
from trex.common.runs import seed_everything, write_run_config

log = logging.getLogger("trex.train_policy")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trex-train-policy",
        description="Train PPO (IMPALA CNN, train-procgen settings) on a Procgen game.",
    )
    add_config_flag(p)
    p.add_argument("--env_name", default="starpilot")
    p.add_argument("--distribution_mode", default="easy")
    p.add_argument(
        "--num_levels",
        type=nonnegative_int,
        default=None,
        help="training pool size, e.g. 200 for procgen's generalization protocol "
        "(default: the whole training range [start_level, 1e9))",
    )
    p.add_argument(
        "--start_level", type=nonnegative_int, default=0, help="first level of the training pool"
    )
    p.add_argument("--use_backgrounds", type=str2bool, default=True)
    p.add_argument("--num_envs", type=positive_int, default=64)
    p.add_argument("--nsteps", type=positive_int, default=256)
    p.add_argument("--nminibatches", type=positive_int, default=8)
    p.add_argument("--ppo_epochs", type=positive_int, default=3)
    p.add_argument("--learning_rate", type=positive_float, default=5e-4)
    p.add_argument("--ent_coef", type=float, default=0.01)
    p.add_argument("--vf_coef", type=float, default=0.5)
    p.add_argument("--max_grad_norm", type=positive_float, default=0.5)
    p.add_argument("--gamma", type=positive_float, default=0.999)
    p.add_argument("--lam", type=positive_float, default=0.95)
    p.add_argument(
        "--norm_gamma",
        type=positive_float,
        default=0.99,
        help="discount of the return normalisation (baselines' VecNormalize default, "
        "which train-procgen uses; separate from the PPO discount --gamma)",
    )
    p.add_argument("--clip_range", type=positive_float, default=0.2)
    p.add_argument(
        "--timesteps_per_proc",
        type=positive_int,
        default=25_000_000,
        help="total environment steps to reach (a resumed run continues to this total)",
    )
    p.add_argument(
        "--save_interval", type=positive_int, default=10, help="updates between checkpoints"
    )
    p.add_argument(
        "--log_interval", type=positive_int, default=1, help="updates between progress rows"
    )
    p.add_argument("--log_dir", default="experts")
    p.add_argument("--log_name", default="", help="sub-directory under <log_dir>/<env>/<mode>")
    p.add_argument(
        "--load_path",
        default=None,
        help="a training checkpoint .zip to resume (continues in its directory), a "
        "weights-only .safetensors to fine-tune from (a new run directory, fresh "
        "optimizer), or a checkpoint directory (its latest)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto/bf16: channels_last + bf16 autocast (fast path); fp32: plain",
    )
    p.add_argument(
        "--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ..."
    )
    p.add_argument(
        "--num_threads",
        type=positive_int,
        default=None,
        help="torch CPU threads (default: torch's choice; 1 is much faster on a busy machine)",
    )
    reward = p.add_argument_group("reward (default: the game's true reward)")
    reward.add_argument(
        "--rm_id", default=None, help="learned reward model id, looked up in --reward_csv"
    )
    reward.add_argument(
        "--reward_csv",
        default="reward_models/rm_infos.csv",
        help="rm_infos CSV to look --rm_id up in",
    )
    reward.add_argument("--reward_model", default=None, help="path to a reward model .safetensors")
    reward.add_argument(
        "--use_sigmoid",
        type=str2bool,
        nargs="?",
        const=True,
        default=False,
        help="squash the learned reward with a sigmoid (the original project's option)",
    )
    reward.add_argument(
        "--constant_reward", type=float, default=None, help="+C every step: the live-long baseline"
    )
    reward.add_argument(
        "--allow_reward_mismatch",
        action="store_true",
        help="use a reward model trained on another game or mode",
    )
    return p


def run_dir_for(args: argparse.Namespace, reward_tag: str | None) -> Path:
    """Where a run's checkpoints and logs go: <log_dir>/<env_name>/<mode>[/<log_name>];
    runs on a replaced reward default to a sub-directory named for the reward."""
    path = Path(args.log_dir) / args.env_name / args.distribution_mode
    name = args.log_name or reward_tag
    return path / name if name else path


def reward_setup(args: argparse.Namespace):
    """(env wrapper or None, checkpoint metadata, run-dir tag) for the chosen reward.

    Loads and checks the reward model before anything is written (UserError on a
    missing/corrupt model, an unknown rm_id, or a model of another game or mode).
    """
    chosen = [x for x in (args.rm_id, args.reward_model, args.constant_reward) if x is not None]
    if len(chosen) > 1:
        raise UserError("choose one of --rm_id, --reward_model and --constant_reward")
    if args.constant_reward is not None:
        from trex.rl.reward_wrappers import ConstantRewardVecEnv

        c = args.constant_reward
        return (
            (lambda env: ConstantRewardVecEnv(env, c)),
            {"reward": f"constant:{c:g}"},
            f"constant_{c:g}",
        )
    if args.rm_id is None and args.reward_model is None:
        if args.use_sigmoid:
            raise UserError("--use_sigmoid needs a learned reward (--rm_id or --reward_model)")
        return None, {"reward": "true"}, None
    from trex.reward.model_file import load_reward_function
    from trex.reward.registry import resolve_reward_model
    from trex.rl.reward_wrappers import LearnedRewardVecEnv

    path = resolve_reward_model(
        args.reward_model or args.rm_id, None if args.reward_model else args.reward_csv
    )
    check = not args.allow_reward_mismatch
    reward_fn = load_reward_function(
        path,
        env_name=args.env_name if check else None,
        mode=args.distribution_mode if check else None,
        device=args.device,
        precision=args.precision,
    )
    rm_id = reward_fn.rm_id or Path(path).stem
    meta = {
        "reward": f"learned:{rm_id}",
        "reward_model": str(path),
        "use_sigmoid": args.use_sigmoid,
    }
    sig = args.use_sigmoid
    return (lambda env: LearnedRewardVecEnv(env, reward_fn, sig)), meta, f"rm_{rm_id}"


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    setup_logging()
    from trex.common.envs import check_distribution_mode, check_env_name, training_pool
    from trex.rl.checkpoints import is_weights_file
    from trex.rl.training import (
        PPOConfig,
        check_run_dir,
        find_resume_checkpoint,
        train_ppo,
    )

    check_env_name(args.env_name)
    check_distribution_mode(args.distribution_mode)
    start_level, num_levels = training_pool(args.start_level, args.num_levels)
    if (args.num_envs * args.nsteps) % args.nminibatches:
        raise UserError(
            f"num_envs * nsteps ({args.num_envs * args.nsteps}) must be divisible "
            f"by nminibatches ({args.nminibatches})"
        )
    load_path = find_resume_checkpoint(args.load_path) if args.load_path else None
    wrap_env, reward_meta, reward_tag = reward_setup(args)
    run_dir = run_dir_for(args, reward_tag)
    fine_tune = load_path is not None and is_weights_file(load_path)
    if (
        load_path is not None
        and not fine_tune
        and not args.log_name
        and args.log_dir == "experts"
        and not reward_tag
    ):
        run_dir = load_path.parent  # resume continues in the checkpoint's own directory
    elif fine_tune and not args.log_name and not reward_tag:
        run_dir = run_dir / f"finetune_{load_path.stem}"  # a new run, never the shipped folder
    check_run_dir(run_dir, load_path)
    cfg = PPOConfig(
        env_name=args.env_name,
        distribution_mode=args.distribution_mode,
        num_levels=num_levels,
        start_level=start_level,
        use_backgrounds=args.use_backgrounds,
        num_envs=args.num_envs,
        nsteps=args.nsteps,
        nminibatches=args.nminibatches,
        ppo_epochs=args.ppo_epochs,
        learning_rate=args.learning_rate,
        ent_coef=args.ent_coef,
        gamma=args.gamma,
        lam=args.lam,
        norm_gamma=args.norm_gamma,
        clip_range=args.clip_range,
        vf_coef=args.vf_coef,
        max_grad_norm=args.max_grad_norm,
        timesteps_per_proc=args.timesteps_per_proc,
        save_interval=args.save_interval,
        log_interval=args.log_interval,
        seed=args.seed,
        precision=args.precision,
        device=args.device,
    )
    if load_path is not None:
        from trex.rl.checkpoints import check_checkpoint_env, read_checkpoint_meta

        # clear errors before anything is written
        check_checkpoint_env(read_checkpoint_meta(load_path), load_path, args.env_name)
    seed_everything(args.seed)
    if args.num_threads:
        import torch

        torch.set_num_threads(args.num_threads)
    run_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(run_dir / "log.txt")
    config_name = "config.json" if load_path is None or fine_tune else "config_resume.json"
    write_run_config(
        run_dir / config_name,
        args,
        run_dir=str(run_dir),
        resumed_from=str(load_path) if load_path else None,
    )
    log.info(
        "training PPO on %s (%s), reward %s -> %s",
        args.env_name,
        args.distribution_mode,
        reward_meta["reward"],
        run_dir,
    )
    summary = train_ppo(
        cfg, run_dir, load_path=load_path, wrap_env=wrap_env, checkpoint_meta=reward_meta
    )
    log.info(
        "done: %d steps, %.0f steps/s, mean training return %.2f, last checkpoint %s",
        summary["timesteps"],
        summary["steps_per_s"],
        summary["mean_return"],
        summary["last_checkpoint"],
    )
    from trex.sweeps.stages import write_stage_result

    write_stage_result(run_dir=str(run_dir), **summary)  # for run_experiments' manifest
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
