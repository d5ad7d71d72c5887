"""Record a policy playing as an MP4 a person can watch (frames upscaled, several screens tiled).

python -m trex.visualize_policy --load_path experts/starpilot/easy/checkpoint_0000491520.zip
python -m trex.visualize_policy \
    --load_path experts_shipped/starpilot/checkpoint_0000491520.safetensors

The flags are the fields of :class:`trex.rl.config.VisualizePolicyConfig`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from trex.common.cli import cli_entry, setup_logging
from trex.common.config import config_parser, parse_config
from trex.rl.config import VisualizePolicyConfig

log = logging.getLogger("trex.visualize_policy")


def build_parser() -> argparse.ArgumentParser:
    return config_parser(
        VisualizePolicyConfig,
        prog="trex-visualize-policy",
        description="Film a policy (or a random one) as an MP4.",
    )


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_config(VisualizePolicyConfig, argv, build_parser())
    setup_logging()
    from trex.common.video import tile, upscale, write_mp4
    from trex.rl.filming import film_policy

    frames, out = film_policy(cfg)
    write_mp4(out, upscale(tile(frames), cfg.scale), fps=cfg.fps)
    log.info("video: %s", out)
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
