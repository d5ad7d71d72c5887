"""The IMPALA CNN policy, PPO with train-procgen's settings, and checkpoints.

Network: the IMPALA CNN of Espeholt et al. 2018 (arXiv 1802.01561) as used by
openai/train-procgen (Cobbe et al. 2020, arXiv 1912.01588): three stacks of
conv3x3 -> max-pool 3x3/2 -> two residual blocks, depths 16, 32, 32, then a 256-unit
dense layer; policy and value heads are linear on top (SB3 ``net_arch=[]``).

Fast path (on by default): channels_last memory format + bf16 autocast where the hardware
has it; features leave the autocast region as fp32.

Checkpoints come in two formats, read alike by :func:`read_checkpoint_meta`,
:func:`load_policy` and :func:`read_manifest` (dispatch on the suffix):

- training checkpoints, stable-baselines3 ``.zip`` files with one extra member,
  ``trex_checkpoint.json`` (env, mode, levels, timesteps, mean return, reward kind, return
  normalisation statistics), written by train_policy; resuming one restores the optimizer too.
  We never unpickle SB3's ``data`` member: weights are read with ``torch.load(weights_only=True)``
  and the policy is rebuilt from the JSON.
- weights-only ``.safetensors`` files (:func:`save_policy_weights`, the export_policy stage):
  the policy's state_dict in fp32, each shared tensor once, with the same metadata as JSON in
  the safetensors header (key ``trex_checkpoint``). About 2.5 MB instead of 7.6 MB: the format
  for experts shipped in the repository. Fine-tuning from one starts a fresh optimizer.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from trex.common.device import autocast, network_chunk, pick_device, use_bf16
from trex.common.errors import UserError
from trex.nets.impala import EMBEDDING_DIM, IMPALA_DEPTHS, impala_stacks
from trex.rl.ppo2 import PPO2

log = logging.getLogger(__name__)


#: openai/train-procgen's PPO hyper-parameters for easy mode
PPO_DEFAULTS: dict[str, Any] = {
    "num_envs": 64,
    "nsteps": 256,
    "nminibatches": 8,
    "ppo_epochs": 3,
    "learning_rate": 5e-4,
    "gamma": 0.999,
    "lam": 0.95,
    "clip_range": 0.2,
    "ent_coef": 0.01,
    "vf_coef": 0.5,
    "max_grad_norm": 0.5,
}


# ----------------------------------------------------------------------------- network


class ImpalaCNN(BaseFeaturesExtractor):
    """IMPALA CNN features extractor: float images (N, 3, 64, 64) in [0, 1] -> fp32 (N, 256).

    ``fast=True`` runs the convolutions in channels_last layout under bf16 autocast
    (``bf16`` picks whether autocast is on; channels_last alone is used when it is not).
    """

    def __init__(
        self,
        observation_space: spaces.Box,
        features_dim: int = EMBEDDING_DIM,
        depths: tuple[int, ...] = IMPALA_DEPTHS,
        channels_last: bool = True,
        bf16: bool = False,
    ) -> None:
        super().__init__(observation_space, features_dim)
        self.stacks, flat = impala_stacks(*observation_space.shape, depths)
        self.fc = nn.Linear(flat, features_dim)
        self.channels_last = channels_last
        self.bf16 = bf16

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """float (N, 3, 64, 64) -> fp32 features (N, 256); on a CPU a large batch (a PPO
        minibatch) goes through in chunks (:func:`trex.common.device.network_chunk`), which
        changes no output and is faster there."""
        x = observations
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        chunk = network_chunk("ppo_train", x.device, self.bf16, "impala")
        if chunk is None or x.shape[0] <= chunk:
            return self._features(x)
        return torch.cat([self._features(x[lo : lo + chunk]) for lo in range(0, len(x), chunk)])

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(x.device, self.bf16):
            x = self.stacks(x)
            x = torch.relu(torch.flatten(x, 1))
            x = torch.relu(self.fc(x))
        return x.float()


class TFAdam(torch.optim.Adam):
    """Adam with TensorFlow 1's epsilon, as baselines' ppo2 (so train-procgen) uses it.

    TF's ``AdamOptimizer(epsilon=1e-5)`` adds epsilon to sqrt(v) *before* the bias correction
    ("epsilon hat" of Kingma & Ba, arXiv 1412.6980, end of section 2): the update is
    ``lr * m_hat / (sqrt(v_hat) + eps / sqrt(1 - beta2^t))``. PyTorch adds a constant eps to
    sqrt(v_hat), so early in training (t small) its steps on parameters with tiny gradients
    are up to ~30x larger than TF's (at t=1, eps / sqrt(1 - 0.999) = 32 eps). Here the group's
    eps is set to ``eps_hat / sqrt(1 - beta2^t)`` before each step, which makes PyTorch's update
    equal TF's exactly.
    """

    def __init__(self, params: Any, lr: float = 1e-3, eps: float = 1e-5, **kwargs: Any) -> None:
        super().__init__(params, lr=lr, eps=eps, **kwargs)
        for group in self.param_groups:
            group["eps_hat"] = eps

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        for group in self.param_groups:
            eps_hat = group.setdefault("eps_hat", group["eps"])
            t = 1
            for p in group["params"]:
                state = self.state.get(p)
                if state and "step" in state:
                    t = int(state["step"]) + 1
                    break
            group["eps"] = eps_hat / math.sqrt(1.0 - group["betas"][1] ** t)
        return super().step(closure)


class ImpalaPolicy(ActorCriticPolicy):
    """SB3 actor-critic with the IMPALA CNN and linear heads (train-procgen's architecture).

    Weights are converted to channels_last after SB3's orthogonal init (``orthogonal_``
    fails on channels_last tensors); parameter objects stay the same, so the optimizer
    built by SB3 keeps working.
    """

    def __init__(
        self,
        *args: Any,
        channels_last: bool = True,
        bf16: bool = False,
        init: str = "baselines",
        **kwargs: Any,
    ) -> None:
        if init not in ("baselines", "sb3"):
            raise ValueError(f"init must be 'baselines' or 'sb3', not {init!r}")
        kwargs.setdefault("net_arch", [])
        kwargs.setdefault("features_extractor_class", ImpalaCNN)
        if init == "baselines":
            kwargs["ortho_init"] = False
            kwargs.setdefault("optimizer_class", TFAdam)
            kwargs.setdefault("optimizer_kwargs", {"eps": 1e-5})
        fx = dict(kwargs.pop("features_extractor_kwargs", None) or {})
        fx.update(channels_last=channels_last, bf16=bf16)
        kwargs["features_extractor_kwargs"] = fx
        self._channels_last = channels_last
        super().__init__(*args, **kwargs)
        if init == "baselines":
            baselines_init(self)
        if channels_last:
            self.features_extractor.to(memory_format=torch.channels_last)

    def set_precision(self, channels_last: bool, bf16: bool) -> None:
        """Switch the fast path on or off after construction (e.g. on load)."""
        fx = self.features_extractor
        fx.channels_last, fx.bf16 = channels_last, bf16
        fx.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def baselines_init(policy: ActorCriticPolicy) -> None:
    """Initialise like train-procgen (baselines' ``build_impala_cnn`` + ``fc`` heads): every
    conv and dense layer of the CNN Glorot-uniform with zero bias (TensorFlow's default), the
    policy head orthogonal with gain 0.01, the value head orthogonal with gain 1.

    SB3's own ``ortho_init`` gives the CNN orthogonal weights with gain sqrt(2); through the six
    residual blocks that makes the initial features ~20x larger (RMS 8-16 vs 0.5-0.7 on 64
    coinrun frames, 3 seeds each) and initial values up to -9 on a normalised-return scale
    (train-procgen's start near 0).
    """
    for m in policy.features_extractor.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    nn.init.orthogonal_(policy.action_net.weight, gain=0.01)
    nn.init.zeros_(policy.action_net.bias)
    nn.init.orthogonal_(policy.value_net.weight, gain=1.0)
    nn.init.zeros_(policy.value_net.bias)


def precision_flags(precision: str, device: torch.device) -> dict[str, bool]:
    """Policy kwargs for ``--precision``: fp32 -> plain; auto/bf16 -> channels_last (+ bf16
    if supported)."""
    if precision == "fp32":
        return {"channels_last": False, "bf16": False}
    return {"channels_last": True, "bf16": use_bf16(precision, device)}


def build_ppo(
    env,
    *,
    nsteps: int,
    nminibatches: int,
    ppo_epochs: int,
    learning_rate: float,
    gamma: float,
    lam: float,
    clip_range: float,
    ent_coef: float,
    vf_coef: float = 0.5,
    max_grad_norm: float = 0.5,
    seed: int = 0,
    device: torch.device | None = None,
    precision: str = "auto",
    tensorboard_log: str | None = None,
) -> PPO:
    """PPO with train-procgen's settings on a (reward-normalised) Procgen VecEnv.

    Batch = num_envs * nsteps, split into ``nminibatches``; value clipping at the same
    range as the policy, with baselines' ppo2 loss (:class:`trex.rl.ppo2.PPO2`: the larger
    of the clipped and unclipped value errors, half the squared error weighted by
    ``vf_coef``). The network is initialised as train-procgen's (:func:`baselines_init`) and
    trained with TF's Adam epsilon (:class:`TFAdam`).
    """
    device = device or pick_device()
    batch = env.num_envs * nsteps
    if batch % nminibatches:
        raise UserError(
            f"num_envs * nsteps ({batch}) must be divisible by nminibatches ({nminibatches})"
        )
    model = PPO2(
        ImpalaPolicy,
        env,
        learning_rate=learning_rate,
        n_steps=nsteps,
        batch_size=batch // nminibatches,
        n_epochs=ppo_epochs,
        gamma=gamma,
        gae_lambda=lam,
        clip_range=clip_range,
        clip_range_vf=clip_range,
        ent_coef=ent_coef,
        vf_coef=vf_coef,
        max_grad_norm=max_grad_norm,
        seed=seed,
        device=device,
        verbose=0,
        tensorboard_log=tensorboard_log,
        policy_kwargs=precision_flags(precision, device),
    )
    # SB3 would otherwise set up a logger that creates /tmp/SB3-<time>/ at every learn(); our
    # progress goes to progress.csv and TensorBoard, so SB3's logger only keeps values in memory
    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


# ----------------------------------------------------------------------------- acting


@torch.no_grad()
def act(policy: ActorCriticPolicy, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
    """Actions for a batch of observations in one forward: uint8 (N, 3, 64, 64) -> int64 (N,).

    HWC input (N, 64, 64, 3) is accepted too and transposed (a view).
    """
    if obs.ndim == 4 and obs.shape[-1] == 3 and obs.shape[1] != 3:
        obs = obs.transpose(0, 3, 1, 2)
    dist = policy.get_distribution(torch.as_tensor(obs, device=policy.device))
    actions = dist.mode() if deterministic else dist.sample()
    return actions.cpu().numpy().astype(np.int64)


@torch.no_grad()
def action_logits(policy: ActorCriticPolicy, obs: np.ndarray) -> torch.Tensor:
    """Action logits, fp32 (N, 15), for uint8 observations (N, 3, 64, 64).

    The raw uint8 frames go in: SB3's ``get_distribution`` scales images to [0, 1] itself
    (``preprocess_obs``), exactly as in PPO's rollouts and updates; scaling here too would
    feed the network frames divided by 255 twice.
    """
    return policy.get_distribution(
        torch.as_tensor(obs, device=policy.device)
    ).distribution.logits.float()
