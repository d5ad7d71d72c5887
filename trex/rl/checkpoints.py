"""Policy checkpoints: SB3 ``.zip`` training checkpoints and weights-only ``.safetensors``
files (read alike, dispatched on the suffix), and the ``checkpoints.csv`` manifest of a run."""

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
from torch import nn

from trex.common.device import pick_device
from trex.common.envs import NUM_ACTIONS
from trex.common.errors import UserError
from trex.common.files import append_csv_rows, atomic_path, read_csv_checked
from trex.rl.policy import ImpalaPolicy, precision_flags

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

# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(model: PPO, path: str | os.PathLike, meta: dict[str, Any]) -> Path:
    """Save ``model`` as an SB3 .zip with ``trex_checkpoint.json`` added, atomically.

    Rollout leftovers (last observations, episode buffers) are not saved: they are
    rebuilt on resume and would make every file a megabyte larger.
    """
    path = Path(path)
    full_meta = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "timesteps": int(model.num_timesteps),
        **meta,
    }
    with atomic_path(path, suffix=".zip") as tmp:
        model.save(
            tmp,
            exclude=[
                "_last_obs",
                "_last_original_obs",
                "_last_episode_starts",
                "ep_info_buffer",
                "ep_success_buffer",
                "tensorboard_log",
            ],
        )
        with zipfile.ZipFile(tmp, "a") as zf:
            zf.writestr(CHECKPOINT_META, json.dumps(full_meta, indent=2, sort_keys=True))
    return path


def is_weights_file(path: str | os.PathLike) -> bool:
    """True for a weights-only ``.safetensors`` checkpoint; any other file is read as an SB3
    ``.zip``."""
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
        raise _not_a_checkpoint(
            path, f"corrupt or truncated safetensors file: {_first_line(err)}"
        ) from None
    if header.get("format") != WEIGHTS_FORMAT or WEIGHTS_META_KEY not in header:
        raise _not_a_checkpoint(path, f"a safetensors file without {WEIGHTS_FORMAT!r} metadata")
    try:
        version = int(header.get("format_version", "0"))
        meta = json.loads(header[WEIGHTS_META_KEY])
    except (ValueError, json.JSONDecodeError):
        raise _not_a_checkpoint(path, "corrupt metadata") from None
    if version > WEIGHTS_FORMAT_VERSION:
        raise UserError(
            f"{path} has policy file format version {version}; this toolkit reads "
            f"up to {WEIGHTS_FORMAT_VERSION} (update it)"
        )
    if not isinstance(meta, dict):
        raise _not_a_checkpoint(path, "corrupt metadata")
    return meta


def _load_member(path: Path, member: str, device: torch.device) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(path) as zf:
            data = zf.read(member)
        return torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    except (zipfile.BadZipFile, KeyError, RuntimeError, OSError, EOFError) as err:
        raise UserError(
            f"{path}: cannot read {member} ({type(err).__name__}); the checkpoint is corrupt"
        ) from None


def _read_weights(path: Path, device: torch.device) -> dict[str, torch.Tensor]:
    """The state_dict tensors stored in a checkpoint of either format (no pickle)."""
    if not is_weights_file(path):
        return _load_member(path, "policy.pth", device)
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as err:
        raise UserError(
            f"{path}: cannot read the weights ({_first_line(err)}); the checkpoint is corrupt"
        ) from None


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
        raise UserError(
            f"{path}: weights do not fit the IMPALA policy ({' '.join(lines[:2])[:200]})"
        ) from None


def save_policy_weights(policy: nn.Module, path: str | os.PathLike, meta: dict[str, Any]) -> Path:
    """Write ``policy``'s weights to a ``.safetensors`` file with ``meta`` in its header,
    atomically.

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
    header = {
        "format": WEIGHTS_FORMAT,
        "format_version": str(WEIGHTS_FORMAT_VERSION),
        WEIGHTS_META_KEY: json.dumps(full_meta, sort_keys=True),
    }
    with atomic_path(path) as tmp:
        save_file(policy_weights(policy), str(tmp), metadata=header)
    return path


def check_checkpoint_env(
    meta: dict[str, Any], path: str | os.PathLike, env_name: str | None
) -> None:
    """UserError if the checkpoint was trained on another game than ``env_name``."""
    if env_name is not None and meta.get("env_name") != env_name:
        raise UserError(f"{path} is a checkpoint of {meta.get('env_name')!r}, not of {env_name!r}")


def load_policy(
    path: str | os.PathLike,
    device: torch.device | str | None = None,
    precision: str = "auto",
    expected_env: str | None = None,
) -> tuple[ImpalaPolicy, dict[str, Any]]:
    """Rebuild a policy from a checkpoint (.zip or .safetensors) without unpickling:
    (policy in eval mode, meta)."""
    path = Path(path)
    meta = read_checkpoint_meta(path)
    check_checkpoint_env(meta, path, expected_env)
    device = pick_device() if device is None else torch.device(device)
    state = _read_weights(path, device)
    policy = ImpalaPolicy(
        spaces.Box(0, 255, (3, 64, 64), np.uint8),
        spaces.Discrete(NUM_ACTIONS),
        lambda _: 0.0,
        **precision_flags(precision, device),
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
        model.policy.optimizer.load_state_dict(
            _load_member(path, "policy.optimizer.pth", model.device)
        )
    model.num_timesteps = int(meta.get("timesteps", 0))
    return meta


# ----------------------------------------------------------------------------- manifest


def append_manifest(
    models_dir: str | os.PathLike, file: str, timesteps: int, mean_return: float
) -> None:
    """Add a checkpoint to ``<models_dir>/checkpoints.csv`` (file relative to models_dir)."""
    append_csv_rows(
        Path(models_dir) / MANIFEST_NAME,
        [{"file": file, "timesteps": int(timesteps), "mean_return": float(mean_return)}],
        columns=MANIFEST_COLUMNS,
    )


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
        raise UserError(
            f"no {MANIFEST_NAME} in {models_dir} (is it a train_policy checkpoint directory?)"
        )
    df = read_csv_checked(manifest, "checkpoint manifest", MANIFEST_COLUMNS)
    df = df.drop_duplicates("file", keep="last")
    df = df[[(models_dir / f).is_file() for f in df["file"]]].reset_index(drop=True)
    if df.empty:
        raise UserError(f"{manifest} lists no checkpoint file that exists")
    return df
