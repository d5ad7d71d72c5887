"""baselines' ppo2 update (what openai/train-procgen runs) on stable-baselines3's PPO loop.

stable-baselines3 collects rollouts, computes GAE and batches minibatches exactly as ppo2
does; its loss differs in one place that matters here: with ``clip_range_vf`` set, SB3's value
loss is the clipped error alone, ``(R - v_clip)^2``, whose gradient vanishes for every sample
whose value moved more than the clip range, while ppo2's is the larger of the clipped and the
unclipped errors (Schulman et al. 2017's PPO code; baselines ``ppo2/model.py``).
The network's trunk is shared by the policy and value heads and Adam scales each parameter's
step by its gradient's running size, so a value gradient that vanishes lets the (noisy)
policy-gradient term take full-size steps in the trunk: measured on one coinrun batch from
the same initial weights, SB3's loss moved the policy 3-5x further per update than ppo2's
(clip fraction 0.04-0.08 vs 0.008-0.02).
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.utils import explained_variance


def ppo2_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    entropy: torch.Tensor,
    *,
    clip: float,
    clip_vf: float | None,
    ent_coef: float,
    vf_coef: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """ppo2's loss on one minibatch (every tensor (B,); ``advantages`` already normalised).

    Returns (loss, stats) with stats pg, vf, ent, kl (``0.5 * mean(log_ratio^2)``) and clipfrac.
    """
    log_ratio = log_prob - old_log_prob
    ratio = torch.exp(log_ratio)
    pg = torch.max(-advantages * ratio, -advantages * torch.clamp(ratio, 1 - clip, 1 + clip)).mean()
    err = (values - returns) ** 2
    if clip_vf is not None:
        clipped = old_values + torch.clamp(values - old_values, -clip_vf, clip_vf)
        err = torch.max(err, (clipped - returns) ** 2)
    vf = 0.5 * err.mean()
    ent = entropy.mean()
    loss = pg - ent_coef * ent + vf_coef * vf
    with torch.no_grad():  # one device-to-host copy per minibatch
        values_out = torch.stack(
            [pg, vf, ent, 0.5 * (log_ratio**2).mean(), ((ratio - 1).abs() > clip).float().mean()]
        ).tolist()
    return loss, dict(zip(("pg", "vf", "ent", "kl", "clipfrac"), values_out))


class PPO2(PPO):
    """SB3's PPO with ppo2's loss, per minibatch of ``batch_size`` samples:

    ``pg = mean(max(-A * r, -A * clip(r, 1 - c, 1 + c)))`` with ``A`` normalised per minibatch,
    ``vf = 0.5 * mean(max((v - R)^2, (v_old + clip(v - v_old, -c_v, c_v) - R)^2))``,
    ``loss = pg - ent_coef * entropy + vf_coef * vf``; so ``vf_coef`` means ppo2's coefficient
    (train-procgen: 0.5). Without ``clip_range_vf`` the value loss is ``0.5 * mean((v - R)^2)``.

    Logged as ppo2 logs them (averages over every minibatch of every epoch): ``approx_kl`` is
    ppo2's ``0.5 * mean(log_ratio^2)``, ``value_loss`` is ``vf`` above, ``clip_fraction`` the
    share of samples with ``|r - 1| > c``. ``target_kl`` (not in ppo2) is not supported.
    """

    def train(self) -> None:
        if self.target_kl is not None:
            raise ValueError("PPO2 does not support target_kl (baselines' ppo2 has no early stop)")
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        clip = float(self.clip_range(self._current_progress_remaining))
        clip_vf = (
            None
            if self.clip_range_vf is None
            else float(self.clip_range_vf(self._current_progress_remaining))
        )
        stats: dict[str, list[float]] = {k: [] for k in ("pg", "vf", "ent", "kl", "clipfrac")}
        loss = torch.zeros(())
        for _ in range(self.n_epochs):
            for batch in self.rollout_buffer.get(self.batch_size):
                actions = batch.actions
                if isinstance(self.action_space, spaces.Discrete):
                    actions = actions.long().flatten()
                values, log_prob, entropy = self.policy.evaluate_actions(
                    batch.observations, actions
                )
                values = values.flatten()
                adv = batch.advantages
                if self.normalize_advantage and len(adv) > 1:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                if entropy is None:
                    entropy = -log_prob
                loss, step_stats = ppo2_loss(
                    log_prob,
                    batch.old_log_prob,
                    adv,
                    values,
                    batch.old_values,
                    batch.returns,
                    entropy,
                    clip=clip,
                    clip_vf=clip_vf,
                    ent_coef=self.ent_coef,
                    vf_coef=self.vf_coef,
                )
                self.policy.optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()

                for key, value in step_stats.items():
                    stats[key].append(value)
            self._n_updates += 1

        ev = explained_variance(
            self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten()
        )
        self.logger.record("train/entropy_loss", -float(np.mean(stats["ent"])))
        self.logger.record("train/policy_gradient_loss", float(np.mean(stats["pg"])))
        self.logger.record("train/value_loss", float(np.mean(stats["vf"])))
        self.logger.record("train/approx_kl", float(np.mean(stats["kl"])))
        self.logger.record("train/clip_fraction", float(np.mean(stats["clipfrac"])))
        self.logger.record("train/loss", float(loss.item()))
        self.logger.record("train/explained_variance", float(ev))
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip)
