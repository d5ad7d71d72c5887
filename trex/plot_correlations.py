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
import logging
import sys
from collections.abc import Sequence

from trex.common.cli import add_config_flag, cli_entry, nonnegative_int, parse_args
from trex.common.errors import UserError

log = logging.getLogger("trex.plot_correlations")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trex-plot-correlations",
        description="Correlation of learned with true return vs number of demos (PNG).",
    )
    add_config_flag(p)
    p.add_argument(
        "--rm_csv_path",
        nargs="+",
        default=["reward_models/rm_infos.csv"],
        help="rm_infos CSV(s) written by train_reward (combined)",
    )
    p.add_argument("--env_name", default="fruitbot")
    p.add_argument("--distribution_mode", default="easy")
    p.add_argument("--sequential", type=nonnegative_int, default=0)
    p.add_argument(
        "--demo_csv",
        nargs="+",
        default=None,
        help="demo index CSV(s): the baseline is computed on their test demos "
        "(default: the baseline columns of the rm_infos rows)",
    )
    p.add_argument(
        "--metric",
        nargs="+",
        default=["pearson", "spearman"],
        help="rm_infos column(s) to plot: pearson spearman partial window_pearson ...",
    )
    p.add_argument(
        "--by",
        default="num_dems",
        help="rm_infos column on the x axis: num_dems, num_levels, rank_by, ...",
    )
    p.add_argument(
        "--where",
        nargs="+",
        default=[],
        metavar="COLUMN=VALUE",
        help="keep only rows where COLUMN equals VALUE (e.g. num_dems=50 rank_by=return)",
    )
    p.add_argument(
        "--out", default=None, help="PNG to write (default figures/correlations_<env>_<mode>.png)"
    )
    return p


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    from trex.common.cli import setup_logging

    setup_logging()
    import numpy as np
    import pandas as pd

    from trex.plotting.correlations import (
        BASELINE_COLUMNS,
        correlation_summary,
        plot_correlations,
    )
    from trex.reward.metrics import length_baseline
    from trex.reward.registry import read_rm_infos

    frames = [read_rm_infos(p) for p in args.rm_csv_path]
    rm = pd.concat(frames, ignore_index=True, sort=False)
    need = [c for c in ("sequential", args.by, *args.metric) if c not in rm.columns]
    if need:
        raise UserError(f"{', '.join(args.rm_csv_path)}: missing column(s) {', '.join(need)}")
    sel = rm[
        (rm["env_name"] == args.env_name)
        & (rm["mode"] == args.distribution_mode)
        & (pd.to_numeric(rm["sequential"], errors="coerce") == args.sequential)
    ]
    for cond in args.where:
        col, sep, value = cond.partition("=")
        if not sep or col not in sel.columns:
            raise UserError(
                f"--where {cond!r}: expected COLUMN=VALUE with a column of the rm_infos CSV"
            )
        sel = sel[sel[col].astype(str) == value]
    for m in args.metric:
        sel = sel.assign(**{m: pd.to_numeric(sel[m], errors="coerce")})
    sel = sel.dropna(subset=args.metric)
    if sel.empty:
        raise UserError(
            f"no reward models for {args.env_name} {args.distribution_mode} sequential="
            f"{args.sequential}{' ' + ' '.join(args.where) if args.where else ''} with "
            f"{', '.join(args.metric)} in {', '.join(args.rm_csv_path)}"
        )
    baseline: dict[str, float] = {}
    where = "none"
    if args.demo_csv:
        from trex.demos.store import DemoIndex

        test = (
            DemoIndex.read(args.demo_csv)
            .filter(
                env_name=args.env_name,
                mode=args.distribution_mode,
                set_name="test",
                sequential=args.sequential,
            )
            .df
        )
        if len(test) < 2:
            raise UserError(
                f"fewer than 2 test demos for {args.env_name} {args.distribution_mode} in "
                f"{', '.join(args.demo_csv)}: no baseline"
            )
        baseline["pearson"], baseline["spearman"] = length_baseline(
            test["length"].to_numpy(), test["return"].to_numpy()
        )
        where = f"{len(test)} test demos"
    for m in args.metric:
        ref = BASELINE_COLUMNS.get(m)
        if isinstance(ref, float):
            baseline[m] = ref
        elif ref is not None and m not in baseline and ref in sel.columns:
            baseline[m] = float(np.nanmean(pd.to_numeric(sel[ref], errors="coerce")))
            where = "mean over the runs' test demos"
    out = args.out or f"figures/correlations_{args.env_name}_{args.distribution_mode}.png"
    title = (
        f"{args.env_name} ({args.distribution_mode}{', sequential' if args.sequential else ''}): "
        f"learned reward vs true return on unseen levels"
    )
    path = plot_correlations(
        sel, out, title=title, baseline=baseline, metrics=args.metric, by=args.by
    )
    summary = correlation_summary(sel, args.metric, args.by)
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
