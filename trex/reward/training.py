"""One reward-learning run, from a demo index to a trained model with its results.

:func:`train_reward_model` is ``python -m trex.train_reward`` from Python: it takes a
:class:`~trex.reward.config.TrainRewardConfig` and writes the same files. Its steps, each
usable alone (``eval_reward`` uses the last ones):

1. :func:`choose_demos`: the training demos of one level pool (refusing to mix pools
   silently), ranked by their true return or, reward-free (D-REX, Brown et al. 2019,
   arXiv 1907.03976), by the demonstrator's noise level or checkpoint age; ``num_dems`` of
   them spread over the ranking (the original project's selection), and the held-out test
   demos.
2. :func:`fit_reward_model`: T-REX training (:mod:`trex.reward.pairs`), then every
   metric of :func:`trex.reward.metrics.reward_metrics` on all test demos.
3. :func:`rm_infos_row`: the run's row of ``rm_infos.csv``; the model file's metadata is
   derived from it (:func:`model_metadata`).

With a ranking other than ``return`` the true reward of the training demos is never read:
not for labels, not for choosing demos, not for the split (tested: replacing every return
and reward by NaN gives the same model).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from trex.common.errors import UserError
from trex.demos.store import POOL_COLUMNS
from trex.reward.config import TrainRewardConfig
from trex.reward.demo_choice import DemoChoice, choose_demos
from trex.reward.evaluation import frame_predictions
from trex.reward.metrics import (
    DEFAULT_WINDOW,
    NUM_BOOTSTRAP,
    reward_metrics,
)
from trex.reward.pairs import DemoSet
from trex.reward.passes import frame_rewards
from trex.reward.trex import TrexConfig, TrexResult, make_data
from trex.reward.variants import ensemble_spread

if TYPE_CHECKING:
    from trex.reward.nets import RewardNet

log = logging.getLogger(__name__)

#: the test metrics of :func:`trex.reward.metrics.reward_metrics` in rm_infos (with intervals)
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
#: the rm_infos values a model file's ``results`` metadata repeats, in this order
RESULT_KEYS: tuple[str, ...] = (
    "train_acc",
    "val_acc",
    "test_acc",
    *RESULT_METRICS,
    "gt_snippet_acc",
    "n_test_demos",
    "best_epoch",
    "epochs",
    "n_train_levels",
    "rank_by",
    "variant",
    "ensemble_spread",
    "ensemble_spread_rel",
)
#: the rm_infos values a model file's metadata also holds at its top level
MODEL_EXTRA_KEYS: tuple[str, ...] = (*POOL_COLUMNS, "rank_by", "variant", "n_train_levels")


@dataclass
class RewardFit:
    """What :func:`fit_reward_model` returns: the trained net (best validation epoch), the
    training outcome and the test metrics (:func:`trex.reward.metrics.reward_metrics`)."""

    net: Any
    result: TrexResult
    metrics: dict[str, float]
    gt_snippet_acc: float
    max_return: float
    max_length: int


def fit_reward_model(
    net: Any,
    choice: DemoChoice,
    demos: DemoSet,
    test: DemoSet,
    cfg: TrexConfig,
    rng: np.random.Generator,
    device: Any,
    bf16: bool,
    channels_last: bool = True,
    window: int = DEFAULT_WINDOW,
    num_bootstrap: int = NUM_BOOTSTRAP,
    metrics_seed: int = 0,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> RewardFit:
    """Train ``net`` on the chosen demos (``demos``, ``test``: :meth:`DemoChoice.load`) with
    T-REX, then measure it on all test demos of the choice."""
    from trex.reward.trex import train_trex

    data = make_data(demos, test, cfg, rng, *choice.split())
    if demos.rank_keys is None:
        rets = demos.returns
        shown = (
            np.round(rets, 2).tolist()
            if len(rets) <= 20
            else f"{rets.min():g} .. {np.median(rets):g} (median) .. {rets.max():g}"
        )
        log.info(
            "chosen demos: returns %s, lengths %d..%d",
            shown,
            demos.lengths.min(),
            demos.lengths.max(),
        )
    else:
        log.info(
            "chosen demos, reward-free ranking keys %s, lengths %d..%d",
            sorted(set(np.round(demos.keys, 4).tolist())),
            demos.lengths.min(),
            demos.lengths.max(),
        )
    log.info(
        "%d training / %d validation demos, %.0f MB of frames; pairs: %d training, %d validation, "
        "%d test",
        len(data.train_demos),
        len(data.val_demos),
        demos.nbytes / 2**20,
        len(data.train_pairs),
        len(data.val_pairs),
        len(data.test_pairs or ()),
    )
    result = train_trex(net, data, cfg, rng, device, bf16, channels_last, on_epoch=on_epoch)
    log.info(
        "finished training: best validation accuracy %.4f at epoch %d of %d (%.1f s)",
        result.best["val_acc"],
        result.best_epoch,
        result.epochs,
        result.wall_s,
    )

    member_returns: list[np.ndarray] = []  # an ensemble's members' returns (M,) per test demo

    def reward_fn(frames: np.ndarray) -> np.ndarray:
        r = frame_rewards(net, frames, device, bf16, None, channels_last, members=True)  # (M, T)
        member_returns.append(r.sum(axis=1, dtype=np.float64))
        return r.mean(axis=0)

    in_memory = {
        d: (test.frames[a:b], test.rewards[a:b])
        for d, a, b in zip(test.ids, test.offsets[:-1], test.offsets[1:])
    }
    preds, true, offsets = frame_predictions(
        [reward_fn], choice.test_index, choice.test_index.ids(), in_memory
    )
    metrics = reward_metrics(preds[0], true, offsets, window, num_bootstrap, metrics_seed)
    metrics["ensemble_spread"], metrics["ensemble_spread_rel"] = (
        ensemble_spread(np.stack(member_returns, axis=1))
        if member_returns
        else (float("nan"), float("nan"))
    )
    if getattr(net, "ensemble_size", 1) > 1:
        log.info(
            "ensemble of %d: spread of the members' test-demo returns %.3g (mean std over "
            "members), %.3f relative to the spread between demos",
            net.ensemble_size,
            metrics["ensemble_spread"],
            metrics["ensemble_spread_rel"],
        )
    log.info(
        "all %d test demos: pearson %.3f [%.3f, %.3f], spearman %.3f; length baseline %.3f / %.3f; "
        "partial given length %.3f [%.3f, %.3f]; %d-frame windows %.3f [%.3f, %.3f]",
        metrics["n_demos"],
        metrics["pearson"],
        metrics["pearson_lo"],
        metrics["pearson_hi"],
        metrics["spearman"],
        metrics["baseline_pearson"],
        metrics["baseline_spearman"],
        metrics["partial"],
        metrics["partial_lo"],
        metrics["partial_hi"],
        window,
        metrics["window_pearson"],
        metrics["window_pearson_lo"],
        metrics["window_pearson_hi"],
    )
    return RewardFit(
        net,
        result,
        metrics,
        data.gt_snippet_acc,
        float(demos.returns.max()),
        int(demos.lengths.max()),
    )


# ----------------------------------------------------------------------------- a whole run


@dataclass
class RewardTrainingResult:
    """What :func:`train_reward_model` returns.

    Attributes:
        net: the trained reward network (its best epoch by ``select_by``), on the run's device.
        row: the run's ``rm_infos.csv`` row, every metric (:func:`rm_infos_row`).
        model_path: the ``.safetensors`` file written (weights + metadata).
        run_dir: ``<log_dir>/<rm_id>/<run_id>/`` with config.json, train_log.csv, log.txt.
        config: the run's config, its seed drawn if it was None.
        fit: the training outcome and test metrics (None when ``already_done``).
        already_done: the run had finished before (its row and model file were there): nothing
            was trained or written, ``net`` is the model file's and ``row`` the CSV's.
    """

    net: RewardNet
    row: dict[str, Any]
    model_path: Path
    run_dir: Path
    config: TrainRewardConfig
    fit: RewardFit | None = None
    already_done: bool = False

    @property
    def rm_id(self) -> str:
        return str(self.row["rm_id"])


def make_run_dir(log_dir: str | Path, rm_id: str) -> Path:
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


def rm_infos_row(
    cfg: TrainRewardConfig,
    fit: RewardFit,
    choice: DemoChoice,
    *,
    rm_id: str,
    model_file: str,
    run_dir: Path,
    device: Any,
    bf16: bool,
    wall_s: float,
) -> dict[str, Any]:
    """The rm_infos row of a finished run (the columns of :data:`trex.reward.nets.RM_COLUMNS`):
    the original project's columns first, then ours; ``cfg.seed`` must be set."""
    best, m = fit.result.best, fit.metrics
    return {
        "rm_id": rm_id,
        "method": "trex" if cfg.rank_by == "return" else f"drex-{cfg.rank_by}",
        "env_name": cfg.env_name,
        "mode": cfg.distribution_mode,
        "num_dems": cfg.num_dems,
        "max_return": fit.max_return,
        "max_length": fit.max_length,
        "sequential": cfg.sequential,
        "train_acc": best["train_acc"],
        "val_acc": best["val_acc"],
        "test_acc": best["test_acc"],
        "pearson": m["pearson"],
        "spearman": m["spearman"],
        "seed": cfg.seed,
        "n_test_demos": m["n_demos"],
        "baseline_pearson": m["baseline_pearson"],
        "baseline_spearman": m["baseline_spearman"],
        "gt_snippet_acc": fit.gt_snippet_acc,
        "wall_s": round(wall_s, 2),
        "max_return_frac": cfg.max_return,
        "epochs": fit.result.epochs,
        "best_epoch": fit.result.best_epoch,
        "precision": "bf16" if bf16 else "fp32",
        "device": str(device),
        "model_file": model_file,
        "run_dir": str(run_dir),
        "rank_by": cfg.rank_by,
        **choice.pool,
        "n_train_levels": choice.n_train_levels,
        **{k: m[k] for k in RESULT_METRICS},
        "window": cfg.window,
        "n_windows": m["n_windows"],
        "variant": cfg.trex_config().variant,
        "ensemble_spread": m["ensemble_spread"],
        "ensemble_spread_rel": m["ensemble_spread_rel"],
    }


