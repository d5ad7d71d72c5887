"""Test a policy's true return on its training levels and on unseen levels.

    python -m trex.test_policy --load_path experts/starpilot/easy/checkpoint_0000491520.zip \
        --num_runs 100
    python -m trex.test_policy \
        --load_path experts_shipped/starpilot/checkpoint_0000491520.safetensors

"train" is the policy's own training pool [start_level, start_level + num_levels) from its
checkpoint (old checkpoints with num_levels 0: the whole training range [0, 1e9)); "test" is
the unseen range [1e9, 2e9). ``--load_path random`` tests a uniformly random policy (the
baseline to beat). One row per level set is appended to ``--out_csv``, and one row per
episode to ``<out_csv stem>_episodes.csv`` beside it (same ``time``, ``load_path``,
``level_set`` and ``seed``: confidence intervals can be recomputed from it). The flags are
the fields of :class:`trex.rl.config.TestPolicyConfig`; the procedure is
:class:`trex.rl.testing.PolicyTest`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from trex.common.cli import cli_entry, setup_logging
from trex.common.config import config_parser, parse_config
from trex.rl.config import TestPolicyConfig

log = logging.getLogger("trex.test_policy")


def build_parser() -> argparse.ArgumentParser:
    return config_parser(
        TestPolicyConfig,
        prog="trex-test-policy",
        description="Mean/std/min/max true return and length of a policy on training and "
        "unseen levels.",
    )


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_config(TestPolicyConfig, argv, build_parser())
    setup_logging()
    from trex.rl.testing import PolicyTest, summary_table

    test = PolicyTest.prepare(cfg)  # the policy loaded, its levels resolved; nothing written
    if not test.todo:
        log.info(
            "this test (run_key %s) is already complete in %s: nothing to do",
            test.base_key,
            test.out_csv,
        )
        return 0
    rows, episode_rows = test.run()
    test.write(rows, episode_rows)
    print(summary_table(rows))
    log.info(
        "appended %d row(s) to %s and %d episode(s) to %s",
        len(rows),
        test.out_csv,
        len(episode_rows),
        test.episodes_csv,
    )
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
