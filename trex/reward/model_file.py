"""The reward-model file: weights in a ``.safetensors`` file whose header carries the
metadata (architecture, env, mode, num_dems, seed, training flags, format version), so one
file says what it is; loading it as a network or as a callable on frames."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trex.common.device import pick_device, use_bf16
from trex.common.errors import UserError
from trex.common.files import atomic_path
from trex.reward.nets import (
    ARCHITECTURE,
    FORMAT_VERSION,
    RewardNet,
    build_net,
    predict_frame_rewards,
    prepare_net,
)

FILE_FORMAT = "trex-reward-model"
MODEL_SUFFIX = ".safetensors"
#: metadata keys train_reward adds whose values are JSON (the level pool behind the model,
#: the ranking, the demos it was trained and validated on)
JSON_EXTRA_KEYS: tuple[str, ...] = (
    "start_level",
    "num_levels",
    "use_backgrounds",
    "n_train_levels",
    "train_demo_ids",
    "val_demo_ids",
)

# ----------------------------------------------------------------------------- file format


def _meta_str(v: Any) -> str:
    if isinstance(v, str):
        return v
    return json.dumps(v, sort_keys=True, default=str)


def save_reward_model(
    path: str | os.PathLike,
    net: RewardNet,
    *,
    env_name: str,
    mode: str,
    num_dems: int,
    seed: int,
    sequential: int = 0,
    rm_id: str = "",
    training: Mapping[str, Any] | None = None,
    results: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write the weights and metadata to ``path`` (safetensors, atomically); returns the path.

    ``extra``: more metadata (e.g. the level pool: start_level, num_levels, use_backgrounds,
    n_train_levels, rank_by), each value stored as JSON unless it is a string.
    ``architecture`` and ``net_config`` are what :func:`build_net` rebuilds the network
    from; an ensemble's tensors are stored stacked (leading dim K).
    """
    from safetensors.torch import save_file

    tensors = {
        k: v.detach().to("cpu", torch.float32).contiguous() for k, v in net.state_dict().items()
    }
    meta = {
        "format": FILE_FORMAT,
        "format_version": str(net.format_version),
        "architecture": net.architecture,
        "net_config": _meta_str(net.net_config),
        "env_name": env_name,
        "mode": mode,
        "num_dems": str(int(num_dems)),
        "seed": str(int(seed)),
        "sequential": str(int(sequential)),
        "rm_id": rm_id,
        "training": _meta_str(dict(training or {})),
        "results": _meta_str(dict(results or {})),
        **{str(k): _meta_str(v) for k, v in (extra or {}).items()},
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a reward model file, JSON fields decoded; UserError if missing/corrupt."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise UserError(f"reward model file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except Exception as err:  # safetensors raises its own error types, plus OSError/ValueError
        raise UserError(
            f"reward model file {path} is corrupt or not a safetensors file ({type(err).__name__})"
        ) from None
    if raw.get("format") != FILE_FORMAT:
        raise UserError(f"{path} is not a trex reward model (no '{FILE_FORMAT}' header)")
    if int(raw.get("format_version", "0")) > FORMAT_VERSION:
        raise UserError(
            f"{path} has format version {raw['format_version']}; this toolkit reads "
            f"up to {FORMAT_VERSION} (update it)"
        )
    meta: dict[str, Any] = dict(raw)
    for key in ("net_config", "training", "results"):
        try:
            meta[key] = json.loads(raw.get(key, "{}"))
        except json.JSONDecodeError:
            raise UserError(f"reward model file {path}: corrupt '{key}' metadata") from None
    for key in ("num_dems", "seed", "sequential", "format_version"):
        if key in meta:
            meta[key] = int(meta[key])
    for key in JSON_EXTRA_KEYS:
        if key in meta:
            try:
                meta[key] = json.loads(meta[key])
            except json.JSONDecodeError:
                raise UserError(f"reward model file {path}: corrupt '{key}' metadata") from None
    return meta


def check_model_matches(
    meta: Mapping[str, Any],
    path: str | os.PathLike,
    env_name: str | None = None,
    mode: str | None = None,
) -> None:
    """UserError if the model was trained on another game or distribution mode."""
    if env_name is not None and meta.get("env_name") != env_name:
        raise UserError(
            f"reward model {path} was trained on {meta.get('env_name')}, not {env_name}"
        )
    if mode is not None and meta.get("mode") != mode:
        raise UserError(f"reward model {path} was trained on {meta.get('mode')} mode, not {mode}")


def load_reward_model(
    path: str | os.PathLike,
    device: torch.device | str | None = None,
    env_name: str | None = None,
    mode: str | None = None,
    channels_last: bool = True,
) -> tuple[RewardNet, dict[str, Any]]:
    """Load ``<rm_id>.safetensors`` -> (net in eval mode on ``device``, metadata).

    Checks ``env_name``/``mode`` when given. UserError for a missing, corrupt or
    mismatching file; nothing else is read than the safetensors file (no pickle).
    """
    from safetensors.torch import load_file

    meta = read_metadata(path)
    check_model_matches(meta, path, env_name, mode)
    dev = pick_device("auto") if device is None else torch.device(device)
    net = build_net(meta.get("architecture", ARCHITECTURE), meta.get("net_config"))
    try:
        state = load_file(str(path), device="cpu")
    except Exception as err:
        raise UserError(f"reward model file {path} is corrupt ({type(err).__name__})") from None
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise UserError(
            f"reward model file {path} does not fit the {meta.get('architecture')} "
            f"network ({str(err).splitlines()[0]})"
        ) from None
    net = prepare_net(net, dev, channels_last)
    net.eval()
    return net, meta


class RewardFunction:
    """A loaded reward model as a function: uint8 frames -> per-frame rewards float32 (N,).

    ``frames`` may be (N, 64, 64, 3) (procgen's HWC, ``env.last_rgb``) or (N, 3, 64, 64)
    (SB3 observations); numpy or torch. They are the frames of one demo or episode in order
    (or of several laid end to end at ``offsets``): a frame-stacking model
    (:attr:`frame_stack` K > 1) scores frame t on frames t-K+1..t of its demo, the first
    frame repeated before the start, exactly as in training. Explicit stacks
    (N, K, 64, 64, 3) / (N, K, 3, 64, 64) are scored as given (PPO's wrapper keeps them per
    environment). One forward pass per call (chunked above ``batch_size`` frames). bf16
    autocast when the precision/device allow (fast path). An ensemble's reward is its
    members' mean; :meth:`members` gives every member's.
    """

    def __init__(
        self,
        net: RewardNet,
        meta: Mapping[str, Any],
        device: torch.device,
        bf16: bool,
        channels_last: bool = True,
        batch_size: int = 1024,
    ) -> None:
        self.net = net
        self.meta = dict(meta)
        self.device = device
        self.bf16 = bf16
        self.channels_last = channels_last
        self.batch_size = batch_size

    def __call__(
        self, frames: np.ndarray | torch.Tensor, offsets: np.ndarray | None = None
    ) -> np.ndarray:
        return self._predict(frames, offsets, members=False)

    def members(
        self, frames: np.ndarray | torch.Tensor, offsets: np.ndarray | None = None
    ) -> np.ndarray:
        """Every ensemble member's per-frame rewards float32 (M, N) (M = 1 for one network)."""
        return self._predict(frames, offsets, members=True)

    def _predict(
        self, frames: np.ndarray | torch.Tensor, offsets: np.ndarray | None, members: bool
    ) -> np.ndarray:
        return predict_frame_rewards(
            self.net,
            frames,
            self.device,
            self.bf16,
            self.channels_last,
            self.batch_size,
            offsets=offsets,
            members=members,
        )

    @property
    def frame_stack(self) -> int:
        """Frames per network input (1 = each frame alone)."""
        return self.net.frame_stack

    @property
    def rm_id(self) -> str:
        return str(self.meta.get("rm_id", ""))


def load_reward_function(
    path: str | os.PathLike,
    env_name: str | None = None,
    mode: str | None = None,
    device: str = "auto",
    precision: str = "auto",
) -> RewardFunction:
    """Load a reward model (checking its game/mode) as a :class:`RewardFunction`."""
    dev = pick_device(device)
    net, meta = load_reward_model(path, dev, env_name=env_name, mode=mode)
    return RewardFunction(net, meta, dev, use_bf16(precision, dev))
