"""Generate demonstrations of varied skill from PPO checkpoints (or a random policy).

Writes ``<log_dir>/demo_infos.csv`` (one row per demo, appended) and
``<log_dir>/demo_files/<demo_id>.npz``; with ``--name X`` ``demo_infos_X.csv`` and
``demo_files_X/``. Training demos come from levels [0, 1e9), ``--test_set`` demos from
[1e9, 2e9); ``--start_level``/``--num_levels`` draw them from a pool of N levels inside
that range (procgen's generalization protocol), recorded in every index row.

    python -m trex.gen_demos --env_name starpilot --models_dir experts/starpilot/easy --num_dems 200
    python -m trex.gen_demos --env_name starpilot --models_dir experts/starpilot/easy \
        --num_dems 100 --test_set
    python -m trex.gen_demos --env_name starpilot --policy experts/starpilot/easy/ckpt.zip \
        --noise 0 0.25 0.5 0.75 1
    python -m trex.gen_demos --env_name starpilot --policy random --num_dems 20

The flags are the fields of :class:`trex.demos.config.GenDemosConfig`; from Python,
:func:`trex.demos.generation.collect_demos` does the same run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from trex.common.cli import cli_entry, setup_logging
from trex.common.config import config_parser, parse_config
from trex.demos.config import GenDemosConfig


def build_parser() -> argparse.ArgumentParser:
    return config_parser(
        GenDemosConfig,
        prog="trex-gen-demos",
        description="Collect demonstrations of varied skill into the demo store "
        "(demo_infos.csv + demo_files/<demo_id>.npz).",
    )


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_config(GenDemosConfig, argv, build_parser())
    setup_logging()
    from trex.demos.generation import collect_demos, summarize_rows

    result = collect_demos(cfg)
    summary = summarize_rows(result.rows)
    if not summary.empty:
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
