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

    def __call__(self, part: slice | np.ndarray = slice(None)) -> torch.Tensor:
        """float (u, 3K, 64, 64) for the distinct frames ``uniq[part]`` (a slice or indices)."""
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

    def rewards(self, part: slice | np.ndarray = slice(None), bf16: bool = False) -> torch.Tensor:
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
    would not fit (~0.9 MB per frame), so the pairs go through in groups of at most
    ``max_frames`` snippet frames, one forward/backward each, whose gradients add up to the
    batch's exactly (the loss is a mean over pairs; memory bounded by the group, no extra
    forward); only a single pair over ``max_frames`` takes two passes in chunks
    (:func:`_group_pass`).

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
        rets, absrs, losses = [], [], []
        for group in _pair_groups(pairs, max_frames):
            ret, absr, loss = _group_pass(
                inputs, demos, pairs, group, uniq, lam_l1, bf16, max_frames
            )
            rets.append(ret)
            absrs.append(absr)
            losses.append(loss)
        ret, absr = torch.cat(rets, dim=-2), torch.cat(absrs, dim=-2)
        loss = torch.stack(losses).sum()
    opt.step()
    m = ret.shape[0]
    return float(loss.detach()) / m, ret.detach().mean(0), absr.detach().mean(0), len(uniq)


def _pair_groups(pairs: PairSet, max_frames: int) -> list[slice]:
    """Consecutive runs of pairs whose snippet frames (2 x length each, an upper bound on
    their distinct frames) add up to at most ``max_frames``; a pair longer than that on
    its own is a group of one."""
    groups: list[slice] = []
    lo, frames = 0, 0
    for i, n in enumerate(2 * pairs.length.astype(np.int64)):
        if i > lo and frames + n > max_frames:
            groups.append(slice(lo, i))
            lo, frames = i, 0
        frames += int(n)
    groups.append(slice(lo, len(pairs)))
    return groups


def _group_pass(
    inputs: _BatchInput,
    demos: DemoSet,
    pairs: PairSet,
    group: slice,
    uniq: np.ndarray,
    lam_l1: float,
    bf16: bool,
    max_frames: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward and backward of the pairs ``group`` of a batch that does not fit
    ``max_frames``: their loss weighted by their share of the batch, so the groups'
    gradients add up to the whole batch's (the loss is a mean over pairs). A group's
    distinct frames (indices into the batch's ``uniq``) go through the network once; a
    single pair over ``max_frames`` goes in chunks twice (a no-grad forward gives the
    per-frame rewards and the loss's gradient with respect to them, then a forward/backward
    per chunk accumulates the exact parameter gradient). Returns the group's returns and
    |r| sums (M, b, 2) and its weighted loss, all detached."""
    sub = pairs.take(group)
    frames, inv, seg = _batch_frames(demos, sub)
    rows = np.searchsorted(uniq, frames)
    weight = len(sub) / len(pairs)
    if len(rows) <= max_frames:
        r = inputs.rewards(rows, bf16)
        ret, absr = _segment_returns(r, inv, seg, len(sub))
        loss = trex_loss(ret, absr, lam_l1) * weight
        loss.backward()
        return ret.detach(), absr.detach(), loss.detach()
    chunks = [rows[lo : lo + max_frames] for lo in range(0, len(rows), max_frames)]
    with torch.no_grad():
        r = torch.cat([inputs.rewards(c, bf16).float() for c in chunks], dim=1)
    r.requires_grad_(True)
    ret, absr = _segment_returns(r, inv, seg, len(sub))
    loss = trex_loss(ret, absr, lam_l1) * weight
    loss.backward()
    grad = r.grad
    at = 0
    for c in chunks:
        inputs.rewards(c, bf16).float().backward(grad[:, at : at + len(c)])
        at += len(c)
    return ret.detach(), absr.detach(), loss.detach()


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
