"""A reference T-REX trainer that follows the original project's loop literally
(lzil/procedural-generalization, trex/train_reward.py), for benchmarks only.

What "literally" means here, step by step as upstream:

* pairs are lists ``([clip0, clip1], label)`` of frame arrays (numpy views into the demos);
  :func:`create_dataset` is the original project's sampler (global ``np.random``, one pair per
  loop);
* training: one pair per optimizer step; the network runs on every frame of both snippets
  of the pair (fp32, frames permuted NHWC -> NCHW as upstream does);
* after every ``epoch_size`` pairs: accuracy and loss pair by pair on ``n_eval`` training
  pairs, ``n_eval`` validation pairs and all test pairs; correlations on the first
  ``n_test_demos`` test demos, one forward per whole demo (the original project's
  ``predict_batch_rewards``); early stopping on validation accuracy with ``patience``; on
  early stopping the best model is restored and correlations recomputed on all test demos.

Differences, none of which changes what is computed: the best model is kept in memory
instead of ``torch.save`` (no pickle in this project), no TensorFlow seeding, the
per-epoch log goes to a list (with wall times) instead of a CSV, and the network is the
toolkit's :class:`CnnRewardNet` (identical layers and parameter names, so the same seed gives
both trainers the same initial weights).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr
from torch import nn, optim

from trex.reward.nets import CnnRewardNet

log = logging.getLogger("reference_trex")


def create_dataset(
    dems: list[dict],
    num_snippets: int,
    min_snippet_length: int,
    max_snippet_length: int,
    use_snippet_rewards: bool = False,
    use_clip_heuristic: bool = True,
):
    """The original project's sampler: a list of ``([clip0, clip1], np.array([1]))`` and the
    fraction of pairs whose demo-return label agrees with the snippets' true rewards."""
    data = []
    n_honest = 0
    while len(data) < num_snippets:
        i1, i2 = np.random.choice(len(dems), 2, replace=False)
        d0, d1 = sorted([dems[i1], dems[i2]], key=lambda x: x["return"])
        if d0["return"] == d1["return"]:
            continue
        cur_min_len = min(d0["length"], d1["length"])
        cur_max_snippet_len = min(cur_min_len, max_snippet_length)
        cur_len = np.random.randint(min_snippet_length, cur_max_snippet_len)
        if use_clip_heuristic:
            d0_start = np.random.randint(cur_min_len - cur_len + 1)
            d1_start = np.random.randint(d0_start, d1["length"] - cur_len + 1)
        else:
            d0_start = np.random.randint(d0["length"] - cur_len)
            d1_start = np.random.randint(d1["length"] - cur_len)
        clip0 = d0["observations"][d0_start : d0_start + cur_len]
        clip1 = d1["observations"][d1_start : d1_start + cur_len]
        clip0_rew = np.sum(d0["rewards"][d0_start : d0_start + cur_len])
        clip1_rew = np.sum(d1["rewards"][d1_start : d1_start + cur_len])
        if clip0_rew <= clip1_rew:
            n_honest += 1
        elif use_snippet_rewards:
            clip0, clip1 = clip1, clip0
        data.append(([clip0, clip1], np.array([1])))
    return data, n_honest / num_snippets


class OriginalRewardNet(nn.Module):
    """The original project's CnnRewardNet interface around the same layers."""

    def __init__(self, output_abs: bool = False) -> None:
        super().__init__()
        self.output_abs = output_abs
        self.model = CnnRewardNet().model

    def predict_returns(self, traj: torch.Tensor):
        x = traj.permute(0, 3, 1, 2)
        r = torch.abs(self.model(x)) if self.output_abs else self.model(x)
        return torch.sum(r), torch.sum(torch.abs(r))

    def predict_batch_rewards(self, batch_obs: np.ndarray, device: torch.device) -> np.ndarray:
        with torch.no_grad():
            x = torch.tensor(batch_obs, dtype=torch.float32).permute(0, 3, 1, 2).to(device)
            r = torch.abs(self.model(x)) if self.output_abs else self.model(x)
            return r.cpu().numpy().flatten()

    def forward(self, traj_i: torch.Tensor, traj_j: torch.Tensor):
        all_r_i, abs_r_i = self.predict_returns(traj_i)
        all_r_j, abs_r_j = self.predict_returns(traj_j)
        return torch.stack((all_r_i, all_r_j)), abs_r_i + abs_r_j


def get_corr_with_ground(
    demos: list[dict], net: OriginalRewardNet, device: torch.device
) -> tuple[float, float]:
    """The original project's correlation: one forward per whole demo."""
    rs = []
    for dem in demos:
        r_prediction = np.sum(net.predict_batch_rewards(dem["observations"], device))
        rs.append((dem["return"], r_prediction))
    rs_by_var = list(zip(*rs))
    return float(pearsonr(rs_by_var[0], rs_by_var[1])[0]), float(spearmanr(rs)[0])


