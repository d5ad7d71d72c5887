"""Plot how well learned rewards do on held-out demos, by number of training demos (the original
project's figure) or by any other rm_infos column, with the episode-length baseline.

    python -m trex.plot_correlations --rm_csv_path reward_models/rm_infos.csv \
        --env_name starpilot --out figures/starpilot_correlations.png
    python -m trex.plot_correlations --env_name starpilot --metric partial window_pearson \
        --by num_levels --where num_dems=50 --out figures/starpilot_pools.png

Metrics (``--metric``, rm_infos columns train_reward writes): ``pearson``, ``spearman``
(predicted vs true return per demo), ``partial`` (the same given episode length),
``window_pearson`` (over fixed windows of equal length), or any other numeric column.
The baseline (+1 per step) of Pearson/Spearman comes from the test demos of ``--demo_csv``
when given, else from the ``baseline_*`` columns train_reward wrote (mean over runs); for
``partial`` and ``window_pearson`` it is 0 by construction. Writes a PNG; never opens a window.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence

from trex.common.cli import cli_entry, nonnegative_int, setup_logging
from trex.common.config import Config, config_parser, flag, parse_config, require
from trex.common.errors import UserError

log = logging.getLogger("trex.plot_correlations")


@dataclasses.dataclass
class PlotCorrelationsConfig(Config):
    """The options of ``plot_correlations``."""

    rm_csv_path: list[str] = flag(
        ["reward_models/rm_infos.csv"],
        help="rm_infos CSV(s) written by train_reward (combined)",
    )
    env_name: str = flag("fruitbot", help=None)
    distribution_mode: str = flag("easy", help=None)
    sequential: int = flag(0, type=nonnegative_int, help=None)
    demo_csv: list[str] | None = flag(
        None,
        help="demo index CSV(s): the baseline is computed on their test demos "
        "(default: the baseline columns of the rm_infos rows)",
    )
    metric: list[str] = flag(
        ["pearson", "spearman"],
        help="rm_infos column(s) to plot: pearson spearman partial window_pearson ...",
    )
    by: str = flag(
        "num_dems", help="rm_infos column on the x axis: num_dems, num_levels, rank_by, ..."
    )
    where: list[str] = flag(
        [],
        metavar="COLUMN=VALUE",
        help="keep only rows where COLUMN equals VALUE (e.g. num_dems=50 rank_by=return)",
    )
    out: str | None = flag(
        None, help="PNG to write (default figures/correlations_<env>_<mode>.png)"
    )

    def check(self) -> None:
        super().check()
        self.check_flags()
        for cond in self.where:
            require(
                "=" in cond,
                f"--where {cond!r}: expected COLUMN=VALUE with a column of the rm_infos CSV",
            )

    @property
    def out_path(self) -> str:
        return self.out or f"figures/correlations_{self.env_name}_{self.distribution_mode}.png"


def build_parser() -> argparse.ArgumentParser:
    return config_parser(
        PlotCorrelationsConfig,
        prog="trex-plot-correlations",
        description="Correlation of learned with true return vs number of demos (PNG).",
    )


def length_baselines(cfg: PlotCorrelationsConfig, sel) -> tuple[dict[str, float], str]:
    """(the episode-length baseline of each metric, where it comes from): Pearson/Spearman
    on the test demos of ``cfg.demo_csv`` when given, else the mean of the rows' baseline
    columns; 0 for the content metrics (partial, window_pearson)."""
    import numpy as np
    import pandas as pd

    from trex.plotting.correlations import BASELINE_COLUMNS
    from trex.reward.metrics import length_baseline

    baseline: dict[str, float] = {}
    where = "none"
    if cfg.demo_csv:
        from trex.demos.store import DemoIndex

        test = (
            DemoIndex.read(cfg.demo_csv)
            .filter(
                env_name=cfg.env_name,
                mode=cfg.distribution_mode,
                set_name="test",
                sequential=cfg.sequential,
            )
            .df
        )
        if len(test) < 2:
            raise UserError(
                f"fewer than 2 test demos for {cfg.env_name} {cfg.distribution_mode} in "
                f"{', '.join(cfg.demo_csv)}: no baseline"
            )
        baseline["pearson"], baseline["spearman"] = length_baseline(
            test["length"].to_numpy(), test["return"].to_numpy()
        )
        where = f"{len(test)} test demos"
    for m in cfg.metric:
        ref = BASELINE_COLUMNS.get(m)
        if isinstance(ref, float):
            baseline[m] = ref
        elif ref is not None and m not in baseline and ref in sel.columns:
            baseline[m] = float(np.nanmean(pd.to_numeric(sel[ref], errors="coerce")))
            where = "mean over the runs' test demos"
    return baseline, where


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_config(PlotCorrelationsConfig, argv, build_parser())
    setup_logging()
    from trex.plotting.correlations import correlation_summary, plot_correlations
    from trex.reward.registry import select_rm_rows

    sel = select_rm_rows(
        cfg.rm_csv_path,
        cfg.env_name,
        cfg.distribution_mode,
        cfg.sequential,
        where=cfg.where,
        numeric=cfg.metric,
        columns=[cfg.by],
    )
    baseline, where = length_baselines(cfg, sel)
    title = (
        f"{cfg.env_name} ({cfg.distribution_mode}{', sequential' if cfg.sequential else ''}): "
        f"learned reward vs true return on unseen levels"
    )
    path = plot_correlations(
        sel, cfg.out_path, title=title, baseline=baseline, metrics=cfg.metric, by=cfg.by
    )
    summary = correlation_summary(sel, cfg.metric, cfg.by)
    if baseline:
        log.info(
            "episode-length baseline (%s): %s",
            where,
            ", ".join(f"{m} {v:.3f}" for m, v in baseline.items()),
        )
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    log.info("wrote %s", path)
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
