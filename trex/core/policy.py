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

import io
import json
import logging
import math
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from trex.core.device import autocast, pick_device, use_bf16
from trex.core.envs import NUM_ACTIONS
from trex.core.ppo2 import PPO2
from trex.core.runs import UserError, append_csv_rows, atomic_path, read_csv_checked

log = logging.getLogger(__name__)

CHECKPOINT_META = "trex_checkpoint.json"
CHECKPOINT_FORMAT_VERSION = 1
#: suffix of weights-only checkpoints; anything else is read as an SB3 .zip
WEIGHTS_SUFFIX = ".safetensors"
#: safetensors header keys of a weights-only checkpoint
WEIGHTS_FORMAT = "procgen-trex-policy"
WEIGHTS_FORMAT_VERSION = 1
WEIGHTS_META_KEY = "trex_checkpoint"
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


def impala_stacks(in_channels: int, height: int, width: int,
                  depths: tuple[int, ...] = IMPALA_DEPTHS) -> tuple[nn.Sequential, int]:
    """The IMPALA CNN's conv sequences: (module mapping (N, in_channels, H, W) to
    (N, depths[-1], H', W'), the flattened size depths[-1] * H' * W')."""
    c, h, w = in_channels, height, width
    stacks = []
    for depth in depths:
        stacks.append(ConvSequence(c, depth))
        c, h, w = depth, (h + 1) // 2, (w + 1) // 2
    return nn.Sequential(*stacks), c * h * w


class ImpalaCNN(BaseFeaturesExtractor):
    """IMPALA CNN features extractor: float images (N, 3, 64, 64) in [0, 1] -> fp32 (N, 256).

    ``fast=True`` runs the convolutions in channels_last layout under bf16 autocast
    (``bf16`` picks whether autocast is on; channels_last alone is used when it is not).
    """

    def __init__(self, observation_space: spaces.Box, features_dim: int = EMBEDDING_DIM,
                 depths: tuple[int, ...] = IMPALA_DEPTHS, channels_last: bool = True,
                 bf16: bool = False) -> None:
        super().__init__(observation_space, features_dim)
        self.stacks, flat = impala_stacks(*observation_space.shape, depths)
        self.fc = nn.Linear(flat, features_dim)
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

    def __init__(self, *args: Any, channels_last: bool = True, bf16: bool = False,
                 init: str = "baselines", **kwargs: Any) -> None:
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
    """Policy kwargs for ``--precision``: fp32 -> plain; auto/bf16 -> channels_last (+ bf16 if supported)."""
    if precision == "fp32":
        return {"channels_last": False, "bf16": False}
    return {"channels_last": True, "bf16": use_bf16(precision, device)}


def build_ppo(env, *, nsteps: int, nminibatches: int, ppo_epochs: int, learning_rate: float,
              gamma: float, lam: float, clip_range: float, ent_coef: float, vf_coef: float = 0.5,
              max_grad_norm: float = 0.5, seed: int = 0, device: torch.device | None = None,
              precision: str = "auto", tensorboard_log: str | None = None) -> PPO:
    """PPO with train-procgen's settings on a (reward-normalised) Procgen VecEnv.

    Batch = num_envs * nsteps, split into ``nminibatches``; value clipping at the same
    range as the policy, with baselines' ppo2 loss (:class:`trex.core.ppo2.PPO2`: the larger
    of the clipped and unclipped value errors, half the squared error weighted by
    ``vf_coef``). The network is initialised as train-procgen's (:func:`baselines_init`) and
    trained with TF's Adam epsilon (:class:`TFAdam`).
    """
    device = device or pick_device()
    batch = env.num_envs * nsteps
    if batch % nminibatches:
        raise UserError(f"num_envs * nsteps ({batch}) must be divisible by nminibatches ({nminibatches})")
    model = PPO2(
        ImpalaPolicy, env, learning_rate=learning_rate, n_steps=nsteps,
        batch_size=batch // nminibatches, n_epochs=ppo_epochs, gamma=gamma, gae_lambda=lam,
        clip_range=clip_range, clip_range_vf=clip_range, ent_coef=ent_coef, vf_coef=vf_coef,
        max_grad_norm=max_grad_norm, seed=seed, device=device, verbose=0,
        tensorboard_log=tensorboard_log, policy_kwargs=precision_flags(precision, device),
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


def is_weights_file(path: str | os.PathLike) -> bool:
    """True for a weights-only ``.safetensors`` checkpoint; any other file is read as an SB3 ``.zip``."""
    return Path(path).suffix.lower() == WEIGHTS_SUFFIX


def _not_a_checkpoint(path: Path, why: str) -> UserError:
    return UserError(f"{path} is not a procgen-trex policy checkpoint ({why})")


def _first_line(err: BaseException, limit: int = 160) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[0] if lines else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's metadata (``trex_checkpoint.json`` of a .zip, the header of a
    .safetensors); UserError if the file is missing, corrupt or not one of ours."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    if is_weights_file(path):
        return _read_weights_meta(path)
    try:
        with zipfile.ZipFile(path) as zf:
            return json.loads(zf.read(CHECKPOINT_META))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError) as err:
        raise _not_a_checkpoint(path, type(err).__name__) from None


