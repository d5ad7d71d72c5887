"""The IMPALA CNN policy, PPO with train-procgen's settings, and checkpoints.

Network: the IMPALA CNN of Espeholt et al. 2018 (arXiv 1802.01561) as used by
openai/train-procgen (Cobbe et al. 2020, arXiv 1912.01588): three stacks of
conv3x3 -> max-pool 3x3/2 -> two residual blocks, depths 16, 32, 32, then a 256-unit
dense layer; policy and value heads are linear on top (SB3 ``net_arch=[]``).

Fast path (on by default): channels_last memory format + bf16 autocast where the hardware
has it; features leave the autocast region as fp32.

Checkpoints are stable-baselines3 ``.zip`` files with one extra member,
``trex_checkpoint.json`` (env, mode, levels, timesteps, mean return, reward kind, return
normalisation statistics). We never unpickle SB3's ``data`` member: weights are read with
``torch.load(weights_only=True)`` and the policy is rebuilt from the JSON.
"""

from __future__ import annotations

import io
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from trex.core.device import autocast, pick_device, use_bf16
from trex.core.envs import NUM_ACTIONS
from trex.core.runs import UserError, append_csv_rows, atomic_path, read_csv_checked

log = logging.getLogger(__name__)

CHECKPOINT_META = "trex_checkpoint.json"
CHECKPOINT_FORMAT_VERSION = 1
MANIFEST_NAME = "checkpoints.csv"
MANIFEST_COLUMNS = ["file", "timesteps", "mean_return"]
IMPALA_DEPTHS = (16, 32, 32)
EMBEDDING_DIM = 256

#: openai/train-procgen's PPO hyper-parameters for easy mode
PPO_DEFAULTS: dict[str, Any] = {
    "num_envs": 64, "nsteps": 256, "nminibatches": 8, "ppo_epochs": 3, "learning_rate": 5e-4,
    "gamma": 0.999, "lam": 0.95, "clip_range": 0.2, "ent_coef": 0.01, "vf_coef": 0.5,
    "max_grad_norm": 0.5,
}


# ----------------------------------------------------------------------------- network


