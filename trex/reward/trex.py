"""T-REX training (Brown et al. 2019, arXiv 1904.06387): network passes over batches of
snippet pairs, the Bradley-Terry loss (Eq. 1), one optimiser step, evaluation and the
training loop with its epoch selection."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from trex.common.errors import UserError
from trex.reward.metrics import (
    DEFAULT_WINDOW,
    correlations,
    pair_accuracy,
    pair_loss,
    window_correlation,
)
from trex.reward.nets import (
    RewardNet,
    build_net,
)
from trex.reward.pairs import (
    DemoSet,
    PairSet,
    check_pairable,
    frames_mask,
    sample_pairs,
    split_train_val,
)
from trex.reward.passes import frame_rewards, pair_returns, train_step
from trex.reward.variants import (
    check_variant,
    ensemble_spread,
    variant_name,
)

log = logging.getLogger(__name__)

#: how Adam's step size follows the batch size (:func:`trex.reward.trex.step_lr`)
LR_SCALINGS: tuple[str, ...] = ("sqrt", "none")

# ----------------------------------------------------------------------------- training


@dataclass
class TrexConfig:
    """Training settings; defaults are the original project's (weight_decay as in its latest
    version).

    ``lr`` is the original project's per-pair learning rate (it took one pair per Adam step). With
    ``batch_size`` pairs per step, Adam's step size is ``lr * sqrt(batch_size)`` (the
    square-root scaling rule for Adam, Malladi et al. 2022, arXiv 2205.10287) unless
    ``lr_scaling="none"``; ``batch_size=1`` (the default since issue 23's equal-pairs
    comparison, docs/results/optimizer.md) is exactly the original project's optimizer.

    Variants (:mod:`trex.reward.variants`; the defaults are the original project's): the network
    (``architecture``, ``frame_stack``, ``scale_frames``, ``ensemble``, with ``output_abs``:
    :meth:`make_net`) and the training-only ``augment``.
    """

    num_snippets: int = 50000
    min_snippet_length: int = 20
    max_snippet_length: int = 100
    epoch_size: int = 1000
    max_num_epochs: int = 50
    patience: int = 10
    lr: float = 5e-5
    lam_l1: float = 0.001
    weight_decay: float = 0.01
    output_abs: bool = False
    use_snippet_rewards: bool = False
    use_clip_heuristic: bool = True
    batch_size: int = 1
    lr_scaling: str = "sqrt"
    num_val_snippets: int = 1000
    num_test_snippets: int = 1000
    num_train_eval_snippets: int = 1000
    eval_batch_size: int = 512
    max_batch_frames: int = 256
    architecture: str = "seed_cnn"
    frame_stack: int = 1
    scale_frames: bool = False
    augment: str = "none"
    ensemble: int = 1
    select_by: str = "val_acc"
    #: frames per window of the per-epoch fixed-window Pearson on the test demos
    window: int = DEFAULT_WINDOW

    def check(self) -> None:
        """UserError (one line, naming the flag) for bad snippet lengths, a negative penalty,
        an unknown ``lr_scaling`` or a bad variant setting."""
        if self.min_snippet_length >= self.max_snippet_length:
            raise UserError(
                f"--min_snippet_length ({self.min_snippet_length}) must be smaller than "
                f"--max_snippet_length ({self.max_snippet_length})"
            )
        if self.lam_l1 < 0 or self.weight_decay < 0:
            raise UserError("--lam_l1 and --weight_decay must be >= 0")
        if self.lr_scaling not in LR_SCALINGS:
            raise UserError(
                f"--lr_scaling must be one of {', '.join(LR_SCALINGS)}, got {self.lr_scaling!r}"
            )
        check_variant(
            architecture=self.architecture,
            frame_stack=self.frame_stack,
            augment=self.augment,
            ensemble=self.ensemble,
            select_by=self.select_by,
        )

    @property
    def net_config(self) -> dict[str, Any]:
        """The network's settings, as :func:`trex.reward.nets.build_net` takes them."""
        return {
            "output_abs": self.output_abs,
            "frame_stack": self.frame_stack,
            "scale_frames": self.scale_frames,
            "ensemble": self.ensemble,
        }

    def make_net(self) -> RewardNet:
        """A fresh reward network of these settings (not yet on a device: see ``prepare_net``)."""
        self.check()
        return build_net(self.architecture, self.net_config)

    @property
    def variant(self) -> str:
        """The short name of the non-default choices (``seed`` for none), e.g. ``stack4+shift``."""
        return variant_name(
            use_clip_heuristic=self.use_clip_heuristic,
            use_snippet_rewards=self.use_snippet_rewards,
            frame_stack=self.frame_stack,
            scale_frames=self.scale_frames,
            augment=self.augment,
            architecture=self.architecture,
            ensemble=self.ensemble,
            select_by=self.select_by,
        )


def selection_score(row: dict[str, float], select_by: str) -> float:
    """The number an epoch is kept by (larger is better): validation accuracy (upstream),
    minus the validation loss, or the epoch itself (``last``: every epoch beats the one before,
    so nothing stops early and the final weights are kept)."""
    if select_by == "val_acc":
        return float(row["val_acc"])
    if select_by == "val_loss":
        return -float(row["val_loss"])
    if select_by == "last":
        return float(row["epoch"])
    raise ValueError(f"unknown select_by {select_by!r}")


@dataclass
class TrexData:
    """Everything training reads: the selected demos, their train/val split, the per-epoch
    test demos, and the pair sets (indices)."""

    demos: DemoSet
    train_demos: np.ndarray
    val_demos: np.ndarray
    test: DemoSet | None
    train_pairs: PairSet
    val_pairs: PairSet
    test_pairs: PairSet | None
    train_eval_pairs: PairSet

    @property
    def gt_snippet_acc(self) -> float:
        """How often the demo-return label agrees with the test snippets' true rewards."""
        if self.test_pairs is None or len(self.test_pairs) == 0:
            return float("nan")
        return float(self.test_pairs.honest.mean())


def make_data(
    demos: DemoSet,
    test: DemoSet | None,
    cfg: TrexConfig,
    rng: np.random.Generator,
    train_demos: np.ndarray | None = None,
    val_demos: np.ndarray | None = None,
    test_rng: np.random.Generator | None = None,
) -> TrexData:
    """Split ``demos`` (in selection order) 80/20 and sample training, validation, test and
    train-evaluation pairs (upstream: ``num_snippets``, 1000, 1000 and 1000 pairs)."""
    # test pairs come from their own random stream, drawn whatever the test demos hold: the
    # model never depends on them (nor on their returns)
    test_rng = np.random.default_rng(rng.integers(2**63)) if test_rng is None else test_rng
    if train_demos is None or val_demos is None:
        train_demos, val_demos = split_train_val(demos.keys)
    hint = " (use more --num_dems, or demos of more varied return)"
    check_pairable(demos.keys[train_demos], "training", hint)
    check_pairable(demos.keys[val_demos], "validation", hint)
    kw = dict(
        min_len=cfg.min_snippet_length,
        max_len=cfg.max_snippet_length,
        rng=rng,
        use_clip_heuristic=cfg.use_clip_heuristic,
        use_snippet_rewards=cfg.use_snippet_rewards,
    )
    train_pairs = sample_pairs(demos, train_demos, cfg.num_snippets, **kw)
    val_pairs = sample_pairs(demos, val_demos, cfg.num_val_snippets, **kw)
    test_pairs = None
    if test is not None and np.all(np.isfinite(test.returns)):
        check_pairable(test.returns, "test")
        test_kw = dict(kw, rng=test_rng)
        test_pairs = sample_pairs(test, np.arange(len(test)), cfg.num_test_snippets, **test_kw)
    k = min(cfg.num_train_eval_snippets, len(train_pairs))
    train_eval = train_pairs.take(np.sort(rng.choice(len(train_pairs), size=k, replace=False)))
    return TrexData(
        demos,
        np.asarray(train_demos),
        np.asarray(val_demos),
        test,
        train_pairs,
        val_pairs,
        test_pairs,
        train_eval,
    )


def step_lr(cfg: TrexConfig) -> float:
    """Adam's learning rate for ``cfg.batch_size`` pairs per step (see :class:`TrexConfig`);
    UserError for a bad config (:meth:`TrexConfig.check`)."""
    cfg.check()
    return cfg.lr * math.sqrt(cfg.batch_size) if cfg.lr_scaling == "sqrt" else cfg.lr


def evaluate(
    net: RewardNet,
    data: TrexData,
    cfg: TrexConfig,
    device: torch.device,
    bf16: bool,
    channels_last: bool = True,
) -> dict[str, float]:
    """Accuracy and loss on train-eval, validation and test pairs, and correlations on the
    test demos; per-frame rewards are computed once per needed frame. An ensemble adds
    ``ensemble_spread`` and ``ensemble_spread_rel`` on the test demos
    (:func:`trex.reward.variants.ensemble_spread`)."""
    mask = frames_mask(data.demos, PairSet.concat([data.train_eval_pairs, data.val_pairs]))
    r = frame_rewards(
        net,
        data.demos.frames,
        device,
        bf16,
        mask,
        channels_last,
        cfg.eval_batch_size,
        offsets=data.demos.offsets,
    )
    out: dict[str, float] = {}
    for name, pairs in (("train", data.train_eval_pairs), ("val", data.val_pairs)):
        ret, absr = pair_returns(data.demos, r, pairs)
        out[f"{name}_acc"] = pair_accuracy(ret)
        out[f"{name}_loss"] = pair_loss(ret, absr, cfg.lam_l1)
    if data.test is not None and data.test_pairs is not None:
        rt = frame_rewards(
            net,
            data.test.frames,
            device,
            bf16,
            None,
            channels_last,
            cfg.eval_batch_size,
            offsets=data.test.offsets,
            members=True,
        )
        if net.ensemble_size > 1:
            out["ensemble_spread"], out["ensemble_spread_rel"] = ensemble_spread(
                np.stack([data.test.demo_sums(m) for m in rt])
            )
        rt = rt.mean(axis=0)
        ret, absr = pair_returns(data.test, rt, data.test_pairs)
        out["test_acc"] = pair_accuracy(ret)
        out["test_loss"] = pair_loss(ret, absr, cfg.lam_l1)
        out["pearson"], out["spearman"] = correlations(data.test.demo_sums(rt), data.test.returns)
        out["window_pearson"] = window_correlation(
            rt, data.test.rewards, data.test.offsets, cfg.window
        )
    else:
        out.update(
            test_acc=float("nan"),
            test_loss=float("nan"),
            pearson=float("nan"),
            spearman=float("nan"),
            window_pearson=float("nan"),
        )
    return out


@dataclass
class TrexResult:
    """The outcome of :func:`train_trex`: the best epoch's metrics and the history."""

    best_epoch: int
    best: dict[str, float]
    history: list[dict[str, float]]
    epochs: int
    wall_s: float


def train_trex(
    net: RewardNet,
    data: TrexData,
    cfg: TrexConfig,
    rng: np.random.Generator,
    device: torch.device,
    bf16: bool,
    channels_last: bool = True,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrexResult:
    """Train ``net`` in place; on return it holds the weights of the best epoch by
    ``cfg.select_by`` (:func:`selection_score`; upstream: validation accuracy).

    Each epoch takes ``epoch_size`` training pairs (a fresh random subset, as the original project's
    shuffle-and-slice) in batches of ``batch_size``, then evaluates. Early stopping when the
    selection score has not improved for ``patience`` epochs. ``net`` must be the
    network ``cfg`` describes (:meth:`TrexConfig.make_net`). Random shifts (``augment``)
    come from a child stream of ``rng`` that leaves ``rng``'s own draws (the pairs' order)
    as without augmentation.
    """
    from tqdm import tqdm

    cfg.check()
    have = (net.architecture, net.frame_stack, net.scale_frames, net.ensemble_size)
    want = (cfg.architecture, cfg.frame_stack, cfg.scale_frames, cfg.ensemble)
    if have != want:
        raise ValueError(
            f"the network (architecture, frame_stack, scale_frames, ensemble) = {have} "
            f"is not the one the config describes, {want}"
        )
    aug_rng = rng.spawn(1)[0] if cfg.augment != "none" else None
    if cfg.variant != "seed":
        log.info("variant %s", cfg.variant)
    opt = torch.optim.Adam(net.parameters(), lr=step_lr(cfg), weight_decay=cfg.weight_decay)
    log.info(
        "training: %d pairs per epoch in batches of %d, Adam lr %.3g (--lr %.3g, %s scaling), "
        "weight decay %g, lam_l1 %g",
        min(cfg.epoch_size, len(data.train_pairs)),
        cfg.batch_size,
        step_lr(cfg),
        cfg.lr,
        cfg.lr_scaling,
        cfg.weight_decay,
        cfg.lam_l1,
    )
    best_score = -math.inf
    best_state: dict[str, torch.Tensor] | None = None
    best_row: dict[str, float] = {}
    best_epoch = -1
    since_best = 0
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    c0 = time.process_time()
    n_pairs = len(data.train_pairs)
    per_epoch = min(cfg.epoch_size, n_pairs)
    epoch = -1
    for epoch in range(cfg.max_num_epochs):
        net.train()
        order = rng.permutation(n_pairs)[:per_epoch]
        loss_sum = ret_sum = abs_sum = 0.0
        frames_seen = frames_run = 0
        for lo in tqdm(
            range(0, per_epoch, cfg.batch_size), desc=f"epoch {epoch}", leave=False, disable=None
        ):
            batch = data.train_pairs.take(order[lo : lo + cfg.batch_size])
            loss, ret, absr, n_uniq = train_step(
                net,
                opt,
                data.demos,
                batch,
                cfg.lam_l1,
                device,
                bf16,
                channels_last,
                cfg.max_batch_frames,
                cfg.augment,
                aug_rng,
            )
            loss_sum += loss * len(batch)
            ret_sum += float(ret.sum())
            abs_sum += float(absr.sum())
            frames_seen += int(2 * batch.length.sum())
            frames_run += n_uniq
        metrics = evaluate(net, data, cfg, device, bf16, channels_last)
        row = {
            "epoch": epoch,
            "n_train_samples": (epoch + 1) * per_epoch,
            **metrics,
            "epoch_loss": loss_sum / per_epoch,
            "mean_snippet_return": ret_sum / (2 * per_epoch),
            "mean_abs_sum": abs_sum / per_epoch,
            "frames_per_pass": frames_seen / max(frames_run, 1),
            "wall_s": time.perf_counter() - t0,
            "cpu_s": time.process_time() - c0,
        }
        history.append(row)
        log.info(
            "epoch %d | n_samples %d | loss %.3f | rewards mean/abs %.2f/%.2f | pc %.3f | sc %.3f",
            epoch,
            row["n_train_samples"],
            row["epoch_loss"],
            row["mean_snippet_return"],
            row["mean_abs_sum"],
            row["pearson"],
            row["spearman"],
        )
        log.info(
            "    train_acc %.4f | val_acc %.4f | test_acc %.4f | train_loss %.4f | val_loss %.4f"
            " | test_loss %.4f | %.1fs",
            row["train_acc"],
            row["val_acc"],
            row["test_acc"],
            row["train_loss"],
            row["val_loss"],
            row["test_loss"],
            row["wall_s"],
        )
        score = selection_score(row, cfg.select_by)
        if score > best_score:
            best_score = score
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in net.state_dict().items()})
            best_row = row
            best_epoch = epoch
            since_best = 0
        else:
            since_best += 1
        if on_epoch is not None:
            on_epoch(row)
        if since_best >= cfg.patience:
            log.info(
                "early stopping after epoch %d (best %s %.4f at epoch %d)",
                epoch,
                cfg.select_by,
                best_row[cfg.select_by],
                best_epoch,
            )
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    return TrexResult(best_epoch, best_row, history, epoch + 1, time.perf_counter() - t0)


@torch.no_grad()
def predict_demo_returns(
    net: RewardNet,
    demos: Iterable[Any],
    device: torch.device,
    bf16: bool,
    channels_last: bool = True,
    batch_size: int = 512,
    total: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stream demos (objects with ``observations`` (T, 64, 64, 3) and ``rewards``): returns
    (predicted returns (n,), true returns (n,), lengths (n,)); one demo in memory at a time."""
    from tqdm import tqdm

    pred, true, lens = [], [], []
    for d in tqdm(demos, total=total, desc="test demos", leave=False, disable=None):
        r = frame_rewards(net, d.observations, device, bf16, None, channels_last, batch_size)
        pred.append(float(r.sum(dtype=np.float64)))
        true.append(float(np.sum(d.rewards, dtype=np.float64)))
        lens.append(len(d.observations))
    return np.array(pred), np.array(true), np.array(lens, dtype=np.int64)
