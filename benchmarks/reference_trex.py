"""The reference T-REX trainer of the benchmarks: what the original project's training loop
does (lzil/procedural-generalization, ``trex/train_reward.py``), written from its behaviour.

The behaviour it must have, and has (tests/test_reference_trex.py checks it by what it
produces):

* **one pair per Adam step**, fp32, no batching: each step is the Bradley-Terry loss of one
  snippet pair (the second preferred) plus the L1 term ``lam_l1 * (sum |r|)`` over both
  snippets, one ``optimizer.step()``;
* **each snippet through the network on its own**: one forward call per snippet, frames in the
  demos' NHWC layout permuted to NCHW (no channels_last, no bf16), so no frame is shared
  between the snippets of a step or between steps;
* **epochs**: the training pairs shuffled, the first ``epoch_size`` of them trained on;
* **pair-by-pair evaluation after each epoch**: accuracy and loss one pair at a time on
  ``n_eval`` training pairs, ``n_eval`` validation pairs and all test pairs; Pearson and
  Spearman of the predicted with the true return on the first ``n_test_demos`` test demos, one
  forward per whole demo (and, the benchmark's own addition, the fixed-window Pearson from the
  same forwards);
* **early stopping on validation accuracy**: the best epoch's weights kept (in memory: no
  pickle here) and restored after ``patience`` epochs without a better one, and the
  correlations then computed on all test demos.

The network is the toolkit's :class:`~trex.reward.nets.CnnRewardNet` (the original project's
layers), so the same torch seed gives the reference and the toolkit the same initial weights.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import pearsonr, spearmanr

from trex.reward.metrics import window_correlation
from trex.reward.nets import CnnRewardNet

log = logging.getLogger("reference_trex")

#: a snippet pair: (worse snippet, preferred snippet), each uint8 frames (T, 64, 64, 3)
Pair = tuple[np.ndarray, np.ndarray]


class ReferenceNet(torch.nn.Module):
    """The original project's CNN, called the way its trainer calls it."""

    def __init__(self) -> None:
        super().__init__()
        self.model = CnnRewardNet().model

    def rewards(self, frames: np.ndarray) -> torch.Tensor:
        """Per-frame rewards float32 (T,) of one snippet or demo, uint8 (T, 64, 64, 3), in
        one fp32 forward on NCHW input (on the network's device)."""
        device = next(self.parameters()).device
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(device).float()
        return self.model(x.permute(0, 3, 1, 2)).flatten()

    def pair_returns(self, pair: Pair) -> tuple[torch.Tensor, torch.Tensor]:
        """(returns (2,), summed |r| over both snippets) of a pair, each snippet on its own."""
        ra, rb = self.rewards(pair[0]), self.rewards(pair[1])
        return torch.stack([ra.sum(), rb.sum()]), ra.abs().sum() + rb.abs().sum()


def pair_loss(returns: torch.Tensor, abs_sum: torch.Tensor, lam_l1: float) -> torch.Tensor:
    """Bradley-Terry loss of one pair, the second preferred (= cross-entropy of the returns as
    logits with label 1), plus the L1 term."""
    return F.softplus(returns[0] - returns[1]) + lam_l1 * abs_sum


def reference_step(
    net: ReferenceNet, opt: torch.optim.Optimizer, pair: Pair, lam_l1: float
) -> float:
    """One Adam step on one pair; returns its loss."""
    opt.zero_grad()
    returns, abs_sum = net.pair_returns(pair)
    loss = pair_loss(returns, abs_sum, lam_l1)
    loss.backward()
    opt.step()
    return float(loss.detach())


@torch.no_grad()
def pair_by_pair(net: ReferenceNet, pairs: list[Pair], lam_l1: float) -> tuple[float, float]:
    """(accuracy, mean loss) over ``pairs``, one pair at a time."""
    right, total = 0, 0.0
    for pair in pairs:
        returns, abs_sum = net.pair_returns(pair)
        right += int(returns[1] > returns[0])
        total += float(pair_loss(returns, abs_sum, lam_l1))
    return right / len(pairs), total / len(pairs)


