"""Evaluate reward models on any demo set: every metric that tells a learned reward from a
survival bonus, with bootstrap 95% intervals, and how much the models agree.

    python -m trex.eval_reward --rm_id 123_4567 234_5678 --reward_csv reward_models/rm_infos.csv \
        --demo_csv demos/demo_infos.csv --out reward_eval.csv
    python -m trex.eval_reward --reward_model a.safetensors b.safetensors \
        --demo_csv demos_nobg/demo_infos.csv --use_backgrounds false

Per model, one row appended to ``--out``: Pearson and Spearman of predicted vs true return,
the episode-length baseline, the partial correlation given length, the fixed-window
correlation (each with ``_lo``/``_hi``). With several models, their pairwise EPIC Pearson
distances go to ``<out stem>_agreement.csv`` and the mean distance with its interval is logged.
The flags are the fields of :class:`trex.reward.config.EvalRewardConfig`; from Python,
:func:`trex.reward.evaluation.evaluate_reward_files` returns the rows.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from trex.common.cli import cli_entry, setup_logging
from trex.common.config import config_parser, parse_config
from trex.reward.config import EvalRewardConfig

log = logging.getLogger("trex.eval_reward")


def build_parser() -> argparse.ArgumentParser:
    return config_parser(
        EvalRewardConfig,
        prog="trex-eval-reward",
        description="Metrics of reward models on a demo set (content vs survival, agreement).",
    )


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_config(EvalRewardConfig, argv, build_parser())
    setup_logging()
    from trex.common.files import append_csv_rows, write_text_atomic
    from trex.reward.evaluation import SUMMARY_COLUMNS, evaluate_reward_files

    t0 = time.perf_counter()
    result = evaluate_reward_files(cfg)
    append_csv_rows(cfg.out, result.rows)
    table = result.table[list(SUMMARY_COLUMNS)]
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if result.agreement:
        pairs = result.agreement_pairs()
        out = Path(cfg.out)
        agree_path = out.with_name(f"{out.stem}_agreement.csv")
        write_text_atomic(agree_path, pairs.to_csv(index=False, lineterminator="\n"))
        log.info(
            "model agreement: mean EPIC Pearson distance %.3f [%.3f, %.3f] over %d pairs -> %s",
            result.agreement["mean_distance"],
            result.agreement["mean_distance_lo"],
            result.agreement["mean_distance_hi"],
            len(pairs),
            agree_path,
        )
    log.info(
        "%d row(s) appended to %s in %.1f s", len(result.rows), cfg.out, time.perf_counter() - t0
    )
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
