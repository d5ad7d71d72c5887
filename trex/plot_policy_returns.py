"""Compare PPO runs on different rewards: true return against steps, with the demos' range.

    python -m trex.plot_policy_returns --runs experts/starpilot/easy experts/starpilot/easy/rm_XXXX \
        experts/starpilot/easy/constant_1 --demo_csv demos/demo_infos.csv \
        --test_csv results/test_policy.csv --out figures/policy_returns.png

Runs with the same label (seeds of one reward) are drawn as their mean with their range;
``--reference_train/--reference_test`` add published curves (e.g. openai/train-procgen's).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from trex.common.cli import add_config_flag, cli_entry, parse_args, setup_logging
from trex.common.errors import UserError

log = logging.getLogger("trex.plot_policy_returns")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trex-plot-policy-returns",
        description="True return vs steps for several PPO runs (PNG).",
    )
    add_config_flag(p)
    p.add_argument(
        "--runs",
        nargs="+",
        required=True,
        help="train_policy run directories (or their progress.csv files)",
    )
    p.add_argument(
        "--labels", nargs="+", default=None, help="one label per run (default: from config.json)"
    )
    p.add_argument(
        "--demo_csv",
        nargs="+",
        default=None,
        help="demo index CSV(s): draw the demos' return range",
    )
    p.add_argument("--env_name", default=None, help="filter the demos (default: all in the CSVs)")
    p.add_argument("--distribution_mode", default=None)
    p.add_argument(
        "--set_name", default="train", choices=("train", "test"), help="which demos to draw"
    )
    p.add_argument(
        "--test_csv",
        default=None,
        help="test_policy CSV: mark each run's checkpoints' held-out return (and a random policy's)",
    )
    p.add_argument(
        "--test_level_set",
        default="test",
        choices=("train", "test"),
        help="which test_policy level set to mark (test = unseen levels)",
    )
    p.add_argument(
        "--reference_train",
        nargs="+",
        default=None,
        metavar="CSV",
        help="published curves on training levels in baselines' progress-CSV format, drawn "
        "as one mean line (e.g. openai/train-procgen's "
        "train_procgen/results/easy-200-run*/progress-coinrun-train.csv)",
    )
    p.add_argument(
        "--reference_test",
        nargs="+",
        default=None,
        metavar="CSV",
        help="the same on unseen levels (progress-<game>-test.csv)",
    )
    p.add_argument(
        "--reference_name",
        default="openai/train-procgen",
        help="who published the reference curves (legend)",
    )
    p.add_argument("--title", default="")
    p.add_argument("--out", default="figures/policy_returns.png")
    return p


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    setup_logging()
    from trex.plotting.policy_returns import plot_policy_returns, read_curve

    if args.labels is not None and len(args.labels) != len(args.runs):
        raise UserError(f"--labels has {len(args.labels)} entries for {len(args.runs)} runs")
    labels = args.labels or [None] * len(args.runs)
    all_curves = []
    for run, label in zip(args.runs, labels):
        curve = read_curve(run, label)
        if len(curve.timesteps) == 0:
            log.warning("%s: no finished episode yet, left out of the figure", run)
            curve = None
        all_curves.append(curve)
    curves = [c for c in all_curves if c is not None]
    if not curves:
        raise UserError("none of the runs has finished an episode yet")
    demo_returns = None
    if args.demo_csv:
        from trex.demos.store import DemoIndex

        index = DemoIndex.read(args.demo_csv).filter(
            env_name=args.env_name, mode=args.distribution_mode, set_name=args.set_name
        )
        if len(index) == 0:
            raise UserError(f"no {args.set_name} demos match in {', '.join(args.demo_csv)}")
        demo_returns = index.df["return"].to_numpy(float)
    held_out, random_score = None, None
    if args.test_csv:
        from trex.plotting.policy_returns import read_held_out_scores

        kept_runs = [run for run, curve in zip(args.runs, all_curves) if curve is not None]
        held_out, random_score = read_held_out_scores(
            args.test_csv, kept_runs, args.test_level_set, args.env_name
        )
        if not any(held_out):
            log.warning(
                "%s has no %s-level rows for checkpoints of these runs",
                args.test_csv,
                args.test_level_set,
            )
    from trex.plotting.policy_returns import read_reference_curves

    references = [
        read_reference_curves(paths, f"{args.reference_name}, {levels}")
        for paths, levels in (
            (args.reference_train, "training levels"),
            (args.reference_test, "unseen levels"),
        )
        if paths
    ]
    out = plot_policy_returns(
        curves,
        args.out,
        demo_returns,
        args.title,
        held_out,
        random_score,
        "unseen levels" if args.test_level_set == "test" else "training levels",
        references,
    )
    log.info("wrote %s", out)
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