def model_metadata(
    row: dict[str, Any], cfg: TrainRewardConfig, choice: DemoChoice
) -> dict[str, Any]:
    """The metadata keywords of :func:`trex.reward.model_file.save_reward_model` for a run's
    model file, derived from its rm_infos ``row``: what it is (game, mode, demos, seed, rm_id),
    ``training`` (every option of ``cfg``), ``results`` (:data:`RESULT_KEYS` of the row), the
    level pool and ranking, and the training/validation demo ids."""
    return {
        "env_name": row["env_name"],
        "mode": row["mode"],
        "num_dems": row["num_dems"],
        "seed": row["seed"],
        "sequential": row["sequential"],
        "rm_id": row["rm_id"],
        "training": cfg.to_dict(),
        "results": {k: row[k] for k in RESULT_KEYS},
        "extra": {
            **{k: row[k] for k in MODEL_EXTRA_KEYS},
            "train_demo_ids": choice.train_ids,
            "val_demo_ids": choice.val_ids,
        },
    }


def train_reward_model(cfg: TrainRewardConfig) -> RewardTrainingResult:
    """Train one reward model as ``python -m trex.train_reward`` does, writing the same files:
    the model ``<save_dir>/model_files[_<save_name>]/<rm_id>.safetensors``, its row in
    ``<save_dir>/rm_infos[_<save_name>].csv`` and the run directory
    ``<log_dir>/<rm_id>/<run_id>/`` (config.json, train_log.csv, log.txt).

    The rm_id comes from ``cfg.seed`` (a random 7-digit seed when None). The row is the run's
    commit point: with the row and model file there already, nothing is done (the result says
    ``already_done``); a model file without a row (an interrupted run) is replaced. Every
    check of bad input (:meth:`TrainRewardConfig.check`, the demos) runs before anything is
    written; UserError (one line) for each. Logging goes to stderr and the run's log.txt
    (:func:`trex.common.cli.setup_logging`), as for the stage.
    """
    from trex.common.cli import setup_logging
    from trex.common.device import pick_device, use_bf16
    from trex.common.files import append_csv_rows, drop_csv_rows, write_text_atomic
    from trex.common.runs import fault_point, seed_everything, write_run_config
    from trex.reward.model_file import MODEL_SUFFIX, load_reward_model, save_reward_model
    from trex.reward.nets import RM_COLUMNS, prepare_net
    from trex.reward.registry import (
        check_rm_csv_header,
        finished_row,
        model_dir_name,
        rm_csv_name,
        rm_id_from_seed,
    )

    t_start = time.perf_counter()
    cfg.check()
    if cfg.seed is None:  # the original project's 7-digit seeds
        cfg = dataclasses.replace(cfg, seed=random.SystemRandom().randint(10**6, 10**7 - 1))
    rm_id = rm_id_from_seed(cfg.seed)
    seed_everything(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = pick_device(cfg.device)
    bf16 = use_bf16(cfg.precision, device)
    channels_last = cfg.precision != "fp32"
    log.info(
        "reward model id %s (seed %d), device %s, %s%s",
        rm_id,
        cfg.seed,
        device,
        "bf16 autocast" if bf16 else "fp32",
        " + channels_last" if channels_last else "",
    )

    # ---- everything that can fail on bad input happens before anything is written
    save_dir = Path(cfg.save_dir)
    model_path = save_dir / model_dir_name(cfg.save_name) / f"{rm_id}{MODEL_SUFFIX}"
    rm_csv = save_dir / rm_csv_name(cfg.save_name)
    check_rm_csv_header(rm_csv, RM_COLUMNS)
    done = (
        None if cfg.overwrite else finished_row(rm_csv, rm_id, model_path, cfg.identity(), cfg.seed)
    )
    if done is not None:
        log.info(
            "reward model %s is already complete (%s has its row): nothing to do", rm_id, rm_csv
        )
        net, _ = load_reward_model(model_path, device, channels_last=channels_last)
        run_dir = Path(str(done.get("run_dir") or cfg.log_dir))
        return RewardTrainingResult(net, done, model_path, run_dir, cfg, already_done=True)
    if model_path.exists() and not cfg.overwrite:
        log.warning(
            "%s has no row in %s (an interrupted run): it will be replaced", model_path, rm_csv
        )
    choice = choose_demos(cfg.demo_spec(), rng)
    demos, test = choice.load(cfg.rank_by)
    trex_cfg = cfg.trex_config()

    # ---- the run directory (the original project's layout) and training
    run_dir = make_run_dir(cfg.log_dir, rm_id)
    setup_logging(run_dir / "log.txt")
    write_run_config(
        run_dir / "config.json",
        cfg.to_dict(),
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
    epochs: list[dict] = []

    def on_epoch(row: dict) -> None:
        epochs.append(row)
        write_text_atomic(train_log, pd.DataFrame(epochs).to_csv(index=False, lineterminator="\n"))

    net = prepare_net(trex_cfg.make_net(), device, channels_last)
    fit = fit_reward_model(
        net,
        choice,
        demos,
        test,
        trex_cfg,
        rng,
        device,
        bf16,
        channels_last,
        window=cfg.window,
        num_bootstrap=cfg.num_bootstrap,
        metrics_seed=cfg.seed,
        on_epoch=on_epoch,
    )

    # ---- outputs: model file (atomic), then the CSV row (locked append)
    row = rm_infos_row(
        cfg,
        fit,
        choice,
        rm_id=rm_id,
        model_file=str(model_path.relative_to(save_dir)),
        run_dir=run_dir,
        device=device,
        bf16=bf16,
        wall_s=time.perf_counter() - t_start,
    )
    save_reward_model(model_path, net, **model_metadata(row, cfg, choice))
    fault_point("reward_between_model_and_row")
    if cfg.overwrite:
        drop_csv_rows(rm_csv, "rm_id", {rm_id})
    append_csv_rows(rm_csv, [row], columns=RM_COLUMNS, unique="rm_id")
    log.info("saved %s and a row in %s", model_path, rm_csv)
    return RewardTrainingResult(net, row, model_path, run_dir, cfg, fit)
