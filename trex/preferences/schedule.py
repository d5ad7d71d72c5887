"""When the preference learner asks, and how many: a fixed budget spread over training.

Christiano et al. 2017 (arXiv 1706.03741, sec. 2.2.4 and appendix A) ask a batch of labels
from the initial policy before training, then at a rate decaying as ~1/T, ``rate(T) ∝
T_h / (T + T_h)`` (their T_h was 5e6 of ~50M Atari steps: a tenth of training); so do we, with
T_h a tenth of the run, and round so that the rounds add up to exactly the budget.
"""

from __future__ import annotations

import numpy as np

#: the decay's half-rate point as a fraction of training (Christiano et al.: 5e6 of ~50M steps)
HALF_RATE_FRACTION = 0.1


def query_rounds(total_updates: int, query_every: int) -> list[int]:
    """The PPO updates (1-based) before which labels are asked: 1, 1 + every, 1 + 2 * every, ..."""
    if total_updates < 1 or query_every < 1:
        raise ValueError("total_updates and query_every must be >= 1")
    return list(range(1, total_updates + 1, query_every))


def query_schedule(
    num_queries: int, total_updates: int, query_every: int, initial_frac: float
) -> dict[int, int]:
    """Queries per round {update: n}, adding up to exactly ``num_queries``.

    Round 1 (before the first update, on the initial policy's rollout) gets
    ``round(initial_frac * num_queries)``; the rest go to the later rounds in proportion to
    ``1 / (1 + t / HALF_RATE_FRACTION)``, t the fraction of training done, by cumulative
    rounding (so every count is an integer and the total is exact). With one round, it gets all.
    """
    if num_queries < 0 or not 0.0 <= initial_frac <= 1.0:
        raise ValueError("num_queries must be >= 0 and initial_frac in [0, 1]")
    rounds = query_rounds(total_updates, query_every)
    if len(rounds) == 1:
        return {rounds[0]: int(num_queries)}
    first = int(round(initial_frac * num_queries))
    later = np.array(rounds[1:], dtype=np.float64)
    t = (later - 1) / total_updates
    weights = 1.0 / (1.0 + t / HALF_RATE_FRACTION)
    cum = np.round(np.cumsum(weights) / weights.sum() * (num_queries - first)).astype(np.int64)
    counts = np.diff(np.concatenate([[0], cum]))
    return {rounds[0]: first, **{int(u): int(n) for u, n in zip(rounds[1:], counts)}}
