"""What reward models look at: perturbation saliency maps (Greydanus et al. 2018) of one or
more reward models on demo frames or a policy's frames, as a PNG grid.

    python -m trex.plot_reward_saliency --reward_model a.safetensors b.safetensors \
        --labels T-REX preferences --demo_csv demos/demo_infos.csv --position 0.95 \
        --out figures/coinrun_saliency.png

The flags are the fields of :class:`trex.plotting.saliency.PlotRewardSaliencyConfig`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from trex.common.cli import cli_entry, setup_logging
from trex.common.config import config_parser, parse_config
from trex.plotting.saliency import PlotRewardSaliencyConfig

log = logging.getLogger("trex.plot_reward_saliency")


def build_parser() -> argparse.ArgumentParser:
    return config_parser(
        PlotRewardSaliencyConfig,
        prog="trex-plot-reward-saliency",
        description="Perturbation saliency of reward models on demo or policy frames (PNG).",
    )


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_config(PlotRewardSaliencyConfig, argv, build_parser())
    setup_logging()
    from trex.plotting.saliency import reward_saliency_figure

    log.info("wrote %s", reward_saliency_figure(cfg))
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
