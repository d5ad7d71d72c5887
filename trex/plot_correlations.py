"""Plot how well learned rewards correlate with the true return on held-out demos, by
number of training demos, with the episode-length baseline (the seed project's figure).

    python -m trex.plot_correlations --rm_csv_path reward_models/rm_infos.csv \
        --env_name starpilot --out figures/starpilot_correlations.png

The baseline (+1 per step: correlation of episode length with return) comes from the test
demos of ``--demo_csv`` when given, else from the ``baseline_pearson``/``baseline_spearman``
columns train_reward wrote (mean over runs). Writes a PNG; never opens a window.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from trex.core.runs import UserError, add_config_flag, cli_entry, nonnegative_int, parse_args

log = logging.getLogger("trex.plot_correlations")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trex-plot-correlations",
        description="Correlation of learned with true return vs number of demos (PNG).",
    )
    add_config_flag(p)
    p.add_argument("--rm_csv_path", nargs="+", default=["reward_models/rm_infos.csv"],
                   help="rm_infos CSV(s) written by train_reward (combined)")
    p.add_argument("--env_name", default="fruitbot")
    p.add_argument("--distribution_mode", default="easy")
    p.add_argument("--sequential", type=nonnegative_int, default=0)
    p.add_argument("--demo_csv", nargs="+", default=None,
                   help="demo index CSV(s): the baseline is computed on their test demos "
                        "(default: the baseline columns of the rm_infos rows)")
    p.add_argument("--out", default=None,
                   help="PNG to write (default figures/correlations_<env>_<mode>.png)")
    return p


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    from trex.core.runs import setup_logging

    setup_logging()
    import numpy as np
    import pandas as pd

    from trex.core.metrics import length_baseline
    from trex.core.plots import correlation_summary, plot_correlations
    from trex.core.reward_model import read_rm_infos

    frames = [read_rm_infos(p) for p in args.rm_csv_path]
    rm = pd.concat(frames, ignore_index=True, sort=False)
    need = [c for c in ("num_dems", "pearson", "spearman", "sequential") if c not in rm.columns]
    if need:
        raise UserError(f"{', '.join(args.rm_csv_path)}: missing column(s) {', '.join(need)}")
    sel = rm[(rm["env_name"] == args.env_name) & (rm["mode"] == args.distribution_mode)
             & (pd.to_numeric(rm["sequential"], errors="coerce") == args.sequential)]
    sel = sel.dropna(subset=["pearson", "spearman"])
    if sel.empty:
        raise UserError(f"no reward models for {args.env_name} {args.distribution_mode} sequential="
                        f"{args.sequential} with correlations in {', '.join(args.rm_csv_path)}")
    if args.demo_csv:
        from trex.core.demos import DemoIndex

        test = DemoIndex.read(args.demo_csv).filter(env_name=args.env_name, mode=args.distribution_mode,
                                                    set_name="test", sequential=args.sequential).df
        if len(test) < 2:
            raise UserError(f"fewer than 2 test demos for {args.env_name} {args.distribution_mode} in "
                            f"{', '.join(args.demo_csv)}: no baseline")
        baseline = length_baseline(test["length"].to_numpy(), test["return"].to_numpy())
        where = f"{len(test)} test demos"
    elif {"baseline_pearson", "baseline_spearman"} <= set(sel.columns):
        baseline = (float(np.nanmean(sel["baseline_pearson"])), float(np.nanmean(sel["baseline_spearman"])))
        where = "mean over the runs' test demos"
    else:
        baseline = None
        where = "none"
    out = args.out or f"figures/correlations_{args.env_name}_{args.distribution_mode}.png"
    title = (f"{args.env_name} ({args.distribution_mode}{', sequential' if args.sequential else ''}): "
             f"learned reward vs true return on unseen levels")
    path = plot_correlations(sel, out, title=title, baseline=baseline)
    summary = correlation_summary(sel)
    if baseline is not None:
        log.info("episode-length baseline (%s): pearson %.3f spearman %.3f", where, *baseline)
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    log.info("wrote %s", path)
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