def _read_weights_meta(path: Path) -> dict[str, Any]:
    """The metadata in a weights-only checkpoint's safetensors header (the header is
    checked against the file's size, so a truncated file fails here)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as err:  # safetensors' own error type, plus OSError/ValueError
        raise _not_a_checkpoint(path, f"corrupt or truncated safetensors file: {_first_line(err)}") from None
    if header.get("format") != WEIGHTS_FORMAT or WEIGHTS_META_KEY not in header:
        raise _not_a_checkpoint(path, f"a safetensors file without {WEIGHTS_FORMAT!r} metadata")
    try:
        version = int(header.get("format_version", "0"))
        meta = json.loads(header[WEIGHTS_META_KEY])
    except (ValueError, json.JSONDecodeError):
        raise _not_a_checkpoint(path, "corrupt metadata") from None
    if version > WEIGHTS_FORMAT_VERSION:
        raise UserError(f"{path} has policy file format version {version}; this toolkit reads "
                        f"up to {WEIGHTS_FORMAT_VERSION} (update it)")
    if not isinstance(meta, dict):
        raise _not_a_checkpoint(path, "corrupt metadata")
    return meta


def _load_member(path: Path, member: str, device: torch.device) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(path) as zf:
            data = zf.read(member)
        return torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    except (zipfile.BadZipFile, KeyError, RuntimeError, OSError, EOFError) as err:
        raise UserError(f"{path}: cannot read {member} ({type(err).__name__}); the checkpoint is corrupt") from None


def _read_weights(path: Path, device: torch.device) -> dict[str, torch.Tensor]:
    """The state_dict tensors stored in a checkpoint of either format (no pickle)."""
    if not is_weights_file(path):
        return _load_member(path, "policy.pth", device)
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as err:
        raise UserError(f"{path}: cannot read the weights ({_first_line(err)}); the checkpoint is corrupt") from None


def _shared_names(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """{alias: first name} for state_dict entries that are the same tensor (SB3 shares one
    features extractor under three names: features_extractor, pi_ and vf_features_extractor)."""
    first: dict[tuple, str] = {}
    alias: dict[str, str] = {}
    for name, t in state.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride())
        if key in first:
            alias[name] = first[key]
        else:
            first[key] = name
    return alias


def policy_weights(policy: nn.Module) -> dict[str, torch.Tensor]:
    """The policy's state_dict as a weights-only file holds it: float tensors in fp32,
    contiguous (channels_last weights are copied to the standard layout), on the CPU, each
    shared tensor once under its first name."""
    state = policy.state_dict()
    alias = _shared_names(state)
    out = {}
    for name, t in state.items():
        if name in alias:
            continue
        t = t.detach().to("cpu")
        out[name] = (t.float() if t.is_floating_point() else t).contiguous()
    return out


def _load_into(policy: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load ``state`` into ``policy`` strictly, filling the names of shared tensors that a
    weights-only file stores once; UserError if the weights do not fit."""
    state = dict(state)
    for name, first in _shared_names(policy.state_dict()).items():
        if name not in state and first in state:
            state[name] = state[first]
    try:
        policy.load_state_dict(state, strict=True)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise UserError(f"{path}: weights do not fit the IMPALA policy "
                        f"({' '.join(lines[:2])[:200]})") from None


