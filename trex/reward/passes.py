"""T-REX's network passes over a batch of snippet pairs (Brown et al. 2019, arXiv 1904.06387):
every distinct frame of the batch through the network once, the snippets' returns as
segment sums, the Bradley-Terry loss (Eq. 1) with the original project's L1 term, and one
optimiser step; plus the batched forward that scores whole demos."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from trex.common.device import autocast, network_chunk
from trex.common.errors import UserError
from trex.reward.nets import (
    RewardNet,
    forward_in_chunks,
    gather_input,
    predict_frame_rewards,
)
from trex.reward.pairs import (
    DemoSet,
    PairSet,
    snippet_frames,
    snippet_sums,
)
from trex.reward.variants import (
    AUGMENTATIONS,
    draw_shifts,
    random_shift,
)

# ----------------------------------------------------------------------------- network passes


def _batch_frames(demos: DemoSet, pairs: PairSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct frames (U,), index of each snippet frame into them (S,), snippet id (S,))."""
    gs = pairs.global_starts(demos)
    frame, seg = snippet_frames(gs.ravel(), np.repeat(pairs.length, 2))
    uniq, inv = np.unique(frame, return_inverse=True)
    return uniq, inv, seg


def _segment_returns(
    r: torch.Tensor, inv: np.ndarray, seg: np.ndarray, n_pairs: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Snippet sums of per-frame rewards r (U,) or of M members' r (M, U): returns (B, 2)
    and summed |r| (B, 2), or (M, B, 2) each."""
    device = r.device
    rm = r.float().reshape(-1, r.shape[-1])
    per_use = rm[:, torch.from_numpy(inv).to(device)]
    seg_t = torch.from_numpy(seg).to(device)
    shape = (*r.shape[:-1], n_pairs, 2)
    n = 2 * n_pairs
    ret = torch.zeros(len(rm), n, device=device).index_add_(1, seg_t, per_use).view(shape)
    absr = torch.zeros(len(rm), n, device=device).index_add_(1, seg_t, per_use.abs()).view(shape)
    return ret, absr


class _BatchInput:
    """The network input of a batch's distinct frames ``uniq`` (U,), chunk by chunk:
    frame stacks of the net's ``frame_stack`` (by index on the demos' offsets) and, with
    ``augment="shift"``, a random shift per demo drawn once per batch (so a chunked
    step's two passes see the same input)."""

    def __init__(
        self,
        net: RewardNet,
        demos: DemoSet,
        uniq: np.ndarray,
        device: torch.device,
        channels_last: bool,
        augment: str = "none",
        rng: np.random.Generator | None = None,
    ) -> None:
        self.net, self.demos, self.uniq = net, demos, uniq
        self.device, self.channels_last = device, channels_last
        self.shifts: np.ndarray | None = None
        if augment == "shift":
            if rng is None:
                raise ValueError("augment='shift' needs a random generator")
            self.shifts = draw_shifts(uniq, demos.offsets, rng)
        elif augment != "none":
            raise UserError(f"--augment must be one of {', '.join(AUGMENTATIONS)}, got {augment!r}")

    def __call__(self, part: slice = slice(None)) -> torch.Tensor:
        """float (u, 3K, 64, 64) for the distinct frames ``uniq[part]``."""
        x = gather_input(
            self.demos.frames,
            self.uniq[part],
            self.demos.offsets,
            self.net.frame_stack,
            self.device,
            self.channels_last,
        )
        if self.shifts is not None:
            x = random_shift(x, self.shifts[part])
        return x

    def rewards(self, part: slice = slice(None), bf16: bool = False) -> torch.Tensor:
        """Every member's rewards (M, u) of the frames ``uniq[part]``, with gradients; the
        network runs on chunks of the input, each padded
        (:func:`~trex.reward.nets.forward_in_chunks`), so it sees few shapes."""
        x = self(part)
        chunk = network_chunk("trex_step", self.device, bf16, self.net.architecture)
        with autocast(self.device, bf16):
            return forward_in_chunks(self.net.forward_members, x, chunk)


def batch_returns(
    net: RewardNet,
    demos: DemoSet,
    pairs: PairSet,
    device: torch.device,
    bf16: bool,
    channels_last: bool = True,
    augment: str = "none",
    rng: np.random.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Predicted returns (B, 2) and summed |r| (B, 2) of a batch of pairs, with gradients
    (an ensemble: every member's, (M, B, 2)).

    Each distinct frame of the batch goes through the network once; snippet sums are
    segment sums of the per-frame rewards. Also returns the number of distinct frames.
    """
    uniq, inv, seg = _batch_frames(demos, pairs)
    r = _BatchInput(net, demos, uniq, device, channels_last, augment, rng).rewards(bf16=bf16)
    ret, absr = _segment_returns(r if net.ensemble_size > 1 else r[0], inv, seg, len(pairs))
    return ret, absr, len(uniq)


def train_step(
    net: RewardNet,
    opt: torch.optim.Optimizer,
    demos: DemoSet,
    pairs: PairSet,
    lam_l1: float,
    device: torch.device,
    bf16: bool,
    channels_last: bool = True,
    max_frames: int = 1024,
    augment: str = "none",
    rng: np.random.Generator | None = None,
) -> tuple[float, torch.Tensor, torch.Tensor, int]:
    """One optimizer step on a batch of pairs: (loss, returns (B, 2), |r| sums (B, 2), distinct
    frames).

    Up to ``max_frames`` distinct frames: one forward/backward over them. More: activations
    would not fit (~0.9 MB per frame), so the frames go through the network in chunks twice
    -- a no-grad forward gives the per-frame rewards, the loss's gradient with respect to
    each frame's reward follows from them, and a second forward/backward per chunk
    accumulates the exact parameter gradient (memory bounded by the chunk, one extra forward).

    An ensemble of M members minimises the sum of the members' T-REX losses on the same
    pairs (each member gets exactly its own loss's gradient); the loss reported is their
    mean, the returns the members' mean. ``augment="shift"`` shifts the input randomly
    (:func:`trex.reward.variants.random_shift`, drawn from ``rng``).
    """
    opt.zero_grad(set_to_none=True)
    uniq, inv, seg = _batch_frames(demos, pairs)
    inputs = _BatchInput(net, demos, uniq, device, channels_last, augment, rng)
    if len(uniq) <= max_frames:
        r = inputs.rewards(bf16=bf16)
        ret, absr = _segment_returns(r, inv, seg, len(pairs))
        loss = trex_loss(ret, absr, lam_l1)
        loss.backward()
    else:
        chunks = [slice(lo, lo + max_frames) for lo in range(0, len(uniq), max_frames)]
        with torch.no_grad():
            parts = []
            for c in chunks:
                parts.append(inputs.rewards(c, bf16).float())
        r = torch.cat(parts, dim=1).requires_grad_(True)
        ret, absr = _segment_returns(r, inv, seg, len(pairs))
        loss = trex_loss(ret, absr, lam_l1)
        loss.backward()
        grad = r.grad
        for c in chunks:
            inputs.rewards(c, bf16).float().backward(grad[:, c])
    opt.step()
    m = ret.shape[0]
    return float(loss.detach()) / m, ret.detach().mean(0), absr.detach().mean(0), len(uniq)


def trex_loss(returns: torch.Tensor, abs_sums: torch.Tensor, lam_l1: float) -> torch.Tensor:
    """Mean over pairs of cross-entropy(logits = returns (B, 2), label 1) + lam_l1 * |r| sums
    (T-REX Eq. 1 plus the original project's L1 penalty); per pair identical to the original
    project's loss.
    Members' returns (M, B, 2): the sum over members of each member's loss."""
    ce = F.softplus(returns[..., 0] - returns[..., 1])  # = CE([R0, R1], 1)
    return (ce + lam_l1 * abs_sums.sum(dim=-1)).mean(dim=-1).sum()


@torch.no_grad()
def frame_rewards(
    net: RewardNet,
    frames: np.ndarray,
    device: torch.device,
    bf16: bool,
    mask: np.ndarray | None = None,
    channels_last: bool = True,
    batch_size: int = 512,
    offsets: np.ndarray | None = None,
    members: bool = False,
) -> np.ndarray:
    """Per-frame rewards float32 (F,) of uint8 frames (F, 64, 64, 3) (with ``members``,
    every ensemble member's, (M, F)); frames outside ``mask`` (bool (F,)) are skipped and
    left 0. One forward per chunk of frames.

    ``offsets`` (n + 1,): the frames are n demos laid end to end (a :class:`DemoSet`);
    None: one demo. A frame-stacking network stacks each frame with those before it in
    its own demo, so several demos need their offsets.
    """
    rows = None if mask is None or mask.all() else np.flatnonzero(mask)
    r = predict_frame_rewards(
        net,
        frames,
        device,
        bf16,
        channels_last,
        batch_size,
        offsets=offsets,
        rows=rows,
        members=members,
    )
    if rows is None:
        return r
    full = np.zeros((*r.shape[:-1], len(frames)), dtype=np.float32)
    full[..., rows] = r
    return full


def pair_returns(
    demos: DemoSet, rewards: np.ndarray, pairs: PairSet
) -> tuple[np.ndarray, np.ndarray]:
    """(predicted returns (P, 2), summed |r| (P, 2)) of pairs from per-frame rewards (F,)."""
    gs = pairs.global_starts(demos)
    return snippet_sums(rewards, gs, pairs.length), snippet_sums(np.abs(rewards), gs, pairs.length)
