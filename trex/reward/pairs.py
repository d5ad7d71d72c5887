"""T-REX reward learning (Brown et al. 2019, arXiv 1904.06387), following the original project's
procedure (lzil/procedural-generalization, trex/train_reward.py) with a faster implementation.

Procedure (the original project's):

* :func:`select_demos`: ``num_dems`` training demos spread evenly over the return range
  [min, min + max_return * (max - min)], in four return bins visited round-robin;
  :func:`split_train_val`: the first 80% (in selection order) make training pairs, the rest
  validation pairs, so no demo feeds both.
* :func:`sample_pairs`: pairs of snippets of one random length from two demos of different
  return; with the clip heuristic the better demo's snippet starts no earlier than the
  worse one's (T-REX Sec. 5.1: "later" snippets of better demos); the label is the better
  demo (or, with ``use_snippet_rewards``, the snippet with the larger true reward).
* Loss (T-REX Eq. 1): Bradley-Terry cross-entropy on the snippets' predicted returns (sums
  of per-frame rewards) plus ``lam_l1`` times the summed absolute per-frame rewards; Adam
  with (L2) weight decay.
* After every ``epoch_size`` pairs: train/validation/test accuracy and loss, Pearson and
  Spearman correlation of predicted with true return on held-out test demos; early
  stopping on validation accuracy with ``patience``; the best model is restored
  (``select_by``: the original project's validation accuracy, or the validation loss, or the
  last epoch).

What makes it fast without changing the maths:

* demos live in one uint8 array; a pair is (demo, start) x 2 + length indices into it,
  never a copy of frames (memory ~ the chosen demos);
* training steps on batches of pairs, and every distinct frame of a batch goes through the
  network once (snippets of a batch overlap a lot); snippet returns are segment sums;
* evaluation computes per-frame rewards once per needed frame and gets every pair's
  return from cumulative sums, instead of re-running the network per pair;
* channels_last + bf16 autocast (the fast path), chosen by the caller.

Variants (:mod:`trex.reward.variants`, each off by default): frame stacks gathered by
index on the demos' offsets wherever frames meet the network; random-shift augmentation of
each training batch (one shift per demo, drawn once per step so the chunked step's two
passes agree); ensembles, whose members each get the loss above on the same pairs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trex.common.errors import UserError

log = logging.getLogger(__name__)

#: the original project's return bins for demo selection
NUM_RETURN_BINS = 4
#: the original project's share of selected demos that make training (not validation) pairs
TRAIN_FRACTION = 0.8


# ----------------------------------------------------------------------------- demos


@dataclass
class DemoSet:
    """Demos concatenated frame-wise.

    frames uint8 (F, 64, 64, 3); rewards float32 (F,) true per-frame rewards;
    offsets int64 (n + 1,) with demo i at frames[offsets[i]:offsets[i + 1]];
    returns float64 (n,) the demos' true returns; ids (n,); rank_keys float64 (n,) or None:
    what T-REX ranks the demos by (higher = better; None: the true returns). D-REX-style
    rankings (noise level, checkpoint age) set rank_keys, and then training never reads
    ``returns`` or ``rewards``.
    """

    frames: np.ndarray
    rewards: np.ndarray
    offsets: np.ndarray
    returns: np.ndarray
    ids: list[str] = field(default_factory=list)
    rank_keys: np.ndarray | None = None

    @property
    def keys(self) -> np.ndarray:
        """float64 (n,): the ranking pairs are labelled by (rank_keys, else the true returns)."""
        return self.returns if self.rank_keys is None else self.rank_keys

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        """Demo lengths int64 (n,)."""
        return np.diff(self.offsets)

    @property
    def nbytes(self) -> int:
        return int(self.frames.nbytes + self.rewards.nbytes)

    @classmethod
    def from_arrays(
        cls,
        observations: Sequence[np.ndarray],
        rewards: Sequence[np.ndarray],
        returns: Sequence[float] | None = None,
        ids: Sequence[str] | None = None,
    ) -> DemoSet:
        """Build from per-demo arrays: observations[i] uint8 (T_i, 64, 64, 3), rewards[i] (T_i,).

        returns default to the sums of the rewards.
        """
        if len(observations) != len(rewards):
            raise ValueError("observations and rewards differ in number of demos")
        lengths = np.array([len(o) for o in observations], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        shape = (
            (int(offsets[-1]), *np.shape(observations[0])[1:])
            if len(observations)
            else (0, 64, 64, 3)
        )
        frames = np.empty(shape, dtype=np.uint8)
        rew = np.empty(int(offsets[-1]), dtype=np.float32)
        for i, (o, r) in enumerate(zip(observations, rewards)):
            if len(r) != len(o):
                raise ValueError(f"demo {i}: {len(o)} observations but {len(r)} rewards")
            frames[offsets[i] : offsets[i + 1]] = o
            rew[offsets[i] : offsets[i + 1]] = r
        if returns is None:
            ret = np.array([float(np.sum(r, dtype=np.float64)) for r in rewards], dtype=np.float64)
        else:
            ret = np.asarray(returns, dtype=np.float64)
        names = list(ids) if ids is not None else [str(i) for i in range(len(lengths))]
        return cls(frames, rew, offsets, ret, names)

    @classmethod
    def from_index(cls, index: Any, ids: Sequence[str], desc: str = "loading demos") -> DemoSet:
        """Load the demos ``ids`` of a :class:`trex.demos.store.DemoIndex` into one array.

        The array is allocated once from the index's lengths and filled one demo at a time,
        so peak memory is the chosen demos plus one demo. Returns come from the index.
        """
        from tqdm import tqdm

        ids = list(ids)
        rows = [index.row(i) for i in ids]
        lengths = np.array([int(r["length"]) for r in rows], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        frames = np.empty((int(offsets[-1]), 64, 64, 3), dtype=np.uint8)
        rew = np.empty(int(offsets[-1]), dtype=np.float32)
        for i, demo in enumerate(
            tqdm(index.iter_demos(ids), total=len(ids), desc=desc, leave=False, disable=None)
        ):
            frames[offsets[i] : offsets[i + 1]] = demo.observations
            rew[offsets[i] : offsets[i + 1]] = demo.rewards
        returns = np.array([float(r["return"]) for r in rows], dtype=np.float64)
        return cls(frames, rew, offsets, returns, ids)

    def demo_sums(self, frame_values: np.ndarray) -> np.ndarray:
        """Per-demo sums float64 (n,) of per-frame values (F,) (e.g. predicted returns)."""
        c = np.concatenate([[0.0], np.cumsum(frame_values, dtype=np.float64)])
        return c[self.offsets[1:]] - c[self.offsets[:-1]]


# ----------------------------------------------------------------------------- demo selection


def select_demos(
    returns: np.ndarray, num_dems: int, max_return: float, rng: np.random.Generator
) -> np.ndarray:
    """Positions (num_dems,) of the chosen demos, in the original project's selection order.

    The return range [lo, hi] with lo = min return, hi = lo + max_return * (max - lo) is cut
    into 4 equal bins; rounds visit the bins in order and take one random unused demo from
    each non-empty bin, until ``num_dems`` are chosen (the original project's "uniformish
    distribution of demo returns"). Bins are closed intervals, as upstream.

    UserError when the demos cannot satisfy the request.
    """
    r = np.asarray(returns, dtype=np.float64)
    n = len(r)
    if num_dems < 2:
        raise UserError(f"--num_dems must be at least 2 (T-REX compares demos), got {num_dems}")
    if n < num_dems:
        raise UserError(f"{num_dems} training demos requested but only {n} match")
    if not max_return > 0:
        raise UserError(
            f"--max_return must be > 0 (a fraction of the return range), got {max_return}"
        )
    lo = float(r.min())
    hi = (float(r.max()) - lo) * max_return + lo
    if hi <= lo:
        raise UserError(
            f"all {n} matching training demos have the same return ({lo:g}); "
            "T-REX needs demos of different returns"
        )
    in_range = r <= hi
    if in_range.sum() < num_dems:
        raise UserError(
            f"{num_dems} training demos requested but only {int(in_range.sum())} have a "
            f"return within --max_return {max_return} of the range ({lo:g} .. {hi:g})"
        )
    step = (hi - lo) / NUM_RETURN_BINS
    lows = lo + step * np.arange(NUM_RETURN_BINS)
    highs = np.append(lows[1:], hi)  # the last bin ends exactly at hi (no float drift)
    bins = [np.flatnonzero((r >= a) & (r <= b)) for a, b in zip(lows, highs)]
    used = np.zeros(n, dtype=bool)
    chosen: list[int] = []
    while len(chosen) < num_dems:
        for members in bins:
            if len(chosen) >= num_dems:
                break
            free = members[~used[members]]
            if len(free):
                pick = int(free[rng.integers(len(free))])
                used[pick] = True
                chosen.append(pick)
    return np.array(chosen, dtype=np.int64)


def split_train_val(keys: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
    """(training, validation) positions into the selected demos: the first 80% / the rest
    (the original project's split), stratified so that validation holds two different ranking keys
    whenever the demos allow it without leaving training with a single one.

    keys: (n,) the selected demos' ranking keys in selection order (or just n: no keys).
    """
    if isinstance(keys, (int, np.integer)):
        keys = np.arange(int(keys), dtype=np.float64)
    keys = np.asarray(keys, dtype=np.float64)
    n = len(keys)
    k = int(n * TRAIN_FRACTION)
    train, val = np.arange(k), np.arange(k, n)
    if len(val) >= 2 and len(np.unique(keys[val])) < 2:
        # the original project's split would make no validation pair: swap the last validation
        # demo with the latest training demo of another key, if training keeps two keys after it
        for i in train[::-1]:
            if keys[i] == keys[val[0]]:
                continue
            new_train = np.where(train == i, val[-1], train)
            if len(np.unique(keys[new_train])) >= 2:
                train, val = np.sort(new_train), np.append(val[:-1], i)
                break
    return train, val


def check_pairable(returns: np.ndarray, what: str, hint: str = "") -> None:
    """UserError unless at least two of ``returns`` differ (pairs need different returns)."""
    r = np.asarray(returns)
    if len(r) < 2 or np.ptp(r) == 0:
        raise UserError(
            f"the {what} demos ({len(r)}) need at least two different returns to make pairs{hint}"
        )


# ----------------------------------------------------------------------------- snippet pairs


@dataclass
class PairSet:
    """Snippet pairs as indices into a :class:`DemoSet` (never copies of frames).

    demo int64 (P, 2) and start int64 (P, 2): demo and first frame (within the demo) of
    snippet 0 and snippet 1; length int64 (P,): both snippets' length. Snippet 1 is the
    preferred one (label 1, the original project's convention). honest bool (P,): the
    demo-return label agrees with the snippets' true rewards (true reward of snippet 0 <=
    snippet 1, before any ``use_snippet_rewards`` swap).
    """

    demo: np.ndarray
    start: np.ndarray
    length: np.ndarray
    honest: np.ndarray

    def __len__(self) -> int:
        return len(self.length)

    def take(self, idx: np.ndarray | slice) -> PairSet:
        return PairSet(self.demo[idx], self.start[idx], self.length[idx], self.honest[idx])

    @staticmethod
    def concat(sets: Iterable[PairSet]) -> PairSet:
        sets = list(sets)
        return PairSet(
            *(
                np.concatenate([getattr(s, k) for s in sets])
                for k in ("demo", "start", "length", "honest")
            )
        )

    def global_starts(self, demos: DemoSet) -> np.ndarray:
        """First frame of each snippet in ``demos.frames``: int64 (P, 2)."""
        return demos.offsets[self.demo] + self.start

    def demo_set(self) -> set[int]:
        return set(np.unique(self.demo).tolist())


def sample_pairs(
    demos: DemoSet,
    pool: Sequence[int] | np.ndarray,
    num: int,
    min_len: int,
    max_len: int,
    rng: np.random.Generator,
    use_clip_heuristic: bool = True,
    use_snippet_rewards: bool = False,
) -> PairSet:
    """Sample ``num`` snippet pairs from the demos at positions ``pool``, vectorised.

    Per pair, as upstream: two distinct demos uniformly at random, rejected if their
    returns are equal, ordered worse -> better; length uniform in
    [min_len, min(shorter demo, max_len)) (numpy's exclusive upper bound, as upstream);
    with the clip heuristic the worse demo's snippet starts uniformly in
    [0, shorter - length] and the better demo's uniformly in [that start, its length - length];
    without it, both start uniformly in [0, own length - length). With
    ``use_snippet_rewards`` a pair whose true snippet rewards disagree with the demo
    returns is swapped.

    Every demo in ``pool`` must be longer than ``min_len`` (UserError otherwise).
    """
    pool = np.asarray(pool, dtype=np.int64)
    lengths = demos.lengths[pool]
    rets = demos.keys[pool]
    if min_len >= max_len:
        raise UserError(
            f"--min_snippet_length ({min_len}) must be smaller than "
            f"--max_snippet_length ({max_len})"
        )
    if len(pool) and lengths.min() <= min_len:
        short = demos.ids[int(pool[int(np.argmin(lengths))])]
        raise UserError(
            f"demo {short} has {int(lengths.min())} steps, not more than "
            f"--min_snippet_length {min_len}"
        )
    check_pairable(rets, "pair")
    k = len(pool)
    out: list[tuple[np.ndarray, ...]] = []
    have = 0
    while have < num:
        m = max(64, int((num - have) * 1.3) + 16)
        i1 = rng.integers(k, size=m)
        i2 = (i1 + rng.integers(1, k, size=m)) % k  # uniform over the other demos
        keep = rets[i1] != rets[i2]
        i1, i2 = i1[keep], i2[keep]
        worse = np.where(rets[i1] < rets[i2], i1, i2)
        better = np.where(rets[i1] < rets[i2], i2, i1)
        l0, l1 = lengths[worse], lengths[better]
        shortest = np.minimum(l0, l1)
        length = rng.integers(min_len, np.minimum(shortest, max_len))
        if use_clip_heuristic:
            s0 = rng.integers(0, shortest - length + 1)
            s1 = rng.integers(s0, l1 - length + 1)
        else:
            s0 = rng.integers(0, l0 - length)
            s1 = rng.integers(0, l1 - length)
        out.append((pool[worse], pool[better], s0, s1, length))
        have += len(length)
    d0, d1, s0, s1, length = (np.concatenate(a)[:num] for a in zip(*out))
    demo = np.stack([d0, d1], axis=1).astype(np.int64)
    start = np.stack([s0, s1], axis=1).astype(np.int64)
    length = length.astype(np.int64)
    if demos.rank_keys is None:
        true = snippet_sums(demos.rewards, demos.offsets[demo] + start, length)
        honest = true[:, 0] <= true[:, 1]
    else:  # a reward-free ranking: the true rewards are not read
        honest = np.zeros(len(length), dtype=bool)
    if use_snippet_rewards:
        if demos.rank_keys is not None:
            raise UserError(
                "--use_snippet_rewards labels pairs by the true reward: it needs --rank_by return"
            )
        swap = ~honest
        demo[swap] = demo[swap][:, ::-1]
        start[swap] = start[swap][:, ::-1]
    return PairSet(demo, start, length, honest)


def snippet_sums(frame_values: np.ndarray, gstart: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Sums float64 (P, 2) of per-frame values (F,) over snippets at global starts (P, 2)
    of length (P,), via one cumulative sum."""
    c = np.concatenate([[0.0], np.cumsum(frame_values, dtype=np.float64)])
    return c[gstart + length[:, None]] - c[gstart]


def snippet_frames(gstart: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices of snippets, flattened: (frame (S,), snippet (S,)) for snippets with
    global starts (n,) and lengths (n,), S = sum(length); no Python loop."""
    gstart = np.asarray(gstart, dtype=np.int64).ravel()
    length = np.asarray(length, dtype=np.int64).ravel()
    seg = np.repeat(np.arange(len(length)), length)
    first = np.cumsum(length) - length
    frame = np.repeat(gstart - first, length) + np.arange(int(length.sum()))
    return frame, seg


def frames_mask(demos: DemoSet, pairs: PairSet) -> np.ndarray:
    """bool (F,): the frames that some snippet of ``pairs`` covers."""
    gs = pairs.global_starts(demos).ravel()
    ln = np.repeat(pairs.length, 2)
    d = np.zeros(len(demos.rewards) + 1, dtype=np.int64)
    np.add.at(d, gs, 1)
    np.add.at(d, gs + ln, -1)
    return np.cumsum(d[:-1]) > 0
