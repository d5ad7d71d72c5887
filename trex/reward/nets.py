"""The T-REX reward network, its safetensors file format, and the ``rm_infos`` lookup.

Network: the original project's reward CNN (lzil/procedural-generalization, trex/train_reward.py):
three 3x3 convolutions with 32 channels (the first two each followed by a 4x4/2 max-pool),
leaky ReLUs, a 64-unit dense layer and one output per frame. Like the original it takes the raw
pixel values 0..255 as floats (no rescaling) and, with ``output_abs``, outputs |r|.
A snippet's predicted return is the sum of its frames' rewards (T-REX, Brown et al. 2019,
arXiv 1904.06387, Sec. 4).

Variants (each off by default, see :mod:`trex.reward.variants`): a stack of the last K
frames as input (``frame_stack``), frames divided by 255 (``scale_frames``), the IMPALA CNN
encoder (architecture ``impala``), and an ensemble of K networks trained together whose mean
is the reward (``ensemble``, :class:`RewardEnsemble`).

File: ``<rm_id>.safetensors`` holds the weights; the safetensors header's metadata (all
strings) says what the file is: ``format`` = ``trex-reward-model``, ``format_version``,
``architecture``, ``net_config`` (JSON), ``env_name``, ``mode``, ``num_dems``, ``seed``,
``sequential``, ``rm_id``, ``training`` (JSON of the run's flags) and ``results`` (JSON).
``net_config`` holds what rebuilding the network needs (``output_abs``; ``frame_stack``,
``scale_frames``, ``ensemble`` when not the original project's); the original project's network
is written as format version 1, any variant as version 2.

For later stages (PPO on the learned reward): :func:`load_reward_function` loads a model,
checks its game and mode, and returns a :class:`RewardFunction` that maps a batch of frames
(N, 64, 64, 3) or (N, 3, 64, 64) uint8 to per-frame rewards in one forward pass.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from trex.common.device import autocast, network_chunk
from trex.common.errors import UserError
from trex.reward.variants import check_variant, stack_indices

log = logging.getLogger(__name__)

ARCHITECTURE = "seed_cnn"
#: the newest file format: 1 = the original project's network; 2 adds the variants (frame stacks,
#: scaled frames, the IMPALA encoder, ensembles). An upstream network's file stays version 1.
FORMAT_VERSION = 2
#: rm_infos.csv columns of the original project, in its order (DESIGN.md); ours follow them
UPSTREAM_RM_COLUMNS: list[str] = [
    "rm_id",
    "method",
    "env_name",
    "mode",
    "num_dems",
    "max_return",
    "max_length",
    "sequential",
    "train_acc",
    "val_acc",
    "test_acc",
    "pearson",
    "spearman",
]
#: the former name of :data:`UPSTREAM_RM_COLUMNS`
SEED_RM_COLUMNS = UPSTREAM_RM_COLUMNS
RM_COLUMNS: list[str] = UPSTREAM_RM_COLUMNS + [
    "seed",
    "n_test_demos",
    "baseline_pearson",
    "baseline_spearman",
    "gt_snippet_acc",
    "wall_s",
    "max_return_frac",
    "epochs",
    "best_epoch",
    "precision",
    "device",
    "model_file",
    "run_dir",
    # level pool and ranking behind the model
    "rank_by",
    "start_level",
    "num_levels",
    "use_backgrounds",
    "n_train_levels",
    # intervals and content metrics on the test demos (trex.reward.metrics.reward_metrics)
    "pearson_lo",
    "pearson_hi",
    "spearman_lo",
    "spearman_hi",
    "baseline_pearson_lo",
    "baseline_pearson_hi",
    "baseline_spearman_lo",
    "baseline_spearman_hi",
    "partial",
    "partial_lo",
    "partial_hi",
    "window_pearson",
    "window_pearson_lo",
    "window_pearson_hi",
    "window",
    "n_windows",
    # the variant (trex.reward.variants.variant_name) and an ensemble's disagreement
    "variant",
    "ensemble_spread",
    "ensemble_spread_rel",
]
FRAME_SHAPE_HWC = (64, 64, 3)


# ----------------------------------------------------------------------------- network


class RewardNet(nn.Module):
    """Base of the reward networks: float frames (N, 3K, 64, 64) -> per-frame rewards (N,).

    K = ``frame_stack`` frames on the channel axis, oldest first (see
    :mod:`trex.reward.variants`); pixel values 0..255 as floats (the original project's input),
    divided by 255 inside the network when ``scale_frames``. :meth:`forward_members` gives
    every member's rewards (M, N): M = 1 except for a :class:`RewardEnsemble`.
    """

    architecture: str = ARCHITECTURE
    ensemble_size: int = 1

    def __init__(
        self, output_abs: bool = False, frame_stack: int = 1, scale_frames: bool = False
    ) -> None:
        super().__init__()
        self.output_abs = bool(output_abs)
        self.frame_stack = int(frame_stack)
        self.scale_frames = bool(scale_frames)

    @property
    def in_channels(self) -> int:
        """Input channels: 3 per stacked frame."""
        return 3 * self.frame_stack

    def _scaled(self, x: torch.Tensor) -> torch.Tensor:
        return x / 255.0 if self.scale_frames else x

    def _reward(self, out: torch.Tensor) -> torch.Tensor:
        """(N, 1) head output -> fp32 rewards (N,), |r| with ``output_abs``."""
        r = out.squeeze(-1).float()
        return r.abs() if self.output_abs else r

    def forward_members(self, x: torch.Tensor) -> torch.Tensor:
        """x: float (N, 3K, 64, 64) -> every member's rewards fp32 (M, N)."""
        return self(x).unsqueeze(0)

    @property
    def net_config(self) -> dict[str, Any]:
        """Constructor arguments, stored in the model file: ``output_abs`` and the settings
        that differ from the original project's (so an upstream network's file is the
        version-1 format's)."""
        cfg: dict[str, Any] = {"output_abs": self.output_abs}
        if self.frame_stack != 1:
            cfg["frame_stack"] = self.frame_stack
        if self.scale_frames:
            cfg["scale_frames"] = True
        return cfg

    @property
    def format_version(self) -> int:
        """The oldest file format that describes this network: 1 for the original project's network,
        2 for any variant (a reader of version 1 would rebuild it wrongly)."""
        seed_like = self.architecture == ARCHITECTURE and set(self.net_config) == {"output_abs"}
        return 1 if seed_like else FORMAT_VERSION


class MaxPool4x2(nn.MaxPool2d):
    """``nn.MaxPool2d(4, stride=2)`` (the original project's pooling), faster without autograd.

    A 4-wide window at stride 2 is the maximum of two neighbouring 2-wide blocks at stride 2,
    so without gradients the output is four elementwise maxima of strided views (N, C, H, W)
    -> (N, C, (H - 4) // 2 + 1, (W - 4) // 2 + 1): the same values exactly, without the
    indices PyTorch's CPU kernel computes for a backward that will not come (2x faster on
    bf16 channels_last frames, benchmarks/README.md). With gradients: ``nn.MaxPool2d``'s own
    forward and backward."""

    def __init__(self) -> None:
        super().__init__(4, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return super().forward(x)
        h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
        x = x[..., :h, :w]
        rows = torch.maximum(x[..., 0::2, :], x[..., 1::2, :])  # 2-row blocks
        rows = torch.maximum(rows[..., :-1, :], rows[..., 1:, :])  # two blocks: 4 rows
        cols = torch.maximum(rows[..., 0::2], rows[..., 1::2])
        return torch.maximum(cols[..., :-1], cols[..., 1:])


class CnnRewardNet(RewardNet):
    """The original project's reward CNN: float frames (N, 3K, 64, 64) in 0..255 -> rewards (N,).

    Parameter names (``model.0.weight`` ...) are the original project's, so its state dicts map 1:1.
    """

    architecture = ARCHITECTURE

    def __init__(
        self, output_abs: bool = False, frame_stack: int = 1, scale_frames: bool = False
    ) -> None:
        super().__init__(output_abs, frame_stack, scale_frames)
        self.model = nn.Sequential(
            nn.Conv2d(self.in_channels, 32, 3, stride=1),
            MaxPool4x2(),
            nn.LeakyReLU(),
            nn.Conv2d(32, 32, 3, stride=1),
            MaxPool4x2(),
            nn.LeakyReLU(),
            nn.Conv2d(32, 32, 3, stride=1),
            nn.LeakyReLU(),
            nn.Flatten(),
            nn.Linear(11 * 11 * 32, 64),
            nn.LeakyReLU(),
            nn.Linear(64, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: float (N, 3K, 64, 64) -> per-frame rewards (N,) (fp32 even under autocast)."""
        return self._reward(self.model(self._scaled(x)))


class ImpalaRewardNet(RewardNet):
    """The IMPALA CNN encoder (Espeholt et al. 2018, arXiv 1802.01561, as in train-procgen,
    Cobbe et al. 2020, arXiv 1912.01588) with a linear reward head: three stacks of
    conv3x3 -> max-pool 3x3/2 -> two residual blocks (depths 16, 32, 32; the policy's
    :class:`trex.nets.impala.ConvSequence`), ReLU, a 256-unit dense layer + ReLU, a linear
    layer to one reward per frame. Float frames (N, 3K, 64, 64) -> rewards (N,)."""

    architecture = "impala"

    def __init__(
        self, output_abs: bool = False, frame_stack: int = 1, scale_frames: bool = False
    ) -> None:
        super().__init__(output_abs, frame_stack, scale_frames)
        from trex.nets.impala import EMBEDDING_DIM, impala_stacks

        self.stacks, flat = impala_stacks(self.in_channels, FRAME_SHAPE_HWC[0], FRAME_SHAPE_HWC[1])
        self.fc = nn.Linear(flat, EMBEDDING_DIM)
        self.head = nn.Linear(EMBEDDING_DIM, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: float (N, 3K, 64, 64) -> per-frame rewards (N,) (fp32 even under autocast)."""
        x = torch.relu(torch.flatten(self.stacks(self._scaled(x)), 1))
        return self._reward(self.head(torch.relu(self.fc(x))))


#: the single-network architectures by name
NETWORKS: dict[str, type[RewardNet]] = {"seed_cnn": CnnRewardNet, "impala": ImpalaRewardNet}


class RewardEnsemble(RewardNet):
    """K reward networks of one architecture, trained together, differing by their init.

    Parameters are stacked along a leading K dim (``torch.func.stack_module_state``) and
    live in :attr:`members` under the member's names (``members.model.0.weight`` of shape
    (K, 32, 3, 3, 3) ...); a member is run with ``torch.func.functional_call`` on a
    parameter-free template. :meth:`forward_members` gives all members' rewards (K, N) from
    one call on the same input: under ``torch.vmap`` (one batched forward, grouped
    convolutions) when ``vmap`` is True, member after member on slices of the stacked
    parameters when False; None (default) picks vmap on CUDA and the member loop on CPU,
    where vmap's grouped convolutions measured ~5x slower than the loop (torch 2.13, 2 cores,
    fp32 and bf16). Both give the same numbers. The reward (:meth:`forward`) is the members'
    mean. The stacked 5-d convolution weights have no channels_last format, so
    :func:`prepare_net` leaves them contiguous (the input may still be channels_last).
    """

    def __init__(
        self,
        architecture: str,
        member_config: Mapping[str, Any] | None,
        size: int,
        vmap: bool | None = None,
    ) -> None:
        from torch.func import stack_module_state

        if size < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {size}")
        members = [_build_member(architecture, member_config) for _ in range(size)]
        first = members[0]
        super().__init__(first.output_abs, first.frame_stack, first.scale_frames)
        self.architecture = first.architecture
        self.ensemble_size = int(size)
        self.vmap = vmap
        params, buffers = stack_module_state(members)
        # the template runs a member; kept outside the module tree (no device, no state)
        object.__setattr__(self, "_template", copy.deepcopy(first).to("meta"))
        self.members = first
        for name, p in params.items():
            owner, _, leaf = name.rpartition(".")
            setattr(self.members.get_submodule(owner), leaf, nn.Parameter(p.detach().clone()))
        for name, b in buffers.items():
            owner, _, leaf = name.rpartition(".")
            self.members.get_submodule(owner).register_buffer(leaf, b.detach().clone())

    def _member(
        self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor
    ) -> torch.Tensor:
        from torch.func import functional_call

        return functional_call(self._template, (params, buffers), (x,))

    def _use_vmap(self, x: torch.Tensor) -> bool:
        return x.device.type == "cuda" if self.vmap is None else bool(self.vmap)

    def forward_members(self, x: torch.Tensor) -> torch.Tensor:
        """x: float (N, 3K, 64, 64) -> every member's rewards fp32 (K, N)."""
        params = dict(self.members.named_parameters())
        buffers = dict(self.members.named_buffers())
        if self._use_vmap(x):
            return torch.vmap(self._member, in_dims=(0, 0, None))(params, buffers, x)
        return torch.stack(
            [
                self._member(
                    {k: v[i] for k, v in params.items()}, {k: v[i] for k, v in buffers.items()}, x
                )
                for i in range(self.ensemble_size)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: float (N, 3K, 64, 64) -> the members' mean reward (N,)."""
        return self.forward_members(x).mean(dim=0)

    def member(self, i: int) -> RewardNet:
        """A standalone copy of member ``i`` (its own parameters, on the ensemble's device)."""
        net = _build_member(self.architecture, self._template.net_config)
        state = {k[len("members.") :]: v[i] for k, v in self.state_dict().items()}
        net.load_state_dict(state)
        return net.to(next(self.parameters()).device)

    def train(self, mode: bool = True) -> RewardEnsemble:
        super().train(mode)
        self._template.train(mode)
        return self

    @property
    def net_config(self) -> dict[str, Any]:
        return {**self._template.net_config, "ensemble": self.ensemble_size}


def _build_member(architecture: str, net_config: Mapping[str, Any] | None) -> RewardNet:
    if architecture not in NETWORKS:
        raise UserError(
            f"unknown reward network architecture {architecture!r} (known: {', '.join(NETWORKS)})"
        )
    cfg = dict(net_config or {})
    try:
        return NETWORKS[architecture](**cfg)
    except TypeError:
        raise UserError(
            f"unknown setting(s) for a {architecture} reward network: {', '.join(sorted(cfg))}"
        ) from None


def build_net(
    architecture: str = ARCHITECTURE, net_config: Mapping[str, Any] | None = None
) -> RewardNet:
    """A fresh network of ``architecture`` (``seed_cnn`` or ``impala``) with ``net_config``
    (``output_abs``, ``frame_stack``, ``scale_frames``; ``ensemble`` K > 1: a
    :class:`RewardEnsemble` of K such networks). UserError for unknown settings."""
    cfg = dict(net_config or {})
    size = cfg.pop("ensemble", 1)
    if architecture not in NETWORKS:
        raise UserError(
            f"unknown reward network architecture {architecture!r} (known: {', '.join(NETWORKS)})"
        )
    check_variant(architecture=architecture, frame_stack=cfg.get("frame_stack", 1), ensemble=size)
    if size > 1:
        return RewardEnsemble(architecture, cfg, size)
    return _build_member(architecture, cfg)


def prepare_net(net: RewardNet, device: torch.device, channels_last: bool = True) -> RewardNet:
    """Move ``net`` to ``device`` (channels_last memory format for the fast path; an
    ensemble's stacked weights stay contiguous, see :class:`RewardEnsemble`)."""
    net = net.to(device)
    if channels_last and net.ensemble_size == 1:
        net = net.to(memory_format=torch.channels_last)
    return net


def frames_to_input(
    frames: np.ndarray | torch.Tensor, device: torch.device, channels_last: bool = True
) -> torch.Tensor:
    """uint8 frames -> float network input on ``device``.

    Frames (N, 64, 64, 3) or (N, 3, 64, 64) -> (N, 3, 64, 64); frame stacks (N, K, 64, 64, 3)
    or (N, K, 3, 64, 64) -> (N, 3K, 64, 64), channel 3k + c = colour c of stack frame k.
    Pixel values stay 0..255 (as upstream). The uint8 data goes to the device before the
    float conversion (4x less to copy). HWC input permuted to NCHW is already channels_last
    in memory, so the fast path costs no copy.
    """
    x = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    shape = tuple(x.shape)
    bad = ValueError(
        f"expected frames (N, 64, 64, 3) or (N, 3, 64, 64), or frame stacks "
        f"(N, K, 64, 64, 3) or (N, K, 3, 64, 64), got shape {shape}"
    )
    if x.ndim == 5:
        n, k = shape[:2]
        if shape[-1] == 3 and shape[2] != 3:
            hw = shape[2:4]
            x = x.to(device, non_blocking=True).permute(0, 2, 3, 1, 4)  # (N, H, W, K, 3)
            x = x.reshape(n, *hw, 3 * k).permute(0, 3, 1, 2)
        elif shape[2] == 3:
            x = x.to(device, non_blocking=True).reshape(n, 3 * k, *shape[3:])
        else:
            raise bad
    elif x.ndim == 4:
        if shape[-1] == 3 and shape[1] != 3:
            x = x.permute(0, 3, 1, 2)
        elif shape[1] != 3:
            raise bad
    else:
        raise bad
    if tuple(x.shape[2:]) != FRAME_SHAPE_HWC[:2]:
        raise ValueError(f"expected 64x64 frames, got shape {shape}")
    x = x.to(device, non_blocking=True).float()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=fmt)


def gather_input(
    frames: np.ndarray | torch.Tensor,
    rows: np.ndarray | slice,
    offsets: np.ndarray | None,
    frame_stack: int,
    device: torch.device,
    channels_last: bool = True,
) -> torch.Tensor:
    """Network input float (N, 3K, 64, 64) for the frames ``frames[rows]`` of uint8 frames
    (F, 64, 64, 3) or (F, 3, 64, 64) of demos laid end to end at ``offsets`` (n + 1,)
    (None: one demo). With K = ``frame_stack`` > 1 each frame brings the K - 1 frames before
    it in its demo (the first frame repeated before the start), gathered by index."""
    if frame_stack == 1:
        return frames_to_input(frames[rows], device, channels_last)
    if isinstance(rows, slice):
        rows = np.arange(*rows.indices(len(frames)), dtype=np.int64)
    if offsets is None:
        offsets = np.array([0, len(frames)], dtype=np.int64)
    idx = stack_indices(rows, offsets, frame_stack)
    if isinstance(frames, torch.Tensor):
        return frames_to_input(
            frames[torch.from_numpy(idx).to(frames.device)], device, channels_last
        )
    return frames_to_input(frames[idx], device, channels_last)


def padded_size(n: int) -> int:
    """``n`` rounded up to a multiple of 8 below 128, then to one of 8 sizes per octave (a
    multiple of n's power of two / 8): at most 7 or 1/8 more rows, 40 sizes up to 1024."""
    if n <= 0:
        return n
    quantum = max(8, 1 << max(0, n.bit_length() - 4))
    return -(-n // quantum) * quantum


def pad_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` (N, ...) with its last row repeated up to :func:`padded_size` (N) rows (memory
    format kept); the caller keeps the first N outputs. Why: oneDNN caches kernels per input
    shape, and with every batch a new size a training run's memory grew by ~30 MB per epoch
    (benchmarks/README.md). The networks here act on each row alone (no batch statistics),
    so padding changes no real row's output."""
    n = x.shape[0]
    extra = padded_size(n) - n
    if extra == 0:
        return x
    idx = torch.cat(
        [torch.arange(n, device=x.device), torch.full((extra,), n - 1, device=x.device)]
    )
    return x[idx]


def forward_in_chunks(
    forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, chunk: int | None
) -> torch.Tensor:
    """``forward`` (rows (n, ...) -> (M, n)) on ``x`` (N, ...) in calls of at most ``chunk``
    rows (None: one call), each padded by :func:`pad_rows`: (M, N), with gradients when
    ``forward`` has them. The networks act on each row alone, so chunking changes no output
    beyond floating-point rounding; on a CPU smaller calls are faster
    (:func:`trex.common.device.network_chunk`)."""
    n = x.shape[0]
    if chunk is None or n <= chunk:
        return forward(pad_rows(x))[:, :n]
    parts = []
    for lo in range(0, n, chunk):
        part = x[lo : lo + chunk]
        parts.append(forward(pad_rows(part))[:, : part.shape[0]])
    return torch.cat(parts, dim=1)


@torch.no_grad()
def predict_frame_rewards(
    net: RewardNet,
    frames: np.ndarray | torch.Tensor,
    device: torch.device,
    bf16: bool = False,
    channels_last: bool = True,
    batch_size: int = 1024,
    *,
    offsets: np.ndarray | None = None,
    rows: np.ndarray | None = None,
    members: bool = False,
) -> np.ndarray:
    """Per-frame rewards float32 (N,), or with ``members`` every member's (M, N), in chunks
    of ``batch_size`` frames (one forward per chunk).

    ``frames``: uint8 (F, 64, 64, 3) or (F, 3, 64, 64), the frames of one demo or episode in
    order, or of several laid end to end at ``offsets`` (n + 1,) (needed only by a
    frame-stacking network, which stacks each frame with those before it in its demo); or
    explicit frame stacks (F, K, 64, 64, 3) / (F, K, 3, 64, 64). ``rows``: score only these
    frames (N = len(rows); default all, N = F).
    """
    stacked = frames.ndim == 5
    k = net.frame_stack
    if stacked and frames.shape[1] != k:
        raise ValueError(
            f"the reward network takes stacks of {k} frames, got stacks of {frames.shape[1]}"
        )
    if rows is not None:
        rows = np.asarray(rows, dtype=np.int64)
    n = len(frames) if rows is None else len(rows)
    out = np.empty((net.ensemble_size if members else 1, n), dtype=np.float32)
    forward = net.forward_members if members else lambda t: net(t).unsqueeze(0)
    chunk = network_chunk("reward_forward", device, bf16, net.architecture)
    was_training = net.training
    net.eval()
    try:
        for lo in range(0, n, batch_size):
            part = (
                slice(lo, min(lo + batch_size, n)) if rows is None else rows[lo : lo + batch_size]
            )
            x = gather_input(frames, part, offsets, 1 if stacked else k, device, channels_last)
            m = x.shape[0]
            with autocast(device, bf16):
                r = forward_in_chunks(forward, x, chunk)
            out[:, lo : lo + m] = r.float().cpu().numpy()
    finally:
        net.train(was_training)
    return out if members else out[0]
