"""Export chosen checkpoints of a train_policy run as weights-only files to ship with the code.

    python -m trex.export_policy --models_dir experts/starpilot/easy \
        --out_dir experts_shipped/starpilot --timesteps 250000 500000 1000000 best
    python -m trex.export_policy --models_dir experts/starpilot/easy \
        --out_dir experts_shipped/starpilot --pick 4

Each chosen checkpoint becomes ``<out_dir>/<its name>.safetensors`` (fp32 weights of the policy
only, no optimizer state, about 2.5 MB; the checkpoint's metadata in the safetensors header),
listed in ``<out_dir>/checkpoints.csv`` (file, timesteps, mean_return, source, selected_by): a
folder that ``gen_demos --models_dir``, ``test_policy``, ``visualize_policy`` and
``train_policy --load_path`` (fine-tuning) read like a training run's directory.
``--timesteps T`` takes the checkpoint nearest T steps (``best``: the highest mean training
return); ``--pick N`` takes N spread over skill (the earliest, the best, and ones between
them evenly spaced in mean training return). The flags are the fields of
:class:`trex.rl.config.ExportPolicyConfig`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from trex.common.cli import cli_entry, setup_logging
from trex.common.config import config_parser, parse_config
from trex.rl.config import ExportPolicyConfig

log = logging.getLogger("trex.export_policy")


def build_parser() -> argparse.ArgumentParser:
    return config_parser(
        ExportPolicyConfig,
        prog="trex-export-policy",
        description="Write chosen checkpoints of a train_policy run as weights-only .safetensors "
        "files plus a checkpoints.csv manifest (experts to ship in a repository).",
    )


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_config(ExportPolicyConfig, argv, build_parser())
    setup_logging()
    from trex.rl.export import export_policy

    shipped = export_policy(cfg)
    print(shipped.to_string(index=False))
    log.info("%s lists %d checkpoint(s)", Path(cfg.out_dir) / "checkpoints.csv", len(shipped))
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
