"""PPO on a reward learned online from preferences over the agent's own rollouts
(Christiano et al. 2017, arXiv 1706.03741): a synthetic labeller compares segments of the
rollouts PPO collects by their true return, and the reward network is refitted on the
labelled pairs as training goes. Checkpoints, ``checkpoints.csv`` and ``progress.csv`` as
train_policy's, plus the reward model (``reward_model.safetensors``, train_reward's format)
and the preference buffer (``preferences/``). Restart the same command to continue a killed
run. The flags are the fields of :class:`trex.preferences.config.TrainPreferencesConfig`.

    python -m trex.train_preferences --env_name coinrun --num_levels 200 \
        --timesteps_per_proc 500000 --num_queries 5000 --log_dir loop --log_name pref5k_s1
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from trex.common.cli import cli_entry, setup_logging
from trex.common.config import config_parser, parse_config
from trex.preferences.config import TrainPreferencesConfig

log = logging.getLogger("trex.train_preferences")


def build_parser() -> argparse.ArgumentParser:
    return config_parser(
        TrainPreferencesConfig,
        prog="trex-train-preferences",
        description="PPO on a reward learned online from synthetic preferences.",
    )


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_config(TrainPreferencesConfig, argv, build_parser())
    setup_logging()
    from trex.preferences.run import train_preferences
    from trex.sweeps.stages import write_stage_result

    def log_into(run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        setup_logging(run_dir / "log.txt")

    summary = train_preferences(cfg, on_start=log_into)
    log.info(
        "done: %d steps, %s queries, reward model %s, last checkpoint %s",
        summary["timesteps"],
        summary.get("queries", "all"),
        summary.get("reward_model", cfg.run_dir / "reward_model.safetensors"),
        summary["last_checkpoint"],
    )
    write_stage_result(run_dir=str(cfg.run_dir), **summary)
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
