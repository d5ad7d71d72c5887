"""Plot true against predicted cumulative reward along randomly chosen held-out demos.

    python -m trex.plot_reward_predictions --env_name starpilot --rm_id 123_4567 \
        --reward_csv reward_models/rm_infos.csv --demo_csv demos/demo_infos.csv

Predicted rewards are scaled to the true returns by one constant (least squares over the
shown demos); the title gives the model's id, game, number of demos and test correlations.
Writes a PNG; never opens a window.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from trex.common.cli import (
    add_config_flag,
    cli_entry,
    nonnegative_int,
    parse_args,
    positive_int,
)
from trex.common.errors import UserError

log = logging.getLogger("trex.plot_reward_predictions")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trex-plot-reward-predictions",
        description="True vs predicted cumulative reward on held-out demos (PNG).",
    )
    add_config_flag(p)
    p.add_argument("--env_name", default="starpilot")
    p.add_argument("--mode", default="easy", help="distribution mode")
    p.add_argument("--sequential", type=nonnegative_int, default=0)
    p.add_argument(
        "--demo_csv", nargs="+", default=["demos/demo_infos.csv"], help="demo index CSV(s)"
    )
    p.add_argument(
        "--reward_csv",
        default="reward_models/rm_infos.csv",
        help="the rm_infos CSV listing the reward model",
    )
    p.add_argument("--rm_id", required=True, help="reward model id")
    p.add_argument("--num_demos", type=positive_int, default=12, help="held-out demos to show")
    p.add_argument(
        "--min_length",
        type=nonnegative_int,
        default=100,
        help="only demos longer than this (upstream: 100)",
    )
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed for choosing the demos")
    p.add_argument(
        "--out", default=None, help="PNG to write (default figures/reward_predictions_<rm_id>.png)"
    )
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto")
    p.add_argument("--device", default="auto")
    return p


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    from trex.common.cli import setup_logging

    setup_logging()
    import numpy as np

    from trex.demos.store import DemoIndex
    from trex.plotting.correlations import DemoPrediction, plot_reward_predictions
    from trex.reward.metrics import correlations
    from trex.reward.model_file import load_reward_function
    from trex.reward.registry import lookup_rm

    row, model_path = lookup_rm(args.rm_id, args.reward_csv)
    reward_fn = load_reward_function(
        model_path,
        env_name=args.env_name,
        mode=args.mode,
        device=args.device,
        precision=args.precision,
    )
    held_out = DemoIndex.read(args.demo_csv).filter(
        env_name=args.env_name,
        mode=args.mode,
        set_name="test",
        sequential=args.sequential,
        min_length=args.min_length + 1,
    )
    if len(held_out) == 0:
        raise UserError(
            f"no test demos of {args.env_name} {args.mode} sequential={args.sequential} "
            f"longer than {args.min_length} steps in {', '.join(args.demo_csv)}"
        )
    rng = np.random.default_rng(args.seed)
    ids = held_out.ids()
    pick = [
        ids[i]
        for i in sorted(rng.choice(len(ids), size=min(args.num_demos, len(ids)), replace=False))
    ]
    preds = [
        DemoPrediction(d.demo_id, d.rewards, reward_fn(d.observations))
        for d in held_out.iter_demos(pick)
    ]
    pear, spear = correlations(
        [p.pred_rewards.sum() for p in preds], [p.true_rewards.sum() for p in preds]
    )
    num_dems = row.get("num_dems", reward_fn.meta.get("num_dems"))
    rm_pearson = float(row.get("pearson", float("nan")))
    rm_spearman = float(row.get("spearman", float("nan")))
    title = (
        f"reward model {args.rm_id}: {args.env_name}, {args.mode}, "
        f"{'seq' if args.sequential else 'non-seq'}; {num_dems} demos; test Pearson "
        f"{rm_pearson:.2f}, Spearman {rm_spearman:.2f}"
    )
    out = args.out or f"figures/reward_predictions_{args.rm_id}.png"
    path = plot_reward_predictions(preds, out, title=title)
    log.info(
        "%d demos shown (Pearson %.3f, Spearman %.3f on them); wrote %s",
        len(preds),
        pear,
        spear,
        path,
    )
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