def save_policy_weights(policy: nn.Module, path: str | os.PathLike, meta: dict[str, Any]) -> Path:
    """Write ``policy``'s weights to a ``.safetensors`` file with ``meta`` in its header, atomically.

    ``meta`` is the checkpoint metadata (env_name, distribution_mode, start_level, num_levels,
    use_backgrounds, timesteps, mean_return, reward, ret_rms, ...; ``format_version`` is added),
    stored as one JSON string under the header key ``trex_checkpoint``. Tensors: see
    :func:`policy_weights` (about 2.5 MB for the IMPALA policy).
    """
    from safetensors.torch import save_file

    path = Path(path)
    if not is_weights_file(path):
        raise UserError(f"a weights-only policy file must end in {WEIGHTS_SUFFIX}, got {path}")
    missing = [k for k in ("env_name", "timesteps") if k not in meta]
    if missing:
        raise ValueError(f"checkpoint metadata lacks {', '.join(missing)}")
    full_meta = {"format_version": CHECKPOINT_FORMAT_VERSION, **meta}
    header = {"format": WEIGHTS_FORMAT, "format_version": str(WEIGHTS_FORMAT_VERSION),
              WEIGHTS_META_KEY: json.dumps(full_meta, sort_keys=True)}
    with atomic_path(path) as tmp:
        save_file(policy_weights(policy), str(tmp), metadata=header)
    return path


def check_checkpoint_env(meta: dict[str, Any], path: str | os.PathLike, env_name: str | None) -> None:
    """UserError if the checkpoint was trained on another game than ``env_name``."""
    if env_name is not None and meta.get("env_name") != env_name:
        raise UserError(f"{path} is a checkpoint of {meta.get('env_name')!r}, not of {env_name!r}")


def load_policy(path: str | os.PathLike, device: torch.device | str | None = None,
                precision: str = "auto", expected_env: str | None = None
                ) -> tuple[ImpalaPolicy, dict[str, Any]]:
    """Rebuild a policy from a checkpoint (.zip or .safetensors) without unpickling:
    (policy in eval mode, meta)."""
    path = Path(path)
    meta = read_checkpoint_meta(path)
    check_checkpoint_env(meta, path, expected_env)
    device = pick_device() if device is None else torch.device(device)
    state = _read_weights(path, device)
    policy = ImpalaPolicy(
        spaces.Box(0, 255, (3, 64, 64), np.uint8), spaces.Discrete(NUM_ACTIONS),
        lambda _: 0.0, **precision_flags(precision, device),
    ).to(device)
    _load_into(policy, state, path)
    policy.set_precision(**precision_flags(precision, device))
    policy.eval()
    return policy, meta


