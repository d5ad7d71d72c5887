"""Plot true against predicted cumulative reward along randomly chosen held-out demos.

    python -m trex.plot_reward_predictions --env_name starpilot --rm_id 123_4567 \
        --reward_csv reward_models/rm_infos.csv --demo_csv demos/demo_infos.csv

Predicted rewards are scaled to the true returns by one constant (least squares over the
shown demos); the title gives the model's id, game, number of demos and test correlations.
Writes a PNG; never opens a window.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence

from trex.common.cli import cli_entry, nonnegative_int, positive_int, setup_logging
from trex.common.config import Config, config_parser, flag, parse_config
from trex.common.errors import UserError

log = logging.getLogger("trex.plot_reward_predictions")


@dataclasses.dataclass
class PlotRewardPredictionsConfig(Config):
    """The options of ``plot_reward_predictions`` (``rm_id`` must be given)."""

    env_name: str = flag("starpilot", help=None)
    mode: str = flag("easy", help="distribution mode")
    sequential: int = flag(0, type=nonnegative_int, help=None)
    demo_csv: list[str] = flag(["demos/demo_infos.csv"], help="demo index CSV(s)")
    reward_csv: str = flag(
        "reward_models/rm_infos.csv", help="the rm_infos CSV listing the reward model"
    )
    rm_id: str | None = flag(required=True, help="reward model id")
    num_demos: int = flag(12, type=positive_int, help="held-out demos to show")
    min_length: int = flag(
        100, type=nonnegative_int, help="only demos longer than this (upstream: 100)"
    )
    seed: int = flag(0, type=nonnegative_int, help="seed for choosing the demos")
    out: str | None = flag(
        None, help="PNG to write (default figures/reward_predictions_<rm_id>.png)"
    )
    precision: str = flag("auto", choices=("auto", "bf16", "fp32"), help=None)
    device: str = flag("auto", help=None)

    def check(self) -> None:
        super().check()
        self.check_flags()

    @property
    def out_path(self) -> str:
        return self.out or f"figures/reward_predictions_{self.rm_id}.png"


def build_parser() -> argparse.ArgumentParser:
    return config_parser(
        PlotRewardPredictionsConfig,
        prog="trex-plot-reward-predictions",
        description="True vs predicted cumulative reward on held-out demos (PNG).",
    )


def held_out_predictions(cfg: PlotRewardPredictionsConfig, reward_fn) -> list:
    """:class:`~trex.plotting.correlations.DemoPrediction` of ``cfg.num_demos`` test demos
    longer than ``cfg.min_length``, chosen at random (``cfg.seed``), in index order."""
    import numpy as np

    from trex.demos.store import DemoIndex
    from trex.plotting.correlations import DemoPrediction

    held_out = DemoIndex.read(cfg.demo_csv).filter(
        env_name=cfg.env_name,
        mode=cfg.mode,
        set_name="test",
        sequential=cfg.sequential,
        min_length=cfg.min_length + 1,
    )
    if len(held_out) == 0:
        raise UserError(
            f"no test demos of {cfg.env_name} {cfg.mode} sequential={cfg.sequential} "
            f"longer than {cfg.min_length} steps in {', '.join(cfg.demo_csv)}"
        )
    rng = np.random.default_rng(cfg.seed)
    ids = held_out.ids()
    size = min(cfg.num_demos, len(ids))
    pick = [ids[i] for i in sorted(rng.choice(len(ids), size=size, replace=False))]
    return [
        DemoPrediction(d.demo_id, d.rewards, reward_fn(d.observations))
        for d in held_out.iter_demos(pick)
    ]


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_config(PlotRewardPredictionsConfig, argv, build_parser())
    setup_logging()
    from trex.plotting.correlations import plot_reward_predictions
    from trex.reward.metrics import correlations
    from trex.reward.model_file import load_reward_function
    from trex.reward.registry import lookup_rm

    row, model_path = lookup_rm(cfg.rm_id, cfg.reward_csv)
    reward_fn = load_reward_function(
        model_path,
        env_name=cfg.env_name,
        mode=cfg.mode,
        device=cfg.device,
        precision=cfg.precision,
    )
    preds = held_out_predictions(cfg, reward_fn)
    pear, spear = correlations(
        [p.pred_rewards.sum() for p in preds], [p.true_rewards.sum() for p in preds]
    )
    num_dems = row.get("num_dems", reward_fn.meta.get("num_dems"))
    rm_pearson = float(row.get("pearson", float("nan")))
    rm_spearman = float(row.get("spearman", float("nan")))
    title = (
        f"reward model {cfg.rm_id}: {cfg.env_name}, {cfg.mode}, "
        f"{'seq' if cfg.sequential else 'non-seq'}; {num_dems} demos; test Pearson "
        f"{rm_pearson:.2f}, Spearman {rm_spearman:.2f}"
    )
    path = plot_reward_predictions(preds, cfg.out_path, title=title)
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