@dataclass
class ReferenceConfig:
    epoch_size: int = 1000
    max_num_epochs: int = 50
    patience: int = 10
    lr: float = 5e-5
    lam_l1: float = 0.001
    weight_decay: float = 0.01
    output_abs: bool = False
    n_eval: int = 1000  # upstream: train_set[:1000], val_set[:1000]
    n_test_demos: int = 100  # upstream: test_dems[:100] every epoch


@dataclass
class ReferenceResult:
    accs: tuple[float, float, float, float, float]  # train, val, test acc, pearson, spearman
    history: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0


class ReferenceTrainer:
    """The original project's RewardTrainer, literally (see the module docstring)."""

    def __init__(self, cfg: ReferenceConfig, device: torch.device, seed: int) -> None:
        torch.manual_seed(seed)
        self.cfg = cfg
        self.device = device
        self.net = OriginalRewardNet(output_abs=cfg.output_abs).to(device)
        self.best_model = copy.deepcopy(self.net.state_dict())

    def learn_reward(
        self, train_set: list, val_set: list, test_set: list, test_dems: list[dict]
    ) -> ReferenceResult:
        cfg = self.cfg
        loss_criterion = nn.CrossEntropyLoss()
        optimizer = optim.Adam(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        max_val_acc = 0
        eps_no_max = 0
        accs = (float("nan"),) * 5
        history = []
        t0 = time.perf_counter()
        c0 = time.process_time()
        for epoch in range(cfg.max_num_epochs):
            epoch_loss = 0
            np.random.shuffle(train_set)
            for _, ([traj_i, traj_j], label) in enumerate(train_set[: cfg.epoch_size]):
                ti = torch.from_numpy(traj_i).float().to(self.device)
                tj = torch.from_numpy(traj_j).float().to(self.device)
                lb = torch.from_numpy(label).to(self.device)
                optimizer.zero_grad()
                outputs, abs_rewards = self.net.forward(ti, tj)
                outputs = outputs.unsqueeze(0)
                l1_reg = abs_rewards * cfg.lam_l1
                loss = loss_criterion(outputs, lb) + l1_reg
                loss.backward()
                optimizer.step()
                epoch_loss += loss.item()
            epoch_loss /= cfg.epoch_size
            train_acc, train_loss = self.calc_accuracy(train_set[: cfg.n_eval])
            val_acc, val_loss = self.calc_accuracy(val_set[: cfg.n_eval])
            test_acc, test_loss = self.calc_accuracy(test_set)
            pearson, spearman = get_corr_with_ground(
                test_dems[: cfg.n_test_demos], self.net, self.device
            )
            row = {
                "epoch": epoch,
                "n_train_samples": (epoch + 1) * cfg.epoch_size,
                "train_acc": train_acc,
                "train_loss": float(train_loss),
                "val_acc": val_acc,
                "val_loss": float(val_loss),
                "test_acc": test_acc,
                "test_loss": float(test_loss),
                "pearson": pearson,
                "spearman": spearman,
                "epoch_loss": epoch_loss,
                "wall_s": time.perf_counter() - t0,
                "cpu_s": time.process_time() - c0,
            }
            history.append(row)
            log.info(
                "reference epoch %d | loss %.3f | train %.3f val %.3f test %.3f | "
                "pc %.3f sc %.3f | %.0fs",
                epoch,
                epoch_loss,
                train_acc,
                val_acc,
                test_acc,
                pearson,
                spearman,
                row["wall_s"],
            )
            if val_acc > max_val_acc:
                self.best_model = copy.deepcopy(self.net.state_dict())
                max_val_acc = val_acc
                eps_no_max = 0
                accs = (train_acc, val_acc, test_acc, pearson, spearman)
            else:
                eps_no_max += 1
            if eps_no_max >= cfg.patience:
                log.info("reference: early stopping after epoch %d", epoch)
                self.net.load_state_dict(self.best_model)
                pearson, spearman = get_corr_with_ground(test_dems, self.net, self.device)
                accs = (*accs[:3], pearson, spearman)
                break
        return ReferenceResult(accs, history, time.perf_counter() - t0)

    def calc_accuracy(self, data: list):
        criterion = nn.CrossEntropyLoss()
        num_correct = 0.0
        total_loss = 0.0
        with torch.no_grad():
            for [traj_i, traj_j], label in data:
                ti = torch.from_numpy(traj_i).float().to(self.device)
                tj = torch.from_numpy(traj_j).float().to(self.device)
                lb = torch.from_numpy(label).to(self.device)
                rewards, abs_rewards = self.net(ti, tj)
                _, pred_label = torch.max(rewards, 0)
                if pred_label.item() == lb:
                    num_correct += 1.0
                loss = (
                    criterion(rewards.unsqueeze(0), lb).cpu().item() + abs_rewards * self.cfg.lam_l1
                )
                total_loss += loss
        return num_correct / len(data), total_loss / len(data)
