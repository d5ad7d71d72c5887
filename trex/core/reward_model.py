"""The T-REX reward network, its safetensors file format, and the ``rm_infos`` lookup.

Network: the seed project's reward CNN (lzil/procedural-generalization, trex/train_reward.py):
three 3x3 convolutions with 32 channels (the first two each followed by a 4x4/2 max-pool),
leaky ReLUs, a 64-unit dense layer and one output per frame. Like the seed it takes the raw
pixel values 0..255 as floats (no rescaling) and, with ``output_abs``, outputs |r|.
A snippet's predicted return is the sum of its frames' rewards (T-REX, Brown et al. 2019,
arXiv 1904.06387, Sec. 4).

File: ``<rm_id>.safetensors`` holds the weights; the safetensors header's metadata (all
strings) says what the file is: ``format`` = ``trex-reward-model``, ``format_version``,
``architecture``, ``net_config`` (JSON), ``env_name``, ``mode``, ``num_dems``, ``seed``,
``sequential``, ``rm_id``, ``training`` (JSON of the run's flags) and ``results`` (JSON).

For later stages (PPO on the learned reward): :func:`load_reward_function` loads a model,
checks its game and mode, and returns a :class:`RewardFunction` that maps a batch of frames
(N, 64, 64, 3) or (N, 3, 64, 64) uint8 to per-frame rewards in one forward pass.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from trex.core.device import autocast, pick_device, use_bf16
from trex.core.runs import UserError, atomic_path

log = logging.getLogger(__name__)

FILE_FORMAT = "trex-reward-model"
FORMAT_VERSION = 1
ARCHITECTURE = "seed_cnn"
MODEL_SUFFIX = ".safetensors"
#: rm_infos.csv columns of the seed project, in its order (DESIGN.md); ours follow them
SEED_RM_COLUMNS: list[str] = [
    "rm_id", "method", "env_name", "mode", "num_dems", "max_return", "max_length",
    "sequential", "train_acc", "val_acc", "test_acc", "pearson", "spearman",
]
RM_COLUMNS: list[str] = SEED_RM_COLUMNS + [
    "seed", "n_test_demos", "baseline_pearson", "baseline_spearman", "gt_snippet_acc",
    "wall_s", "max_return_frac", "epochs", "best_epoch", "precision", "device",
    "model_file", "run_dir",
    # level pool and ranking behind the model
    "rank_by", "start_level", "num_levels", "use_backgrounds", "n_train_levels",
    # intervals and content metrics on the test demos (trex.core.metrics.reward_metrics)
    "pearson_lo", "pearson_hi", "spearman_lo", "spearman_hi", "baseline_pearson_lo",
    "baseline_pearson_hi", "baseline_spearman_lo", "baseline_spearman_hi",
    "partial", "partial_lo", "partial_hi", "window_pearson", "window_pearson_lo",
    "window_pearson_hi", "window", "n_windows",
]
FRAME_SHAPE_HWC = (64, 64, 3)
#: metadata keys train_reward adds whose values are JSON (the level pool behind the model,
#: the ranking, the demos it was trained and validated on)
JSON_EXTRA_KEYS: tuple[str, ...] = ("start_level", "num_levels", "use_backgrounds", "n_train_levels",
                                    "train_demo_ids", "val_demo_ids")


# ----------------------------------------------------------------------------- network


class RewardNet(nn.Module):
    """The seed's reward CNN: float frames (N, 3, 64, 64) in 0..255 -> rewards (N,).

    Parameter names (``model.0.weight`` ...) are the seed's, so its state dicts map 1:1.
    """

    architecture = ARCHITECTURE

    def __init__(self, output_abs: bool = False) -> None:
        super().__init__()
        self.output_abs = bool(output_abs)
        self.model = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=1),
            nn.MaxPool2d(4, stride=2),
            nn.LeakyReLU(),
            nn.Conv2d(32, 32, 3, stride=1),
            nn.MaxPool2d(4, stride=2),
            nn.LeakyReLU(),
            nn.Conv2d(32, 32, 3, stride=1),
            nn.LeakyReLU(),
            nn.Flatten(),
            nn.Linear(11 * 11 * 32, 64),
            nn.LeakyReLU(),
            nn.Linear(64, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: float (N, 3, 64, 64) -> per-frame rewards (N,) (fp32 even under autocast)."""
        r = self.model(x).squeeze(-1).float()
        return r.abs() if self.output_abs else r

    @property
    def net_config(self) -> dict[str, Any]:
        """Constructor arguments, stored in the model file."""
        return {"output_abs": self.output_abs}


def build_net(architecture: str = ARCHITECTURE, net_config: Mapping[str, Any] | None = None) -> RewardNet:
    """A fresh network of ``architecture`` (only ``seed_cnn`` exists)."""
    if architecture != ARCHITECTURE:
        raise UserError(f"unknown reward network architecture {architecture!r} (known: {ARCHITECTURE})")
    return RewardNet(**dict(net_config or {}))


