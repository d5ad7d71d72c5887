"""Learn a reward network from demos ranked by return (T-REX, Brown et al. 2019,
arXiv 1904.06387), with the original project's flags, defaults and procedure.

    python -m trex.train_reward --env_name starpilot --num_dems 12 --demo_csv demos/demo_infos.csv

Outputs: a row in ``<save_dir>/rm_infos[_<save_name>].csv``; the model
``<save_dir>/model_files[_<save_name>]/<rm_id>.safetensors`` (weights + metadata); the run
directory ``<log_dir>/<rm_id>/<run_id>/`` with ``config.json``, ``train_log.csv`` (one row per
epoch) and ``log.txt``. The rm_id comes from the random seed as in the original project
(``123_4567``). The flags are the fields of :class:`trex.reward.config.TrainRewardConfig`;
from Python, :func:`trex.reward.training.train_reward_model` does the same run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from trex.common.cli import cli_entry, setup_logging
from trex.common.config import config_parser, parse_config
from trex.reward.config import TrainRewardConfig

#: the rm_infos columns printed at the end of a run
SUMMARY_COLUMNS: tuple[str, ...] = (
    "rm_id",
    "variant",
    "num_dems",
    "val_acc",
    "test_acc",
    "pearson",
    "baseline_pearson",
    "partial",
    "window_pearson",
    "n_train_levels",
    "wall_s",
)


def build_parser() -> argparse.ArgumentParser:
    return config_parser(
        TrainRewardConfig,
        prog="trex-train-reward",
        description="Train a T-REX reward model from ranked demos (the original project's "
        "procedure, batched and fast).",
    )


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_config(TrainRewardConfig, argv, build_parser())
    setup_logging()
    import pandas as pd

    from trex.reward.training import train_reward_model
    from trex.sweeps.stages import write_stage_result

    result = train_reward_model(cfg)
    write_stage_result(**result.row)  # run_experiments' manifest (no-op outside a sweep)
    if not result.already_done:
        table = pd.DataFrame([{k: result.row[k] for k in SUMMARY_COLUMNS}])
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