@torch.no_grad()
def demo_correlations(net: ReferenceNet, demos: list[dict]) -> tuple[float, float, float]:
    """Pearson and Spearman of predicted against true returns, one forward per whole demo
    (``demos``: dicts with ``observations`` (T, 64, 64, 3), ``return`` and, optionally,
    ``rewards`` (T,) true per-frame rewards), and the fixed-window Pearson
    (:func:`trex.reward.metrics.window_correlation`; NaN without ``rewards``). The window
    Pearson is the benchmark's measurement, not the original's: it is computed from the
    same forwards, at no extra network cost."""
    per_frame = [net.rewards(d["observations"]).float().cpu().numpy() for d in demos]
    predicted = [float(r.sum()) for r in per_frame]
    true = [float(d["return"]) for d in demos]
    window = float("nan")
    if all("rewards" in d for d in demos):
        offsets = np.concatenate([[0], np.cumsum([len(r) for r in per_frame])])
        window = window_correlation(
            np.concatenate(per_frame), np.concatenate([d["rewards"] for d in demos]), offsets
        )
    return float(pearsonr(true, predicted)[0]), float(spearmanr(true, predicted)[0]), window


@dataclass
class ReferenceConfig:
    """The original project's defaults."""

    epoch_size: int = 1000
    max_num_epochs: int = 50
    patience: int = 10
    lr: float = 5e-5
    lam_l1: float = 0.001
    weight_decay: float = 0.01
    n_eval: int = 1000  # training and validation pairs evaluated per epoch
    n_test_demos: int = 100  # test demos correlated per epoch


@dataclass
class ReferenceResult:
    """The kept epoch's (train acc, val acc, test acc, pearson, spearman) and the history."""

    accs: tuple[float, float, float, float, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0


class ReferenceTrainer:
    """The original project's training loop (see the module docstring)."""

    def __init__(
        self, cfg: ReferenceConfig, device: torch.device, seed: int, shuffle_seed: int = 0
    ) -> None:
        torch.manual_seed(seed)
        self.cfg = cfg
        self.net = ReferenceNet().to(device)
        self.rng = np.random.default_rng(shuffle_seed)

    def learn_reward(
        self,
        train_pairs: list[Pair],
        val_pairs: list[Pair],
        test_pairs: list[Pair],
        test_demos: list[dict],
    ) -> ReferenceResult:
        cfg = self.cfg
        opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        best_val, since_best = -1.0, 0
        best_state = copy.deepcopy(self.net.state_dict())
        accs = (float("nan"),) * 5
        history: list[dict[str, Any]] = []
        t0, c0 = time.perf_counter(), time.process_time()
        for epoch in range(cfg.max_num_epochs):
            order = self.rng.permutation(len(train_pairs))[: cfg.epoch_size]
            losses = [reference_step(self.net, opt, train_pairs[i], cfg.lam_l1) for i in order]
            train_acc, train_loss = pair_by_pair(self.net, train_pairs[: cfg.n_eval], cfg.lam_l1)
            val_acc, val_loss = pair_by_pair(self.net, val_pairs[: cfg.n_eval], cfg.lam_l1)
            test_acc, test_loss = pair_by_pair(self.net, test_pairs, cfg.lam_l1)
            pearson, spearman, window = demo_correlations(self.net, test_demos[: cfg.n_test_demos])
            row = {
                "epoch": epoch,
                "n_train_samples": (epoch + 1) * len(order),
                "train_acc": train_acc,
                "train_loss": train_loss,
                "val_acc": val_acc,
                "val_loss": val_loss,
                "test_acc": test_acc,
                "test_loss": test_loss,
                "pearson": pearson,
                "spearman": spearman,
                "window_pearson": window,
                "epoch_loss": float(np.mean(losses)),
                "wall_s": time.perf_counter() - t0,
                "cpu_s": time.process_time() - c0,
            }
            history.append(row)
            log.info(
                "reference epoch %d | loss %.3f | train %.3f val %.3f test %.3f | pc %.3f | %.0fs",
                epoch, row["epoch_loss"], train_acc, val_acc, test_acc, pearson, row["wall_s"],
            )  # fmt: skip
            if val_acc > best_val:
                best_val, since_best = val_acc, 0
                best_state = copy.deepcopy(self.net.state_dict())
                accs = (train_acc, val_acc, test_acc, pearson, spearman)
            else:
                since_best += 1
            if since_best >= cfg.patience:
                log.info("reference: early stopping after epoch %d", epoch)
                self.net.load_state_dict(best_state)
                accs = (*accs[:3], *demo_correlations(self.net, test_demos)[:2])
                break
        return ReferenceResult(accs, history, time.perf_counter() - t0)