def prepare_net(net: RewardNet, device: torch.device, channels_last: bool = True) -> RewardNet:
    """Move ``net`` to ``device`` (channels_last memory format for the fast path)."""
    net = net.to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net


def frames_to_input(frames: np.ndarray | torch.Tensor, device: torch.device,
                    channels_last: bool = True) -> torch.Tensor:
    """uint8 frames (N, 64, 64, 3) or (N, 3, 64, 64) -> float (N, 3, 64, 64) on ``device``.

    Pixel values stay 0..255 (as in the seed). The uint8 data goes to the device before the
    float conversion (4x less to copy). HWC input permuted to NCHW is already channels_last
    in memory, so the fast path costs no copy.
    """
    x = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if x.ndim != 4:
        raise ValueError(f"expected frames (N, 64, 64, 3) or (N, 3, 64, 64), got shape {tuple(x.shape)}")
    if x.shape[-1] == 3 and x.shape[1] != 3:
        x = x.permute(0, 3, 1, 2)
    elif x.shape[1] != 3:
        raise ValueError(f"expected frames (N, 64, 64, 3) or (N, 3, 64, 64), got shape {tuple(x.shape)}")
    if tuple(x.shape[2:]) != FRAME_SHAPE_HWC[:2]:
        raise ValueError(f"expected 64x64 frames, got shape {tuple(x.shape)}")
    x = x.to(device, non_blocking=True).float()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=fmt)


@torch.no_grad()
def predict_frame_rewards(net: RewardNet, frames: np.ndarray | torch.Tensor, device: torch.device,
                          bf16: bool = False, channels_last: bool = True,
                          batch_size: int = 1024) -> np.ndarray:
    """Per-frame rewards float32 (N,) for uint8 frames (N, 64, 64, 3) or (N, 3, 64, 64),
    in chunks of ``batch_size`` frames (one forward per chunk)."""
    n = len(frames)
    out = np.empty(n, dtype=np.float32)
    was_training = net.training
    net.eval()
    try:
        for lo in range(0, n, batch_size):
            x = frames_to_input(frames[lo:lo + batch_size], device, channels_last)
            with autocast(device, bf16):
                out[lo:lo + len(x)] = net(x).float().cpu().numpy()
    finally:
        net.train(was_training)
    return out


# ----------------------------------------------------------------------------- file format


def _meta_str(v: Any) -> str:
    if isinstance(v, str):
        return v
    return json.dumps(v, sort_keys=True, default=str)


