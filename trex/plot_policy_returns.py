"""Compare PPO runs on different rewards: true return against steps, with the demos' range.

    python -m trex.plot_policy_returns --runs experts/starpilot/easy \
        experts/starpilot/easy/rm_XXXX experts/starpilot/easy/constant_1 \
        --demo_csv demos/demo_infos.csv --test_csv results/test_policy.csv \
        --out figures/policy_returns.png

Runs with the same label (seeds of one reward) are drawn as their mean with their range;
``--reference_train/--reference_test`` add published curves (e.g. openai/train-procgen's).
The flags are the fields of :class:`trex.plotting.policy_returns.PlotPolicyReturnsConfig`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from trex.common.cli import cli_entry, setup_logging
from trex.common.config import config_parser, parse_config
from trex.plotting.policy_returns import PlotPolicyReturnsConfig

log = logging.getLogger("trex.plot_policy_returns")


def build_parser() -> argparse.ArgumentParser:
    return config_parser(
        PlotPolicyReturnsConfig,
        prog="trex-plot-policy-returns",
        description="True return vs steps for several PPO runs (PNG).",
    )


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_config(PlotPolicyReturnsConfig, argv, build_parser())
    setup_logging()
    from trex.plotting.policy_returns import policy_returns_figure

    out = policy_returns_figure(cfg)
    log.info("wrote %s", out)
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