def restore_training_state(model: PPO, path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint into ``model`` to train on: weights and step count, plus the
    optimizer state from a .zip (resume); a weights-only .safetensors starts a fresh
    optimizer (fine-tuning). Returns the checkpoint's metadata (with ``ret_rms`` if saved)."""
    path = Path(path)
    meta = read_checkpoint_meta(path)
    _load_into(model.policy, _read_weights(path, model.device), path)
    if is_weights_file(path):
        log.info("%s holds weights only: fine-tuning with a fresh optimizer", path)
    else:
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
    """``checkpoints.csv`` of a checkpoint directory: columns file, timesteps, mean_return
    (and whatever columns follow them). The files may be training .zip checkpoints or
    exported weights-only .safetensors files (export_policy).

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


# ----------------------------------------------------------------------------- shipping (export_policy)

BEST = "best"


def _finite_returns(manifest: pd.DataFrame, what: str, models_dir: str | os.PathLike) -> pd.DataFrame:
    rows = manifest[np.isfinite(manifest["mean_return"].astype(float))]
    if rows.empty:
        raise UserError(f"no checkpoint in {models_dir} has a recorded mean_return, which {what} needs")
    return rows


def select_checkpoints(manifest: pd.DataFrame, timesteps: Sequence[int | str] | None = None,
                       pick: int | None = None, models_dir: str | os.PathLike = "the manifest"
                       ) -> pd.DataFrame:
    """The manifest rows to export, oldest first, with a ``selected_by`` column.

    ``timesteps``: for each value the checkpoint nearest that step count (UserError if the
    nearest is further away than the largest gap between consecutive checkpoints, e.g. 1M asked
    of a run that stopped at 500k), or ``"best"``: the highest mean training return (the
    earliest of equals). ``pick`` N: N checkpoints spread over skill: the earliest and the
    best (among those with a recorded mean_return) and N-2 between them whose returns are
    nearest to evenly spaced targets from the earliest's to the best's return.
    """
    if (timesteps is None) == (pick is None):
        raise UserError("choose the checkpoints with either --timesteps or --pick")
    df = manifest.sort_values("timesteps", kind="stable").reset_index(drop=True)
    chosen: dict[int, list[str]] = {}

    def choose(i: int, why: str) -> None:
        chosen.setdefault(int(i), []).append(why)

    if timesteps is not None:
        steps = df["timesteps"].to_numpy(dtype=np.int64)
        gaps = np.diff(np.unique(steps))
        tolerance = int(gaps.max()) if len(gaps) else 0
        for want in timesteps:
            if want == BEST:
                rows = _finite_returns(df, "'best'", models_dir)
                choose(rows["mean_return"].astype(float).idxmax(), BEST)
                continue
            want = int(want)
            i = int(np.abs(steps - want).argmin())
            if abs(int(steps[i]) - want) > tolerance:
                raise UserError(f"no checkpoint in {models_dir} near {want} timesteps (nearest: "
                                f"{int(steps[i])}; checkpoints span {steps.min()} to {steps.max()})")
            choose(i, f"timesteps {want}")
    else:
        if pick is None or pick <= 0:
            raise UserError(f"--pick must be positive, got {pick}")
        rows = _finite_returns(df, "--pick", models_dir)
        if pick > len(rows):
            raise UserError(f"--pick {pick}: {models_dir} has only {len(rows)} checkpoint(s) "
                            "with a recorded mean_return")
        ret = rows["mean_return"].astype(float)
        first, best = int(rows.index[0]), int(ret.idxmax())
        if pick > 1 and first == best:
            raise UserError(f"--pick {pick}: the earliest checkpoint in {models_dir} is the best "
                            "one, so there is no skill range to spread over; use --timesteps")
        choose(best, BEST)
        if pick > 1:
            choose(first, "earliest")
            free = [int(i) for i in rows.index if int(i) not in chosen]
            for target in np.linspace(ret[first], ret[best], pick)[1:-1]:
                j = min(free, key=lambda i: (abs(ret[i] - target), i))
                free.remove(j)
                choose(j, f"return {target:.3g}")
    out = df.loc[sorted(chosen)].copy()
    out["selected_by"] = ["; ".join(dict.fromkeys(chosen[i])) for i in out.index]
    return out.reset_index(drop=True)


def export_checkpoints(models_dir: str | os.PathLike, out_dir: str | os.PathLike,
                       selection: pd.DataFrame) -> pd.DataFrame:
    """Write the weights-only ``.safetensors`` copies of the ``selection`` (rows of
    ``<models_dir>/checkpoints.csv``) into ``out_dir``, with its ``checkpoints.csv``
    (file, timesteps, mean_return, source, selected_by); returns that manifest.

    Every source is loaded and checked (one game and mode, an ``out_dir`` that is not a
    training run's directory) before anything is written; each file and then the manifest
    are written atomically. Files already listed in ``out_dir``'s manifest stay listed
    (exporting more checkpoints of the same game into it adds them; a re-export replaces).
    """
    models_dir, out_dir = Path(models_dir), Path(out_dir)
    if out_dir.resolve() == models_dir.resolve():
        raise UserError(f"--out_dir must differ from --models_dir ({models_dir})")
    loaded = []
    for row in selection.itertuples(index=False):
        src = models_dir / str(row.file)
        policy, meta = load_policy(src, device="cpu", precision="fp32")
        name = Path(str(row.file)).stem + WEIGHTS_SUFFIX
        loaded.append((name, src, row, policy, meta))
    names = [x[0] for x in loaded]
    if len(set(names)) < len(names):
        raise UserError(f"two selected checkpoints would both be written as one file ({', '.join(names)})")
    games = {(m.get("env_name"), m.get("distribution_mode", "easy")) for *_, m in loaded}
    old = _existing_shipped(out_dir)
    for _, r in old.iterrows():
        meta = read_checkpoint_meta(out_dir / str(r["file"]))
        games.add((meta.get("env_name"), meta.get("distribution_mode", "easy")))
    if len(games) > 1:
        listed = ", ".join(f"{g}/{m}" for g, m in sorted(games, key=str))
        raise UserError(f"one shipped folder holds one game and mode; this export would mix {listed} in {out_dir}")
    rows = []
    for name, src, row, policy, meta in loaded:
        # the training checkpoint it came from (kept when re-exporting an exported file)
        origin = meta.get("exported_from") if is_weights_file(src) else None
        meta = {**meta, "exported_from": origin or Path(str(row.file)).name}
        meta.pop("format_version", None)
        save_policy_weights(policy, out_dir / name, meta)
        rows.append({"file": name, "timesteps": int(row.timesteps), "mean_return": float(row.mean_return),
                     "source": str(row.file), "selected_by": row.selected_by})
        log.info("%s -> %s (%d timesteps, mean training return %.2f; %s)", src, out_dir / name,
                 int(row.timesteps), float(row.mean_return), row.selected_by)
    new = pd.DataFrame(rows)
    kept = old[~old["file"].astype(str).isin(set(names))]
    manifest = pd.concat([kept, new], ignore_index=True) if len(kept) else new
    manifest = manifest.sort_values("timesteps", kind="stable").reset_index(drop=True)
    columns = MANIFEST_COLUMNS + [c for c in manifest.columns if c not in MANIFEST_COLUMNS]
    with atomic_path(out_dir / MANIFEST_NAME) as tmp:
        manifest[columns].to_csv(tmp, index=False)
    return manifest[columns]


def _existing_shipped(out_dir: Path) -> pd.DataFrame:
    """The rows of ``out_dir``'s manifest whose file exists (empty if none); UserError if
    ``out_dir`` is a training run's directory (its manifest lists .zip checkpoints)."""
    manifest = out_dir / MANIFEST_NAME
    if not manifest.is_file():
        return pd.DataFrame(columns=MANIFEST_COLUMNS)
    df = read_csv_checked(manifest, "checkpoint manifest", MANIFEST_COLUMNS)
    if not all(is_weights_file(f) for f in df["file"].astype(str)):
        raise UserError(f"{out_dir} is a training run's directory (its {MANIFEST_NAME} lists .zip "
                        "checkpoints); export into another --out_dir")
    exists = [(out_dir / str(f)).is_file() for f in df["file"]]
    if not all(exists):
        log.warning("%s lists %d file(s) that are gone; they are dropped from it", manifest,
                    exists.count(False))
    return df[exists].drop_duplicates("file", keep="last").reset_index(drop=True)


#: level sets of test_policy and the manifest columns their scores go to
SCORE_COLUMNS = {"train": ("train_levels_return", "train_levels_se"),
                 "test": ("unseen_levels_return", "unseen_levels_se")}


def add_test_scores(out_dir: str | os.PathLike, test_csv: str | os.PathLike) -> pd.DataFrame:
    """Put test_policy's scores of an exported folder's files into its manifest: per level set
    the mean true return and its standard error (the latest test of each file), and the
    number of episodes behind them. Returns the manifest (written atomically)."""
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    tests = read_csv_checked(test_csv, "test_policy CSV",
                             ["load_path", "level_set", "return_mean", "return_std", "episodes"])
    tests = tests[tests["load_path"] != "random"]
    tests = tests.assign(_file=[Path(p).name for p in tests["load_path"]],
                         _dir=[str(Path(p).resolve().parent) for p in tests["load_path"]])
    tests = tests[tests["_dir"] == str(out_dir.resolve())]
    if tests.empty:
        raise UserError(f"{test_csv} has no test of a file in {out_dir}")
    for level_set, (mean_col, se_col) in SCORE_COLUMNS.items():
        latest = tests[tests["level_set"] == level_set].drop_duplicates("_file", keep="last").set_index("_file")
        manifest[mean_col] = [float(latest.loc[f, "return_mean"]) if f in latest.index else float("nan")
                              for f in manifest["file"]]
        manifest[se_col] = [float(latest.loc[f, "return_std"] / np.sqrt(latest.loc[f, "episodes"]))
                            if f in latest.index else float("nan") for f in manifest["file"]]
        manifest[f"{level_set}_episodes"] = [int(latest.loc[f, "episodes"]) if f in latest.index else 0
                                             for f in manifest["file"]]
    columns = MANIFEST_COLUMNS + [c for c in manifest.columns if c not in MANIFEST_COLUMNS]
    with atomic_path(out_dir / MANIFEST_NAME) as tmp:
        manifest[columns].to_csv(tmp, index=False, float_format="%.4g")
    return manifest[columns]