def save_reward_model(path: str | os.PathLike, net: RewardNet, *, env_name: str, mode: str,
                      num_dems: int, seed: int, sequential: int = 0, rm_id: str = "",
                      training: Mapping[str, Any] | None = None,
                      results: Mapping[str, Any] | None = None,
                      extra: Mapping[str, Any] | None = None) -> Path:
    """Write the weights and metadata to ``path`` (safetensors, atomically); returns the path.

    ``extra``: more metadata (e.g. the level pool: start_level, num_levels, use_backgrounds,
    n_train_levels, rank_by), each value stored as JSON unless it is a string.
    """
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in net.state_dict().items()}
    meta = {
        "format": FILE_FORMAT,
        "format_version": str(FORMAT_VERSION),
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
        raise UserError(f"reward model file {path} is corrupt or not a safetensors file "
                        f"({type(err).__name__})") from None
    if raw.get("format") != FILE_FORMAT:
        raise UserError(f"{path} is not a trex reward model (no '{FILE_FORMAT}' header)")
    if int(raw.get("format_version", "0")) > FORMAT_VERSION:
        raise UserError(f"{path} has format version {raw['format_version']}; this toolkit reads "
                        f"up to {FORMAT_VERSION} (update it)")
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


def check_model_matches(meta: Mapping[str, Any], path: str | os.PathLike,
                        env_name: str | None = None, mode: str | None = None) -> None:
    """UserError if the model was trained on another game or distribution mode."""
    if env_name is not None and meta.get("env_name") != env_name:
        raise UserError(f"reward model {path} was trained on {meta.get('env_name')}, not {env_name}")
    if mode is not None and meta.get("mode") != mode:
        raise UserError(f"reward model {path} was trained on {meta.get('mode')} mode, not {mode}")


def load_reward_model(path: str | os.PathLike, device: torch.device | str | None = None,
                      env_name: str | None = None, mode: str | None = None,
                      channels_last: bool = True) -> tuple[RewardNet, dict[str, Any]]:
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
        raise UserError(f"reward model file {path} does not fit the {meta.get('architecture')} "
                        f"network ({str(err).splitlines()[0]})") from None
    net = prepare_net(net, dev, channels_last)
    net.eval()
    return net, meta


class RewardFunction:
    """A loaded reward model as a function: uint8 frames -> per-frame rewards float32 (N,).

    ``frames`` may be (N, 64, 64, 3) (procgen's HWC, ``env.last_rgb``) or (N, 3, 64, 64)
    (SB3 observations); numpy or torch. One forward pass per call (chunked above
    ``batch_size`` frames). bf16 autocast when the precision/device allow (fast path).
    """

    def __init__(self, net: RewardNet, meta: Mapping[str, Any], device: torch.device,
                 bf16: bool, channels_last: bool = True, batch_size: int = 1024) -> None:
        self.net = net
        self.meta = dict(meta)
        self.device = device
        self.bf16 = bf16
        self.channels_last = channels_last
        self.batch_size = batch_size

    def __call__(self, frames: np.ndarray | torch.Tensor) -> np.ndarray:
        return predict_frame_rewards(self.net, frames, self.device, self.bf16,
                                     self.channels_last, self.batch_size)

    @property
    def rm_id(self) -> str:
        return str(self.meta.get("rm_id", ""))


def load_reward_function(path: str | os.PathLike, env_name: str | None = None,
                         mode: str | None = None, device: str = "auto",
                         precision: str = "auto") -> RewardFunction:
    """Load a reward model (checking its game/mode) as a :class:`RewardFunction`."""
    dev = pick_device(device)
    net, meta = load_reward_model(path, dev, env_name=env_name, mode=mode)
    return RewardFunction(net, meta, dev, use_bf16(precision, dev))


# ----------------------------------------------------------------------------- rm_infos


def rm_csv_name(save_name: str | None) -> str:
    """``rm_infos.csv`` or ``rm_infos_<save_name>.csv`` (the seed's names)."""
    return "rm_infos.csv" if not save_name else f"rm_infos_{save_name}.csv"


def model_dir_name(save_name: str | None) -> str:
    """``model_files`` or ``model_files_<save_name>`` (the seed's names)."""
    return "model_files" if not save_name else f"model_files_{save_name}"


def rm_id_from_seed(seed: int) -> str:
    """The seed project's reward model id: the seed's digits split after the third
    (seed 1234567 -> ``123_4567``)."""
    s = f"{int(seed):07d}"  # short seeds zero-padded: 77 -> 000_0077, never "77_"
    return f"{s[:3]}_{s[3:]}"


def read_rm_infos(csv_path: str | os.PathLike) -> pd.DataFrame:
    """Read an ``rm_infos*.csv`` (rm_id kept as text); UserError naming the file on problems."""
    p = Path(csv_path)
    if not p.is_file():
        raise UserError(f"reward model index not found: {p}")
    try:
        df = pd.read_csv(p, dtype={"rm_id": str, "env_name": str, "mode": str,
                                   "model_file": str, "run_dir": str})
    except pd.errors.EmptyDataError:
        raise UserError(f"reward model index {p} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise UserError(f"reward model index {p} is not a valid CSV ({str(err).splitlines()[0]})") from None
    missing = [c for c in ("rm_id", "env_name", "mode") if c not in df.columns]
    if missing:
        raise UserError(f"reward model index {p} lacks column(s) {', '.join(missing)}")
    dup = df["rm_id"].duplicated(keep="last")
    if dup.any():  # written by an older version on a retried run: the last row is the model on disk
        log.warning("%s holds %d repeated rm_id row(s) (e.g. %s): keeping the last of each", p,
                    int(dup.sum()), df.loc[dup, "rm_id"].iloc[0])
        df = df[~dup].reset_index(drop=True)
    return df


def lookup_rm(rm_id: str, csv_path: str | os.PathLike) -> tuple[dict[str, Any], Path]:
    """(the rm_infos row of ``rm_id``, its model file path). The last row wins if an id was
    written twice. The path comes from the ``model_file`` column (relative to the CSV),
    else ``model_files/<rm_id>.safetensors`` next to the CSV. UserError if absent."""
    df = read_rm_infos(csv_path)
    rows = df[df["rm_id"] == str(rm_id)]
    if rows.empty:
        raise UserError(f"rm_id {rm_id} is not in {csv_path}")
    row = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in rows.iloc[-1].to_dict().items()}
    base = Path(csv_path).resolve().parent
    rel = row.get("model_file")
    if isinstance(rel, str) and rel:
        path = base / rel
    else:
        path = base / model_dir_name(None) / f"{rm_id}{MODEL_SUFFIX}"
    return row, path


def resolve_reward_model(rm: str | os.PathLike, rm_csv: str | os.PathLike | None = None) -> Path:
    """A model file path from either a path to a ``.safetensors`` file or an rm_id looked up
    in ``rm_csv`` (default ``reward_models/rm_infos.csv``)."""
    text = str(rm)
    if text.endswith(MODEL_SUFFIX) or os.sep in text:
        return Path(text)
    _, path = lookup_rm(text, rm_csv or Path("reward_models") / rm_csv_name(None))
    return path
