"""The synthetic labeller: a scripted teacher that compares two segments by their true return.

It stands in for the human of Christiano et al. 2017 (arXiv 1706.03741, sec. 3.3: synthetic
feedback from the game's reward), with BPref's scripted-teacher irrationalities (Lee et al.
2021, arXiv 2106.05091): Boltzmann rationality ``P(b > a) = sigmoid(beta * (R_b - R_a))`` and
a mistake rate ``eps`` (the answer flipped with probability eps). Ties (equal true returns)
are asked and skipped: a query that costs the teacher's time and gives no label (BPref counts
such queries against its feedback budget too).

This is the only code of the preference learner that reads the true reward for learning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trex.preferences.selection import Segments


@dataclass
class Labels:
    """The answers to P queries: ``prefer`` int64 (P,) 1 if the second segment is preferred, 0 if
    the first; ``keep`` bool (P,) False for a tie (no label)."""

    prefer: np.ndarray
    keep: np.ndarray

    def oriented(self, pairs: np.ndarray) -> np.ndarray:
        """The labelled pairs (K, 2) of ``pairs`` (P, 2), each ordered worse -> preferred."""
        p, pref = pairs[self.keep], self.prefer[self.keep]
        return np.where(pref[:, None] == 1, p, p[:, ::-1])


class SyntheticLabeller:
    """Answers queries from per-frame true rewards; counts every query it is asked.

    ``noise``: the probability of a flipped answer (BPref's ``eps_mistake``), in [0, 0.5];
    ``beta``: Boltzmann rationality (None: a perfectly rational teacher that always prefers
    the higher return).
    """

    def __init__(self, noise: float = 0.0, beta: float | None = None) -> None:
        if not 0.0 <= noise <= 0.5:
            raise ValueError(f"label noise must be in [0, 0.5], got {noise}")
        if beta is not None and beta <= 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        self.noise, self.beta = float(noise), beta
        self.queries = 0

    def query(
        self,
        true_rewards: np.ndarray,
        segments: Segments,
        pairs: np.ndarray,
        rng: np.random.Generator,
        count: bool = True,
    ) -> Labels:
        """Labels for pairs (P, 2) of ``segments`` of a rollout whose per-step true rewards are
        ``true_rewards`` (T, N): the segments' true returns, compared by :meth:`answer`."""
        returns = segments.sums(np.asarray(true_rewards, dtype=np.float64))
        return self.answer(returns[pairs], rng, count)

    def answer(self, returns: np.ndarray, rng: np.random.Generator, count: bool = True) -> Labels:
        """Labels for pairs whose true returns are ``returns`` (P, 2). ``count=False``: an
        evaluation query (held-out accuracy), not part of the budget."""
        r = np.asarray(returns, dtype=np.float64)
        diff = r[:, 1] - r[:, 0]
        keep = diff != 0
        if self.beta is None:
            prefer = (diff > 0).astype(np.int64)
        else:
            p = 1.0 / (1.0 + np.exp(-np.clip(self.beta * diff, -60, 60)))
            prefer = (rng.random(len(r)) < p).astype(np.int64)
        if self.noise > 0:
            flip = rng.random(len(r)) < self.noise
            prefer = np.where(flip, 1 - prefer, prefer)
        if count:
            self.queries += len(r)
        return Labels(prefer, keep)
