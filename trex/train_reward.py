"""Learn a reward network from demos ranked by return (T-REX, Brown et al. 2019,
arXiv 1904.06387), with the original project's flags, defaults and procedure.

    python -m trex.train_reward --env_name starpilot --num_dems 12 --demo_csv demos/demo_infos.csv

Outputs: a row in ``<save_dir>/rm_infos[_<save_name>].csv``; the model
``<save_dir>/model_files[_<save_name>]/<rm_id>.safetensors`` (weights + metadata); the run
directory ``<log_dir>/<rm_id>/<run_id>/`` with ``config.json``, ``train_log.csv`` (one row per
epoch) and ``log.txt``. The rm_id comes from the random seed as in the original project (``123_4567``).
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from trex.common.cli import (
    add_config_flag,
    cli_entry,
    nonnegative_int,
    parse_args,
    positive_float,
    positive_int,
    str2bool,
)
from trex.common.errors import UserError
from trex.common.files import drop_csv_rows
from trex.common.runs import fault_point

log = logging.getLogger("trex.train_reward")

#: the test metrics of trex.reward.metrics.reward_metrics written to rm_infos (with intervals)
RESULT_METRICS: tuple[str, ...] = tuple(
    f"{name}{suffix}"
    for name in (
        "pearson",
        "spearman",
        "baseline_pearson",
        "baseline_spearman",
        "partial",
        "window_pearson",
    )
    for suffix in ("", "_lo", "_hi")
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trex-train-reward",
        description="Train a T-REX reward model from ranked demos (the original project's procedure, "
        "batched and fast).",
    )
    add_config_flag(p)
    p.add_argument("--env_name", default="fruitbot")
    p.add_argument(
        "--distribution_mode",
        default="easy",
        choices=["easy", "hard", "exploration", "memory", "extreme"],
    )
    p.add_argument(
        "--seed",
        type=nonnegative_int,
        default=None,
        help="random seed (default: a random 7-digit seed); the rm_id is derived from it",
    )
    p.add_argument(
        "--sequential",
        type=nonnegative_int,
        default=0,
        help="use demos with this 'sequential' value (0 = not sequential)",
    )
    p.add_argument(
        "--num_dems", type=positive_int, default=12, help="number of demonstrations to train on"
    )
    p.add_argument(
        "--max_return",
        type=positive_float,
        default=1.0,
        help="maximum return of the chosen demos as a fraction of the available return range",
    )
    p.add_argument(
        "--num_snippets",
        type=positive_int,
        default=50000,
        help="number of training snippet pairs to sample",
    )
    p.add_argument(
        "--min_snippet_length",
        type=positive_int,
        default=20,
        help="min length of a snippet (demos must be longer)",
    )
    p.add_argument(
        "--max_snippet_length", type=positive_int, default=100, help="max length of a snippet"
    )
    p.add_argument(
        "--epoch_size",
        type=positive_int,
        default=1000,
        help="training pairs between two evaluations",
    )
    p.add_argument(
        "--max_num_epochs", type=positive_int, default=50, help="maximum number of epochs"
    )
    p.add_argument(
        "--patience",
        type=positive_int,
        default=10,
        help="early stopping patience (epochs without a better --select_by score)",
    )
    p.add_argument(
        "--select_by",
        default="val_acc",
        help="which epoch's weights are kept: val_acc (the best validation accuracy, the "
        "seed), val_loss (the lowest validation loss: a smoother score than accuracy "
        "on a few validation demos), or last (no early stopping; the final epoch)",
    )
    p.add_argument(
        "--lr", type=positive_float, default=5e-5, help="reward model learning rate (Adam)"
    )
    p.add_argument(
        "--lam_l1", type=float, default=0.001, help="L1 penalty on the absolute per-frame rewards"
    )
    p.add_argument("--weight_decay", type=float, default=0.01, help="Adam weight decay")
    p.add_argument(
        "--output_abs", action="store_true", help="take the absolute value of the reward output"
    )
    p.add_argument(
        "--use_snippet_rewards",
        action="store_true",
        help="label pairs by the snippets' true rewards instead of the demos' returns",
    )
    p.add_argument(
        "--use_clip_heuristic",
        type=str2bool,
        default=True,
        help="the better demo's snippet starts no earlier than the worse one's",
    )
    # variants of the network and its input (the defaults are the original project's)
    p.add_argument(
        "--frame_stack",
        type=int,
        default=1,
        help="frames per network input: frame t and the K-1 before it in its demo/episode "
        "on the channel axis, the first frame repeated before the start (as in DQN, "
        "Mnih et al. 2015); used alike in training, evaluation and PPO on the "
        "learned reward (1 = each frame alone, as upstream)",
    )
    p.add_argument(
        "--scale_frames",
        action="store_true",
        help="divide the network's input by 255 (upstream feeds raw 0..255 pixel values)",
    )
    p.add_argument(
        "--augment",
        default="none",
        help="training-only input augmentation: none, or shift = random shift by up to 4 "
        "pixels with edge-replicated padding, one shift per demo and batch (RAD, "
        "Laskin et al. 2020, arXiv 2004.14990; DrAC, Raileanu et al. 2020, "
        "arXiv 2006.12862)",
    )
    p.add_argument(
        "--architecture",
        default="seed_cnn",
        help="reward network: seed_cnn (the original project's small CNN) or impala (the "
        "IMPALA CNN encoder, Espeholt et al. 2018, arXiv 1802.01561, as in Procgen's "
        "PPO, with a linear reward head)",
    )
    p.add_argument(
        "--ensemble",
        type=int,
        default=1,
        help="train K reward networks together (stacked parameters, one call for all; "
        "they differ by init, each gets the T-REX loss on the same pairs); the "
        "reward is their mean and the members' disagreement on test-demo returns is "
        "reported (ensemble_spread); 1 = a single network",
    )
    p.add_argument(
        "--rank_by",
        choices=("return", "noise", "checkpoint"),
        default="return",
        help="what ranks the demos: their true return (T-REX), or reward-free (D-REX, "
        "Brown et al. 2019): less epsilon-greedy noise is better (noise), more "
        "demonstrator training steps are better (checkpoint); then the true reward "
        "of the training demos is never read",
    )
    p.add_argument(
        "--start_level",
        type=nonnegative_int,
        default=None,
        help="use training demos of the level pool starting here (default: any)",
    )
    p.add_argument(
        "--num_levels",
        type=nonnegative_int,
        default=None,
        help="use training demos of a pool of this many levels (default: any)",
    )
    p.add_argument(
        "--use_backgrounds",
        type=str2bool,
        default=None,
        help="use training demos recorded with (true) or without (false) backgrounds; "
        "test demos must match (default: any)",
    )
    p.add_argument(
        "--mix_pools",
        action="store_true",
        help="allow training demos from several level pools (refused by default)",
    )
    p.add_argument(
        "--window",
        type=positive_int,
        default=50,
        help="frames per window of the fixed-window correlation",
    )
    p.add_argument(
        "--num_bootstrap",
        type=positive_int,
        default=1000,
        help="bootstrap resamples (over test demos) for the 95%% intervals",
    )
    p.add_argument("--log_dir", default="LOGS/RM_LOGS", help="training logs directory")
    p.add_argument(
        "--demo_csv",
        nargs="+",
        default=["demos/demo_infos.csv"],
        help="demo index CSV(s) (combined)",
    )
    p.add_argument(
        "--save_dir", default="reward_models", help="where the models and rm_infos CSV go"
    )
    p.add_argument(
        "--save_name",
        default=None,
        help="suffix: rm_infos_<save_name>.csv and model_files_<save_name>/",
    )
    # ours (not upstream)
    p.add_argument(
        "--batch_size",
        type=positive_int,
        default=64,
        help="snippet pairs per optimizer step (upstream: 1); every distinct frame of a "
        "batch goes through the network once",
    )
    p.add_argument(
        "--lr_scaling",
        choices=("sqrt", "none"),
        default="sqrt",
        help="sqrt: Adam's step size is lr * sqrt(batch_size) (square-root scaling rule, "
        "Malladi et al. 2022), so --lr keeps the original project's per-pair meaning; none: lr as given",
    )
    p.add_argument(
        "--max_batch_frames",
        type=positive_int,
        default=256,
        help="most distinct frames in one training pass (~0.9 MB of activations each for "
        "the upstream CNN, more for impala, K times that for an --ensemble of K); larger "
        "batches go through in chunks, with exact gradients and one extra forward. "
        "256 (measured on 20 real starpilot demos: peak RSS 0.98 GB instead of 1.58 GB "
        "with 1024, at the same speed)",
    )
    p.add_argument(
        "--num_val_snippets",
        type=positive_int,
        default=1000,
        help="validation pairs (upstream: 1000)",
    )
    p.add_argument(
        "--num_test_snippets", type=positive_int, default=1000, help="test pairs (upstream: 1000)"
    )
    p.add_argument(
        "--max_test_demos",
        type=positive_int,
        default=100,
        help="test demos evaluated every epoch (a random subset; upstream: the first 100); "
        "the final correlations use all test demos",
    )
    p.add_argument(
        "--precision",
        choices=("auto", "bf16", "fp32"),
        default="auto",
        help="auto/bf16: channels_last + bf16 autocast where the hardware has it "
        "(the fast path); fp32: plain fp32",
    )
    p.add_argument(
        "--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1 ..."
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing model file with the same rm_id",
    )
    return p


def _check_csv_header(path: Path, columns: Sequence[str]) -> None:
    """UserError, before any training, when an existing rm_infos CSV lacks some of our
    columns (its rows could not take ours: e.g. one written before ``variant`` existed)."""
    import csv

    if not path.is_file() or path.stat().st_size == 0:
        return
    with path.open(newline="") as f:
        header = next(csv.reader(f), [])
    missing = [c for c in columns if c not in header]
    if missing:
        raise UserError(
            f"{path} was written by an older version (no column(s) {', '.join(missing)}): "
            "use another --save_name or --save_dir, or add the columns to it"
        )


#: flags that do not change which model a run makes (where things go, how verbose)
_NOT_IDENTITY = {"config", "overwrite", "log_dir", "save_dir", "save_name", "device", "precision"}


def finished_row(
    rm_csv: Path, rm_id: str, model_path: Path, args: argparse.Namespace
) -> dict | None:
    """The rm_infos row of this run if it already finished (row and model file there), else
    None. UserError if ``rm_id`` was made by a different run (other flags, same seed)."""
    from trex.reward.model_file import read_metadata
    from trex.reward.registry import read_rm_infos

    if not rm_csv.is_file() or rm_csv.stat().st_size == 0:
        return None
    rows = read_rm_infos(rm_csv)
    rows = rows[rows["rm_id"] == rm_id]
    if rows.empty:
        return None
    if not model_path.is_file():
        raise UserError(
            f"{rm_csv} lists rm_id {rm_id} but {model_path} is missing; pass --overwrite "
            f"to train it again"
        )
    theirs = read_metadata(model_path).get("training", {})
    ours = {k: v for k, v in vars(args).items() if k not in _NOT_IDENTITY}
    differ = sorted(k for k, v in ours.items() if k in theirs and theirs[k] != v)
    if differ:
        raise UserError(
            f"reward model {model_path} (rm_id {rm_id}, seed {args.seed}) was trained with "
            f"other {', '.join(differ[:5])}; pass another --seed or --save_name, or --overwrite"
        )
    return {
        k: (None if isinstance(v, float) and v != v else v)
        for k, v in rows.iloc[-1].to_dict().items()
    }


def _run_dir(log_dir: str, rm_id: str) -> Path:
    """``<log_dir>/<rm_id>/<YYYYmmdd_HHMMSS>`` (the original project's run id), made unique."""
    base = Path(log_dir) / rm_id
    stamp = time.strftime("%Y%m%d_%H%M%S")
    for k in range(1000):
        d = base / (stamp if k == 0 else f"{stamp}_{k}")
        try:
            d.mkdir(parents=True, exist_ok=False)
            return d
        except FileExistsError:
            continue
    raise UserError(f"cannot create a run directory under {base}")


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    from trex.common.cli import setup_logging

    setup_logging()
    t_start = time.perf_counter()

    import numpy as np
    import pandas as pd

    from trex.common.device import pick_device, use_bf16
    from trex.common.envs import check_env_name
    from trex.common.files import append_csv_rows, write_text_atomic
    from trex.common.runs import seed_everything, write_run_config
    from trex.reward.model_file import MODEL_SUFFIX, save_reward_model
    from trex.reward.nets import RM_COLUMNS, prepare_net
    from trex.reward.registry import model_dir_name, rm_csv_name, rm_id_from_seed
    from trex.reward.training import DemoSpec, choose_demos, fit_reward_model
    from trex.reward.trex import TrexConfig
    from trex.reward.variants import check_variant

    check_env_name(args.env_name)
    if args.min_snippet_length >= args.max_snippet_length:
        raise UserError(
            f"--min_snippet_length ({args.min_snippet_length}) must be smaller than "
            f"--max_snippet_length ({args.max_snippet_length})"
        )
    if args.lam_l1 < 0 or args.weight_decay < 0:
        raise UserError("--lam_l1 and --weight_decay must be >= 0")
    if args.save_name is not None and (
        not args.save_name or any(c in args.save_name for c in "/\\")
    ):
        raise UserError(f"--save_name must be a plain name, got {args.save_name!r}")
    if args.use_snippet_rewards and args.rank_by != "return":
        raise UserError(
            "--use_snippet_rewards labels pairs by the true reward: it needs --rank_by return"
        )
    check_variant(
        architecture=args.architecture,
        frame_stack=args.frame_stack,
        augment=args.augment,
        ensemble=args.ensemble,
        select_by=args.select_by,
    )
    if args.seed is None:
        args.seed = random.SystemRandom().randint(
            10**6, 10**7 - 1
        )  # the original project's 7-digit seeds
    rm_id = rm_id_from_seed(args.seed)
    seed_everything(args.seed)
    rng = np.random.default_rng(args.seed)
    device = pick_device(args.device)
    bf16 = use_bf16(args.precision, device)
    channels_last = args.precision != "fp32"
    log.info(
        "reward model id %s (seed %d), device %s, %s%s",
        rm_id,
        args.seed,
        device,
        "bf16 autocast" if bf16 else "fp32",
        " + channels_last" if channels_last else "",
    )

    # ---- everything that can fail on bad input happens before anything is written
    save_dir = Path(args.save_dir)
    model_path = save_dir / model_dir_name(args.save_name) / f"{rm_id}{MODEL_SUFFIX}"
    rm_csv = save_dir / rm_csv_name(args.save_name)
    _check_csv_header(rm_csv, RM_COLUMNS)
    # the rm_infos row is the run's commit point: a row means done, a model without one is
    # what a killed attempt left (it is replaced)
    done = None if args.overwrite else finished_row(rm_csv, rm_id, model_path, args)
    if done is not None:
        log.info(
            "reward model %s is already complete (%s has its row): nothing to do", rm_id, rm_csv
        )
        from trex.sweeps.stages import write_stage_result

        write_stage_result(**done)
        return 0
    if model_path.exists() and not args.overwrite:
        log.warning(
            "%s has no row in %s (an interrupted run): it will be replaced", model_path, rm_csv
        )
    spec = DemoSpec(
        demo_csv=args.demo_csv,
        env_name=args.env_name,
        distribution_mode=args.distribution_mode,
        sequential=args.sequential,
        num_dems=args.num_dems,
        max_return=args.max_return,
        rank_by=args.rank_by,
        min_length=args.min_snippet_length + 1,  # upstream: strictly longer
        start_level=args.start_level,
        num_levels=args.num_levels,
        use_backgrounds=args.use_backgrounds,
        mix_pools=args.mix_pools,
        max_test_demos=args.max_test_demos,
    )
    choice = choose_demos(spec, rng)
    demos, test = choice.load(args.rank_by)
    cfg = TrexConfig(
        num_snippets=args.num_snippets,
        min_snippet_length=args.min_snippet_length,
        max_snippet_length=args.max_snippet_length,
        epoch_size=args.epoch_size,
        max_num_epochs=args.max_num_epochs,
        patience=args.patience,
        lr=args.lr,
        lam_l1=args.lam_l1,
        weight_decay=args.weight_decay,
        output_abs=args.output_abs,
        use_snippet_rewards=args.use_snippet_rewards,
        use_clip_heuristic=args.use_clip_heuristic,
        select_by=args.select_by,
        batch_size=args.batch_size,
        lr_scaling=args.lr_scaling,
        num_val_snippets=args.num_val_snippets,
        num_test_snippets=args.num_test_snippets,
        max_batch_frames=args.max_batch_frames,
        architecture=args.architecture,
        frame_stack=args.frame_stack,
        scale_frames=args.scale_frames,
        augment=args.augment,
        ensemble=args.ensemble,
    )

    # ---- the run directory (the original project's layout) and training
    run_dir = _run_dir(args.log_dir, rm_id)
    setup_logging(run_dir / "log.txt")
    write_run_config(
        run_dir / "config.json",
        args,
        rm_id=rm_id,
        run_dir=str(run_dir),
        model_file=str(model_path),
        chosen_demos=choice.chosen_ids,
        train_demo_ids=choice.train_ids,
        val_demo_ids=choice.val_ids,
        epoch_test_demo_ids=choice.epoch_test_ids,
        pool=choice.pool,
    )
    log.info("run directory %s", run_dir)
    train_log = run_dir / "train_log.csv"
    rows: list[dict] = []

    def on_epoch(row: dict) -> None:
        rows.append(row)
        write_text_atomic(train_log, pd.DataFrame(rows).to_csv(index=False, lineterminator="\n"))

    net = prepare_net(cfg.make_net(), device, channels_last)
    fit = fit_reward_model(
        net,
        choice,
        demos,
        test,
        cfg,
        rng,
        device,
        bf16,
        channels_last,
        window=args.window,
        num_bootstrap=args.num_bootstrap,
        metrics_seed=args.seed,
        on_epoch=on_epoch,
    )
    best, m = fit.result.best, fit.metrics

    # ---- outputs: model file (atomic), then the CSV row (locked append)
    results = {
        "train_acc": best["train_acc"],
        "val_acc": best["val_acc"],
        "test_acc": best["test_acc"],
        **{k: m[k] for k in RESULT_METRICS},
        "gt_snippet_acc": fit.gt_snippet_acc,
        "n_test_demos": m["n_demos"],
        "best_epoch": fit.result.best_epoch,
        "epochs": fit.result.epochs,
        "n_train_levels": choice.n_train_levels,
        "rank_by": args.rank_by,
        "variant": cfg.variant,
        "ensemble_spread": m["ensemble_spread"],
        "ensemble_spread_rel": m["ensemble_spread_rel"],
    }
    training = {k: v for k, v in vars(args).items() if k not in ("config",)}
    save_reward_model(
        model_path,
        net,
        env_name=args.env_name,
        mode=args.distribution_mode,
        num_dems=args.num_dems,
        seed=args.seed,
        sequential=args.sequential,
        rm_id=rm_id,
        training=training,
        results=results,
        extra={
            **choice.pool,
            "rank_by": args.rank_by,
            "variant": cfg.variant,
            "n_train_levels": choice.n_train_levels,
            "train_demo_ids": choice.train_ids,
            "val_demo_ids": choice.val_ids,
        },
    )
    row = {
        "rm_id": rm_id,
        "method": "trex" if args.rank_by == "return" else f"drex-{args.rank_by}",
        "env_name": args.env_name,
        "mode": args.distribution_mode,
        "num_dems": args.num_dems,
        "max_return": fit.max_return,
        "max_length": fit.max_length,
        "sequential": args.sequential,
        "train_acc": best["train_acc"],
        "val_acc": best["val_acc"],
        "test_acc": best["test_acc"],
        "pearson": m["pearson"],
        "spearman": m["spearman"],
        "seed": args.seed,
        "n_test_demos": m["n_demos"],
        "baseline_pearson": m["baseline_pearson"],
        "baseline_spearman": m["baseline_spearman"],
        "gt_snippet_acc": fit.gt_snippet_acc,
        "wall_s": round(time.perf_counter() - t_start, 2),
        "max_return_frac": args.max_return,
        "epochs": fit.result.epochs,
        "best_epoch": fit.result.best_epoch,
        "precision": "bf16" if bf16 else "fp32",
        "device": str(device),
        "model_file": str(model_path.relative_to(save_dir)),
        "run_dir": str(run_dir),
        "rank_by": args.rank_by,
        **choice.pool,
        "n_train_levels": choice.n_train_levels,
        **{
            k: m[k]
            for k in RESULT_METRICS
            if k not in ("pearson", "spearman", "baseline_pearson", "baseline_spearman")
        },
        "window": args.window,
        "n_windows": m["n_windows"],
        "variant": cfg.variant,
        "ensemble_spread": m["ensemble_spread"],
        "ensemble_spread_rel": m["ensemble_spread_rel"],
    }
    fault_point("reward_between_model_and_row")
    if args.overwrite:
        drop_csv_rows(rm_csv, "rm_id", {rm_id})
    append_csv_rows(rm_csv, [row], columns=RM_COLUMNS, unique="rm_id")
    log.info("saved %s and a row in %s", model_path, rm_csv)
    from trex.sweeps.stages import write_stage_result

    write_stage_result(**row)  # run_experiments' manifest (no-op outside a sweep)
    shown = (
        "rm_id",
        "variant",
        "num_dems",
        "val_acc",
        "test_acc",
        "pearson",
        "baseline_pearson",
        "partial",
        "window_pearson",
        "n_train_levels",
        "wall_s",
    )
    table = pd.DataFrame([{k: row[k] for k in shown}])
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
