"""The preference buffer: labelled comparisons of segments, each frame kept once.

Frames are uint8 (F, 64, 64, 3) laid end to end, one block per stored segment (a rollout
segment, or a whole demo for the demo-seeded pairs); a comparison is two snippets given as
(segment, start, length) indices, the second preferred: exactly a
:class:`~trex.reward.pairs.PairSet` over a :class:`~trex.reward.pairs.DemoSet` whose "demos"
are the segments, so the T-REX trainer fits on it unchanged. At most ``capacity``
comparisons are kept: adding more drops the oldest, and a segment no comparison refers to
any more is dropped with its frames.

Each round's additions are also written to a file of their own (:func:`save_round`), so a
killed run rebuilds the buffer of its last checkpoint by replaying the rounds' files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trex.common.errors import UserError
from trex.common.files import atomic_path
from trex.reward.pairs import DemoSet, PairSet

FRAME_BYTES = 64 * 64 * 3


@dataclass
class Comparisons:
    """Labelled comparisons (P of them) of segments: ``segment`` int64 (P, 2) indices into the
    segments they come with, ``start`` int64 (P, 2) first frame within the segment,
    ``length`` int64 (P,); the second snippet is the preferred one."""

    segment: np.ndarray
    start: np.ndarray
    length: np.ndarray

    def __len__(self) -> int:
        return len(self.length)

    @classmethod
    def whole(cls, pairs: np.ndarray, length: int) -> Comparisons:
        """Comparisons of whole segments of one ``length``, given as pairs (P, 2) ordered
        worse -> preferred."""
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        return cls(pairs, np.zeros_like(pairs), np.full(len(pairs), int(length), dtype=np.int64))


class PreferenceBuffer:
    """At most ``capacity`` comparisons and the frames of the segments they use."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("the buffer needs a capacity of at least one comparison")
        self.capacity = int(capacity)
        self._frames = np.empty((0, 64, 64, 3), dtype=np.uint8)
        self._n_frames = 0
        self.seg_len = np.zeros(0, dtype=np.int64)  # (S,) segments laid end to end, in order
        self.pairs = Comparisons(
            np.zeros((0, 2), np.int64), np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
        )
        self.dropped = 0  # comparisons dropped so far (oldest first)

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def num_frames(self) -> int:
        return self._n_frames

    @property
    def nbytes(self) -> int:
        """Bytes of the stored frames."""
        return self._n_frames * FRAME_BYTES

    def add(self, segments: Sequence[np.ndarray], comparisons: Comparisons) -> None:
        """Store segments (each uint8 (L_i, 64, 64, 3)) and comparisons indexing into them
        (0..len(segments) - 1); segments no comparison uses are not stored. Then drop the
        oldest comparisons beyond the capacity."""
        used = np.unique(comparisons.segment)
        if len(used) and (used[0] < 0 or used[-1] >= len(segments)):
            raise ValueError("comparisons refer to segments that were not given")
        new_index = np.full(len(segments), -1, dtype=np.int64)
        new_index[used] = len(self.seg_len) + np.arange(len(used))
        lengths = np.array([len(segments[i]) for i in used], dtype=np.int64)
        self._reserve(self._n_frames + int(lengths.sum()))
        at = self._n_frames
        for i, n in zip(used, lengths):
            self._frames[at : at + n] = segments[i]
            at += n
        self._n_frames = at
        self.seg_len = np.concatenate([self.seg_len, lengths])
        self.pairs = Comparisons(
            np.concatenate([self.pairs.segment, new_index[comparisons.segment]]),
            np.concatenate([self.pairs.start, comparisons.start]),
            np.concatenate([self.pairs.length, comparisons.length]),
        )
        self._drop_oldest()

    def _reserve(self, n: int) -> None:
        if n > len(self._frames):
            grown = np.empty((max(n, int(len(self._frames) * 1.5)), 64, 64, 3), dtype=np.uint8)
            grown[: self._n_frames] = self._frames[: self._n_frames]
            self._frames = grown

    def _drop_oldest(self) -> None:
        extra = len(self.pairs) - self.capacity
        if extra <= 0:
            return
        self.dropped += extra
        keep = slice(extra, None)
        seg, start, length = (
            self.pairs.segment[keep],
            self.pairs.start[keep],
            self.pairs.length[keep],
        )
        alive = np.zeros(len(self.seg_len), dtype=bool)
        alive[seg.ravel()] = True
        offsets = np.concatenate([[0], np.cumsum(self.seg_len)])
        if not alive.all():  # compact: move the live segments' frames down, in order
            at = 0
            for s in np.flatnonzero(alive):
                a, b = offsets[s], offsets[s + 1]
                self._frames[at : at + b - a] = self._frames[a:b]
                at += b - a
            self._n_frames = at
            renumber = np.cumsum(alive) - 1
            seg = renumber[seg]
            self.seg_len = self.seg_len[alive]
        self.pairs = Comparisons(seg, start, length)

    def training_set(self) -> tuple[DemoSet, PairSet]:
        """The buffer as T-REX's training data: segments as demos (no rewards: NaN) and the
        comparisons as pairs (the second preferred). Views, not copies, of the frames."""
        offsets = np.concatenate([[0], np.cumsum(self.seg_len)]).astype(np.int64)
        n = len(self.seg_len)
        demos = DemoSet(
            self._frames[: self._n_frames],
            np.full(self._n_frames, np.nan, dtype=np.float32),
            offsets,
            np.full(n, np.nan),
            [f"segment{i}" for i in range(n)],
        )
        honest = np.ones(len(self.pairs), dtype=bool)
        return demos, PairSet(self.pairs.segment, self.pairs.start, self.pairs.length, honest)


# ----------------------------------------------------------------------------- round files


def save_round(
    path: str | os.PathLike, segments: Sequence[np.ndarray], comparisons: Comparisons
) -> Path:
    """Write one round's segments (only those the comparisons use) and comparisons to
    ``path`` (.npz, compressed, atomically)."""
    used = np.unique(comparisons.segment)
    renumber = np.full(len(segments), -1, dtype=np.int64)
    renumber[used] = np.arange(len(used))
    lengths = np.array([len(segments[i]) for i in used], dtype=np.int64)
    frames = (
        np.concatenate([segments[i] for i in used])
        if len(used)
        else np.empty((0, 64, 64, 3), dtype=np.uint8)
    )
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(
            f,
            frames=frames,
            segment_lengths=lengths,
            segment=renumber[comparisons.segment],
            start=comparisons.start,
            length=comparisons.length,
        )
    return path


def load_round(path: str | os.PathLike) -> tuple[list[np.ndarray], Comparisons]:
    """(segments, comparisons) of a round file; UserError if it is missing or corrupt."""
    try:
        with np.load(path, allow_pickle=False) as z:
            frames, lengths = z["frames"], z["segment_lengths"]
            comparisons = Comparisons(z["segment"], z["start"], z["length"])
    except (OSError, KeyError, ValueError) as err:
        raise UserError(f"preference buffer file {path} is missing or corrupt ({err})") from None
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return [frames[a:b] for a, b in zip(bounds[:-1], bounds[1:])], comparisons