class ResidualBlock(nn.Module):
    """relu -> conv3x3 -> relu -> conv3x3, plus the input (IMPALA)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(torch.relu(self.conv0(torch.relu(x))))


class ConvSequence(nn.Module):
    """conv3x3 -> max-pool 3x3 stride 2 ('same' padding) -> 2 residual blocks: (N,C,H,W) -> (N,D,H/2,W/2)."""

    def __init__(self, in_channels: int, depth: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, depth, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.res0 = ResidualBlock(depth)
        self.res1 = ResidualBlock(depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res1(self.res0(self.pool(self.conv(x))))


class ImpalaCNN(BaseFeaturesExtractor):
    """IMPALA CNN features extractor: float images (N, 3, 64, 64) in [0, 1] -> fp32 (N, 256).

    ``fast=True`` runs the convolutions in channels_last layout under bf16 autocast
    (``bf16`` picks whether autocast is on; channels_last alone is used when it is not).
    """

    def __init__(self, observation_space: spaces.Box, features_dim: int = EMBEDDING_DIM,
                 depths: tuple[int, ...] = IMPALA_DEPTHS, channels_last: bool = True,
                 bf16: bool = False) -> None:
        super().__init__(observation_space, features_dim)
        c, h, w = observation_space.shape
        stacks = []
        for depth in depths:
            stacks.append(ConvSequence(c, depth))
            c, h, w = depth, (h + 1) // 2, (w + 1) // 2
        self.stacks = nn.Sequential(*stacks)
        self.fc = nn.Linear(c * h * w, features_dim)
        self.channels_last = channels_last
        self.bf16 = bf16

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        x = observations
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(x.device, self.bf16):
            x = self.stacks(x)
            x = torch.relu(torch.flatten(x, 1))
            x = torch.relu(self.fc(x))
        return x.float()


class ImpalaPolicy(ActorCriticPolicy):
    """SB3 actor-critic with the IMPALA CNN and linear heads (train-procgen's architecture).

    Weights are converted to channels_last after SB3's orthogonal init (``orthogonal_``
    fails on channels_last tensors); parameter objects stay the same, so the optimizer
    built by SB3 keeps working.
    """

    def __init__(self, *args: Any, channels_last: bool = True, bf16: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("net_arch", [])
        kwargs.setdefault("features_extractor_class", ImpalaCNN)
        fx = dict(kwargs.pop("features_extractor_kwargs", None) or {})
        fx.update(channels_last=channels_last, bf16=bf16)
        kwargs["features_extractor_kwargs"] = fx
        self._channels_last = channels_last
        super().__init__(*args, **kwargs)
        if channels_last:
            self.features_extractor.to(memory_format=torch.channels_last)

    def set_precision(self, channels_last: bool, bf16: bool) -> None:
        """Switch the fast path on or off after construction (e.g. on load)."""
        fx = self.features_extractor
        fx.channels_last, fx.bf16 = channels_last, bf16
        fx.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def precision_flags(precision: str, device: torch.device) -> dict[str, bool]:
    """Policy kwargs for ``--precision``: fp32 -> plain; auto/bf16 -> channels_last (+ bf16 if supported)."""
    if precision == "fp32":
        return {"channels_last": False, "bf16": False}
    return {"channels_last": True, "bf16": use_bf16(precision, device)}


def build_ppo(env, *, nsteps: int, nminibatches: int, ppo_epochs: int, learning_rate: float,
              gamma: float, lam: float, clip_range: float, ent_coef: float, vf_coef: float = 0.5,
              max_grad_norm: float = 0.5, seed: int = 0, device: torch.device | None = None,
              precision: str = "auto", tensorboard_log: str | None = None) -> PPO:
    """SB3 PPO with train-procgen's settings on a (reward-normalised) Procgen VecEnv.

    Batch = num_envs * nsteps, split into ``nminibatches``; value clipping at the same
    range as the policy (``clip_range_vf``), as baselines' ppo2 does.
    """
    device = device or pick_device()
    batch = env.num_envs * nsteps
    if batch % nminibatches:
        raise UserError(f"num_envs * nsteps ({batch}) must be divisible by nminibatches ({nminibatches})")
    return PPO(
        ImpalaPolicy, env, learning_rate=learning_rate, n_steps=nsteps,
        batch_size=batch // nminibatches, n_epochs=ppo_epochs, gamma=gamma, gae_lambda=lam,
        clip_range=clip_range, clip_range_vf=clip_range, ent_coef=ent_coef, vf_coef=vf_coef,
        max_grad_norm=max_grad_norm, seed=seed, device=device, verbose=0,
        tensorboard_log=tensorboard_log, policy_kwargs=precision_flags(precision, device),
    )


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
    return policy.get_distribution(torch.as_tensor(obs, device=policy.device)).distribution.logits.float()


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(model: PPO, path: str | os.PathLike, meta: dict[str, Any]) -> Path:
    """Save ``model`` as an SB3 .zip with ``trex_checkpoint.json`` added, atomically.

    Rollout leftovers (last observations, episode buffers) are not saved: they are
    rebuilt on resume and would make every file a megabyte larger.
    """
    path = Path(path)
    full_meta = {"format_version": CHECKPOINT_FORMAT_VERSION, "timesteps": int(model.num_timesteps), **meta}
    with atomic_path(path, suffix=".zip") as tmp:
        model.save(tmp, exclude=["_last_obs", "_last_original_obs", "_last_episode_starts",
                                 "ep_info_buffer", "ep_success_buffer", "tensorboard_log"])
        with zipfile.ZipFile(tmp, "a") as zf:
            zf.writestr(CHECKPOINT_META, json.dumps(full_meta, indent=2, sort_keys=True))
    return path


def read_checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The ``trex_checkpoint.json`` of a checkpoint; UserError if missing or not one of ours."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        with zipfile.ZipFile(path) as zf:
            return json.loads(zf.read(CHECKPOINT_META))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError) as err:
        raise UserError(f"{path} is not a procgen-trex policy checkpoint ({type(err).__name__})") from None


def _load_member(path: Path, member: str, device: torch.device) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(path) as zf:
            data = zf.read(member)
        return torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    except (zipfile.BadZipFile, KeyError, RuntimeError, OSError, EOFError) as err:
        raise UserError(f"{path}: cannot read {member} ({type(err).__name__}); the checkpoint is corrupt") from None


def check_checkpoint_env(meta: dict[str, Any], path: str | os.PathLike, env_name: str | None) -> None:
    """UserError if the checkpoint was trained on another game than ``env_name``."""
    if env_name is not None and meta.get("env_name") != env_name:
        raise UserError(f"{path} is a checkpoint of {meta.get('env_name')!r}, not of {env_name!r}")


def load_policy(path: str | os.PathLike, device: torch.device | str | None = None,
                precision: str = "auto", expected_env: str | None = None
                ) -> tuple[ImpalaPolicy, dict[str, Any]]:
    """Rebuild a policy from a checkpoint without unpickling: (policy in eval mode, meta)."""
    path = Path(path)
    meta = read_checkpoint_meta(path)
    check_checkpoint_env(meta, path, expected_env)
    device = pick_device() if device is None else torch.device(device)
    state = _load_member(path, "policy.pth", device)
    policy = ImpalaPolicy(
        spaces.Box(0, 255, (3, 64, 64), np.uint8), spaces.Discrete(NUM_ACTIONS),
        lambda _: 0.0, **precision_flags(precision, device),
    ).to(device)
    try:
        policy.load_state_dict(state)
    except RuntimeError as err:
        raise UserError(f"{path}: weights do not fit the IMPALA policy ({str(err).splitlines()[0]})") from None
    policy.set_precision(**precision_flags(precision, device))
    policy.eval()
    return policy, meta


def restore_training_state(model: PPO, path: str | os.PathLike) -> dict[str, Any]:
    """Load weights, optimizer state and step count of a checkpoint into ``model`` (resume)."""
    path = Path(path)
    meta = read_checkpoint_meta(path)
    model.policy.load_state_dict(_load_member(path, "policy.pth", model.device))
    model.policy.optimizer.load_state_dict(_load_member(path, "policy.optimizer.pth", model.device))
    model.num_timesteps = int(meta.get("timesteps", 0))
    return meta


# ----------------------------------------------------------------------------- manifest


def append_manifest(models_dir: str | os.PathLike, file: str, timesteps: int, mean_return: float) -> None:
    """Add a checkpoint to ``<models_dir>/checkpoints.csv`` (file relative to models_dir)."""
    append_csv_rows(Path(models_dir) / MANIFEST_NAME,
                    [{"file": file, "timesteps": int(timesteps), "mean_return": float(mean_return)}],
                    columns=MANIFEST_COLUMNS)


def read_manifest(models_dir: str | os.PathLike) -> pd.DataFrame:
    """``checkpoints.csv`` of a checkpoint directory: columns file, timesteps, mean_return.

    Only rows whose file exists are kept (a checkpoint may have been deleted by hand);
    UserError if the manifest is missing, malformed or lists no existing file.
    """
    models_dir = Path(models_dir)
    manifest = models_dir / MANIFEST_NAME
    if not manifest.is_file():
        raise UserError(f"no {MANIFEST_NAME} in {models_dir} (is it a train_policy checkpoint directory?)")
    df = read_csv_checked(manifest, "checkpoint manifest", MANIFEST_COLUMNS)
    df = df.drop_duplicates("file", keep="last")
    df = df[[(models_dir / f).is_file() for f in df["file"]]].reset_index(drop=True)
    if df.empty:
        raise UserError(f"{manifest} lists no checkpoint file that exists")
    return df
