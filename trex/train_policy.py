"""Train a PPO agent on a Procgen game (train-procgen's settings, IMPALA CNN).

Checkpoints go every ``--save_interval`` updates into ``<log_dir>/<env_name>/<mode>[/<log_name>]``
with a ``checkpoints.csv`` manifest: the directory ``gen_demos --models_dir`` reads.
The flags are the fields of :class:`trex.rl.config.TrainPolicyConfig`.

    python -m trex.train_policy --env_name starpilot --timesteps_per_proc 500000
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from trex.common.cli import cli_entry, setup_logging
from trex.common.config import config_parser, parse_config
from trex.common.runs import write_run_config
from trex.rl.config import TrainPolicyConfig

log = logging.getLogger("trex.train_policy")


def build_parser() -> argparse.ArgumentParser:
    return config_parser(
        TrainPolicyConfig,
        prog="trex-train-policy",
        description="Train PPO (IMPALA CNN, train-procgen settings) on a Procgen game.",
    )


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_config(TrainPolicyConfig, argv, build_parser())
    setup_logging()
    from trex.rl.training import prepare_training, train_ppo
    from trex.sweeps.stages import write_stage_result

    run = prepare_training(cfg)  # every check and lookup; nothing written yet
    run.run_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(run.run_dir / "log.txt")
    write_run_config(
        run.run_dir / run.config_name,
        cfg.to_dict(),
        run_dir=str(run.run_dir),
        resumed_from=str(run.load_path) if run.load_path else None,
    )
    log.info(
        "training PPO on %s (%s), reward %s -> %s",
        cfg.env_name,
        cfg.distribution_mode,
        run.reward_meta["reward"],
        run.run_dir,
    )
    summary = train_ppo(
        cfg,
        run.run_dir,
        load_path=run.load_path,
        wrap_env=run.wrap_env,
        checkpoint_meta=run.reward_meta,
        resume_meta=run.resume_meta,
    )
    log.info(
        "done: %d steps, %.0f steps/s, mean training return %.2f, last checkpoint %s",
        summary["timesteps"],
        summary["steps_per_s"],
        summary["mean_return"],
        summary["last_checkpoint"],
    )
    write_stage_result(run_dir=str(run.run_dir), **summary)  # for run_experiments' manifest
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
