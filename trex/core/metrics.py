"""Metrics of learned rewards: preference accuracy and loss on snippet pairs, Pearson and
Spearman correlation of predicted with true returns, and the episode-length baseline.

Pair convention (the seed's): column 1 of a pair is the preferred snippet (label 1), so a
pair is classified correctly when its predicted return is strictly larger than column 0's
(the seed's ``torch.max`` picks index 0 on ties, which counts as wrong).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats


def pair_accuracy(returns: np.ndarray) -> float:
    """Fraction of pairs whose preferred snippet (column 1) has the larger predicted return.

    returns: (P, 2) predicted snippet returns.
    """
    r = np.asarray(returns, dtype=np.float64)
    if len(r) == 0:
        return float("nan")
    return float(np.mean(r[:, 1] > r[:, 0]))


def pair_losses(returns: np.ndarray, abs_sums: np.ndarray | None = None, lam_l1: float = 0.0) -> np.ndarray:
    """Per-pair T-REX loss (P,): Bradley-Terry cross-entropy with label 1,
    ``log(1 + exp(R0 - R1))`` (Brown et al. 2019, Eq. 1), plus ``lam_l1`` times the summed
    absolute per-frame rewards of both snippets (the seed's L1 term).

    returns: (P, 2); abs_sums: (P, 2) sums of |r| over each snippet's frames.
    """
    r = np.asarray(returns, dtype=np.float64)
    ce = np.logaddexp(0.0, r[:, 0] - r[:, 1])
    if abs_sums is None or lam_l1 == 0.0:
        return ce
    return ce + lam_l1 * np.asarray(abs_sums, dtype=np.float64).sum(axis=1)


def pair_loss(returns: np.ndarray, abs_sums: np.ndarray | None = None, lam_l1: float = 0.0) -> float:
    """Mean of :func:`pair_losses`."""
    if len(returns) == 0:
        return float("nan")
    return float(pair_losses(returns, abs_sums, lam_l1).mean())


def correlations(predicted: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    """(Pearson r, Spearman rho) of predicted against true returns; NaN when either side is
    constant or fewer than 2 values are given."""
    p = np.asarray(predicted, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    if len(p) != len(t):
        raise ValueError(f"predicted ({len(p)}) and true ({len(t)}) differ in length")
    if len(p) < 2 or np.ptp(p) == 0 or np.ptp(t) == 0 or not np.all(np.isfinite(p)):
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pearson = stats.pearsonr(p, t)[0]
        spearman = stats.spearmanr(p, t)[0]
    return float(pearson), float(spearman)


def length_baseline(lengths: np.ndarray, returns: np.ndarray) -> tuple[float, float]:
    """The episode-length baseline: the correlations a reward of +1 per step gets, i.e.
    (Pearson, Spearman) of episode length against true return."""
    return correlations(np.asarray(lengths, dtype=np.float64), returns)
