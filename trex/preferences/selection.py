"""Which segment pairs of a rollout the labeller is asked about.

Segments are cut from the rollout PPO collected (no extra environment steps): each
environment's ``nsteps`` frames in consecutive pieces of ``length`` frames from a random
phase. Candidate pairs are random pairs of different segments; ``uniform`` asks about the
first ones, ``disagreement`` about those whose preference the ensemble's members disagree on
most: the variance over members of ``P_m(b > a) = sigmoid(R_m(b) - R_m(a))`` (Christiano et
al. 2017, sec. 2.2.4; PEBBLE's disagreement sampling, Lee et al. 2021, arXiv 2106.05091;
imitation's active selection).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SELECTIONS: tuple[str, ...] = ("uniform", "disagreement")


@dataclass
class Segments:
    """Segments of a rollout (T steps x N envs): env int64 (S,), start int64 (S,), one length."""

    env: np.ndarray
    start: np.ndarray
    length: int

    def __len__(self) -> int:
        return len(self.env)

    def sums(self, values: np.ndarray) -> np.ndarray:
        """Per-segment sums (..., S) of per-step values (T, ..., N) (e.g. members' rewards
        (T, M, N) -> (M, S)), via one cumulative sum."""
        c = np.cumsum(values, axis=0, dtype=np.float64)
        c = np.concatenate([np.zeros_like(c[:1]), c])
        return c[self.start + self.length, ..., self.env].T - c[self.start, ..., self.env].T


def cut_segments(nsteps: int, num_envs: int, length: int, rng: np.random.Generator) -> Segments:
    """Every environment's steps cut into ``nsteps // length`` consecutive segments, starting
    at a random phase in [0, nsteps - length * (nsteps // length)]."""
    if length > nsteps:
        raise ValueError(f"segment length {length} is longer than the rollout ({nsteps} steps)")
    per_env = nsteps // length
    phase = int(rng.integers(0, nsteps - per_env * length + 1))
    starts = phase + length * np.arange(per_env)
    env = np.repeat(np.arange(num_envs), per_env)
    return Segments(env.astype(np.int64), np.tile(starts, num_envs).astype(np.int64), length)


def candidate_pairs(num_segments: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random pairs (n, 2) of different segments out of ``num_segments``."""
    if num_segments < 2:
        raise ValueError("need at least two segments to make a pair")
    a = rng.integers(num_segments, size=n)
    b = (a + rng.integers(1, num_segments, size=n)) % num_segments
    return np.stack([a, b], axis=1).astype(np.int64)


def preference_disagreement(member_returns: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Variance over members float64 (P,) of ``sigmoid(R_m(b) - R_m(a))`` for pairs (P, 2) of
    segments whose members' predicted returns are ``member_returns`` (M, S)."""
    r = np.asarray(member_returns, dtype=np.float64)
    d = r[:, pairs[:, 1]] - r[:, pairs[:, 0]]
    p = 1.0 / (1.0 + np.exp(-np.clip(d, -60, 60)))
    return p.var(axis=0)


def select_pairs(
    candidates: np.ndarray, n: int, method: str, member_returns: np.ndarray | None = None
) -> np.ndarray:
    """``n`` of the candidate pairs (C, 2): the first ``n`` (``uniform``; the candidates are
    random already) or the ``n`` of highest :func:`preference_disagreement`
    (``disagreement``, ties broken by candidate order)."""
    if method == "uniform":
        return candidates[:n]
    if method != "disagreement":
        raise ValueError(f"unknown selection {method!r}; one of {', '.join(SELECTIONS)}")
    if member_returns is None or len(member_returns) < 2:
        raise ValueError("disagreement selection needs an ensemble of at least 2 members")
    var = preference_disagreement(member_returns, candidates)
    return candidates[np.argsort(-var, kind="stable")[:n]]
