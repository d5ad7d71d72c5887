"""Metrics of learned rewards: preference accuracy and loss on snippet pairs, Pearson and
Spearman correlation of predicted with true returns, and the episode-length baseline.

Pair convention (the original project's): column 1 of a pair is the preferred snippet (label 1),
so a pair is classified correctly when its predicted return is strictly larger than column 0's
(the original project's ``torch.max`` picks index 0 on ties, which counts as wrong).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def pair_accuracy(returns: np.ndarray) -> float:
    """Fraction of pairs whose preferred snippet (column 1) has the larger predicted return.

    returns: (P, 2) predicted snippet returns.
    """
    r = np.asarray(returns, dtype=np.float64)
    if len(r) == 0:
        return float("nan")
    return float(np.mean(r[:, 1] > r[:, 0]))


def pair_losses(
    returns: np.ndarray, abs_sums: np.ndarray | None = None, lam_l1: float = 0.0
) -> np.ndarray:
    """Per-pair T-REX loss (P,): Bradley-Terry cross-entropy with label 1,
    ``log(1 + exp(R0 - R1))`` (Brown et al. 2019, Eq. 1), plus ``lam_l1`` times the summed
    absolute per-frame rewards of both snippets (the original project's L1 term).

    returns: (P, 2); abs_sums: (P, 2) sums of |r| over each snippet's frames.
    """
    r = np.asarray(returns, dtype=np.float64)
    ce = np.logaddexp(0.0, r[:, 0] - r[:, 1])
    if abs_sums is None or lam_l1 == 0.0:
        return ce
    return ce + lam_l1 * np.asarray(abs_sums, dtype=np.float64).sum(axis=1)


def pair_loss(
    returns: np.ndarray, abs_sums: np.ndarray | None = None, lam_l1: float = 0.0
) -> float:
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
    pearson = _row_pearson(p[None], t[None])[0]
    spearman = _row_pearson(average_ranks(p[None]), average_ranks(t[None]))[0]
    return float(pearson), float(spearman)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of each row of values (B, n), ties given their average rank (the ranks
    Spearman's rho correlates); a row holding a NaN is all NaN. float64 (B, n).

    Written here rather than taken from scipy.stats, whose import alone costs about a second
    in every process that computes a metric."""
    a = np.asarray(values, dtype=np.float64)
    n = a.shape[1]
    order = np.argsort(a, axis=1, kind="stable")
    s = np.take_along_axis(a, order, axis=1)
    pos = np.broadcast_to(np.arange(n), a.shape)
    starts = np.ones(a.shape, dtype=bool)
    starts[:, 1:] = s[:, 1:] != s[:, :-1]
    ends = np.ones(a.shape, dtype=bool)
    ends[:, :-1] = starts[:, 1:]
    first = np.maximum.accumulate(np.where(starts, pos, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends, pos, n)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty(a.shape)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=1)
    ranks[np.isnan(a).any(axis=1)] = np.nan
    return ranks


def length_baseline(lengths: np.ndarray, returns: np.ndarray) -> tuple[float, float]:
    """The episode-length baseline: the correlations a reward of +1 per step gets, i.e.
    (Pearson, Spearman) of episode length against true return."""
    return correlations(np.asarray(lengths, dtype=np.float64), returns)


# ----------------------------------------------------------------------------- content vs survival
#
# A reward that pays +c every step "correlates" with the true return whenever longer
# episodes score more. The metrics below tell such a survival bonus from a reward that
# knows what happened in the frames:
#
# * partial correlation of predicted with true return given episode length (0 for a
#   constant-per-step reward by construction);
# * fixed-window correlation: predicted vs true return summed over windows of equal length
#   (adding a constant to every frame's reward shifts every window by the same amount);
# * model agreement: EPIC's Pearson distance between two models' per-frame rewards
#   (Gleave et al. 2021, arXiv 2006.13900); for rewards of one frame, EPIC's
#   canonicalisation reduces to centring, so the distance is sqrt((1 - rho) / 2).
#
# Every metric comes with a bootstrap 95% interval over demos: a resample draws demos with
# replacement (the frames and windows of a demo go with it). Correlations of a resample are
# computed from per-demo sums of x, x x^T (one matrix product for all resamples), so 1000
# resamples cost about as much as one pass over the data.

#: bootstrap resamples for the 95% intervals
NUM_BOOTSTRAP = 1000
#: frames per window of the fixed-window correlation
DEFAULT_WINDOW = 50


def _moment_correlations(
    x: np.ndarray, groups: np.ndarray, n_groups: int, weights: np.ndarray
) -> np.ndarray:
    """Correlation matrices (B, k, k) of items x (n, k) that belong to ``groups`` (n,), with
    the groups weighted by ``weights`` (B, G) (a bootstrap resample's demo multiplicities).

    Computed from per-group counts, sums and cross products, so B resamples cost one matrix
    product. NaN where a variable is constant (spread at rounding level of its magnitude).
    """
    x = np.asarray(x, dtype=np.float64)
    magnitude = np.abs(x).max(axis=0) if len(x) else np.ones(x.shape[1])
    x = x - x.mean(axis=0)  # correlations are shift-invariant; centring keeps sums accurate
    count = np.bincount(groups, minlength=n_groups).astype(np.float64)
    sums = np.zeros((n_groups, x.shape[1]))
    np.add.at(sums, groups, x)
    cross = np.zeros((n_groups, x.shape[1], x.shape[1]))
    np.add.at(cross, groups, x[:, :, None] * x[:, None, :])
    n = weights @ count
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (weights @ sums) / n[:, None]
        cov = (
            np.einsum("bg,gij->bij", weights, cross) / n[:, None, None]
            - mean[:, :, None] * mean[:, None, :]
        )
    scale = np.sqrt(np.clip(np.diagonal(cov, axis1=1, axis2=2), 0.0, None))
    scale = np.where(scale <= 1e-9 * (magnitude + 1e-300), np.nan, scale)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / (scale[:, :, None] * scale[:, None, :])
    return np.clip(corr, -1.0, 1.0)


def _partial_from_corr(c: np.ndarray) -> np.ndarray:
    """Partial correlation of variables 0 and 1 given variable 2, from correlation matrices
    (..., 3, 3). 0 where variable 0 is a linear function of variable 2 (a constant-per-step
    reward: nothing beyond length); NaN where variable 1 is (nothing left to explain)."""
    r01, r02, r12 = c[..., 0, 1], c[..., 0, 2], c[..., 1, 2]
    c0, c1, c2 = (np.isnan(c[..., i, i]) for i in range(3))  # constant variables
    d0, d1 = 1.0 - r02**2, 1.0 - r12**2
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (r01 - r02 * r12) / np.sqrt(d0 * d1)
    out = np.where(c2, r01, out)  # all lengths equal: nothing to hold fixed
    # variable 0 carries nothing beyond variable 2 (e.g. a reward constant per step): 0
    out = np.where(~c1 & ~c2 & (c0 | (d0 < 1e-10)), 0.0, out)
    out = np.where(c1 | (~c2 & (d1 < 1e-10)), np.nan, out)
    return np.clip(out, -1.0, 1.0)


def bootstrap_weights(
    n: int, num: int = NUM_BOOTSTRAP, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap resamples of ``n`` demos: (indices int64 (num, n), multiplicities float
    (num, n))."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(n, size=(num, n))
    weights = np.zeros((num, n))
    np.add.at(weights, (np.repeat(np.arange(num), n), idx.ravel()), 1.0)
    return idx, weights


def interval(samples: np.ndarray) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of bootstrap samples, NaNs ignored (NaN if none)."""
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if len(s) == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(s, [2.5, 97.5])
    return float(lo), float(hi)


def partial_correlation(predicted: np.ndarray, true: np.ndarray, lengths: np.ndarray) -> float:
    """Pearson partial correlation of predicted with true returns given episode length (n,).

    Positive only if the predicted return knows more about the true return than the
    episode's length does; 0 for a reward that is constant per step, 1 for the true reward.
    """
    x = np.stack([predicted, true, lengths], axis=1).astype(np.float64)
    n = len(x)
    if n < 3:
        return float("nan")
    return float(_partial_from_corr(_moment_correlations(x, np.arange(n), n, np.ones((1, n))))[0])


def window_sums(
    frame_values: np.ndarray, offsets: np.ndarray, window: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sums over consecutive non-overlapping windows of ``window`` frames inside each demo:
    (sums float64 (W, k), demo of each window int64 (W,)) for frame values (F,) or (F, k) and
    demo offsets (n + 1,). A demo of T frames gives floor(T / window) windows."""
    v = np.asarray(frame_values, dtype=np.float64)
    v = v[:, None] if v.ndim == 1 else v
    lengths = np.diff(offsets)
    per_demo = lengths // window
    demo = np.repeat(np.arange(len(lengths)), per_demo)
    first = np.cumsum(per_demo) - per_demo
    starts = offsets[demo] + (np.arange(len(demo)) - np.repeat(first, per_demo)) * window
    c = np.concatenate([np.zeros((1, v.shape[1])), np.cumsum(v, axis=0)])
    return c[starts + window] - c[starts], demo


def window_correlation(
    pred_frames: np.ndarray,
    true_frames: np.ndarray,
    offsets: np.ndarray,
    window: int = DEFAULT_WINDOW,
) -> float:
    """Pearson correlation of predicted with true return over fixed windows of ``window``
    frames cut from the demos (see :func:`window_sums`): 0 when the predicted window sums are
    all equal (a reward constant per step), NaN with fewer than 3 windows or constant true sums."""
    sums, _ = window_sums(np.stack([pred_frames, true_frames], axis=1), offsets, window)
    if len(sums) < 3:
        return float("nan")
    n = len(sums)
    return float(_window_corr(_moment_correlations(sums, np.arange(n), n, np.ones((1, n))))[0])


def _window_corr(c: np.ndarray) -> np.ndarray:
    """Predicted-vs-true correlation from (B, 2, 2) matrices; 0 where only the prediction is
    constant."""
    const_pred, const_true = np.isnan(c[:, 0, 0]), np.isnan(c[:, 1, 1])
    return np.where(const_pred & ~const_true, 0.0, c[:, 0, 1])


def pearson_distance(rewards_a: np.ndarray, rewards_b: np.ndarray) -> float:
    """EPIC's Pearson distance sqrt((1 - rho) / 2) between two per-frame rewards (F,):
    0 for a and c*a + b (c > 0), 1 for a and -a (Gleave et al. 2021, arXiv 2006.13900)."""
    rho = correlations(rewards_a, rewards_b)[0]
    return float(np.sqrt(max(0.0, 1.0 - rho) / 2.0))


def reward_metrics(
    pred_frames: np.ndarray,
    true_frames: np.ndarray,
    offsets: np.ndarray,
    window: int = DEFAULT_WINDOW,
    num_bootstrap: int = NUM_BOOTSTRAP,
    seed: int = 0,
) -> dict[str, float]:
    """Every metric of a learned reward on a set of demos, with bootstrap 95% intervals.

    pred_frames, true_frames: per-frame predicted and true rewards (F,) of n demos laid end
    to end, demo i at [offsets[i], offsets[i + 1]). Keys (each also with ``_lo``/``_hi``):
    ``pearson``, ``spearman`` (predicted vs true return per demo), ``baseline_pearson``,
    ``baseline_spearman`` (episode length vs true return: a +1-per-step reward),
    ``partial`` (predicted vs true return given length), ``window_pearson`` (predicted vs
    true return over windows of ``window`` frames); plus ``n_demos``, ``n_windows``, ``window``.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    pred_frames = np.asarray(pred_frames, dtype=np.float64)
    true_frames = np.asarray(true_frames, dtype=np.float64)
    if len(pred_frames) != offsets[-1] or len(true_frames) != offsets[-1]:
        raise ValueError("per-frame arrays and demo offsets disagree")
    n = len(offsets) - 1
    lengths = np.diff(offsets).astype(np.float64)
    c = np.concatenate([[0.0], np.cumsum(pred_frames)])
    pred = c[offsets[1:]] - c[offsets[:-1]]
    c = np.concatenate([[0.0], np.cumsum(true_frames)])
    true = c[offsets[1:]] - c[offsets[:-1]]
    idx, weights = bootstrap_weights(n, num_bootstrap, seed)
    all_w = np.vstack([np.ones((1, n)), weights])  # row 0: the data itself

    corr = _moment_correlations(np.stack([pred, true, lengths], axis=1), np.arange(n), n, all_w)
    samples: dict[str, np.ndarray] = {
        "pearson": corr[:, 0, 1],
        "baseline_pearson": corr[:, 2, 1],
        "partial": _partial_from_corr(corr),
    }
    ranks = [average_ranks(np.vstack([a[None], a[idx]])) for a in (pred, true, lengths)]
    samples["spearman"] = _row_pearson(ranks[0], ranks[1])
    samples["baseline_spearman"] = _row_pearson(ranks[2], ranks[1])

    wsum, wdemo = window_sums(np.stack([pred_frames, true_frames], axis=1), offsets, window)
    if len(wsum) >= 3:
        samples["window_pearson"] = _window_corr(_moment_correlations(wsum, wdemo, n, all_w))
    else:
        samples["window_pearson"] = np.full(len(all_w), np.nan)

    out: dict[str, float] = {}
    for key, s in samples.items():
        out[key] = float(s[0])
        out[f"{key}_lo"], out[f"{key}_hi"] = interval(s[1:])
    if n < 2 or np.ptp(pred) == 0 or not np.all(np.isfinite(pred)):
        out.update({k: float("nan") for k in ("pearson", "spearman")})
    out.update(n_demos=n, n_windows=len(wsum), window=window)
    return out


def _row_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of a with the same row of b: (B, n), (B, n) -> (B,)."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(1) / den, np.nan)


def model_agreement(
    frame_rewards: np.ndarray,
    offsets: np.ndarray,
    num_bootstrap: int = NUM_BOOTSTRAP,
    seed: int = 0,
) -> dict[str, Any]:
    """How much K reward models agree on the same frames.

    frame_rewards: (K, F) per-frame rewards of K models on n demos laid end to end
    (``offsets`` (n + 1,)). Returns ``distance`` (K, K) EPIC Pearson distances
    sqrt((1 - rho) / 2), ``mean_distance`` over the K (K - 1) / 2 pairs and its bootstrap
    95% interval over demos (``mean_distance_lo``/``_hi``).
    """
    r = np.asarray(frame_rewards, dtype=np.float64)
    k = r.shape[0]
    offsets = np.asarray(offsets, dtype=np.int64)
    n = len(offsets) - 1
    groups = np.repeat(np.arange(n), np.diff(offsets))
    _, weights = bootstrap_weights(n, num_bootstrap, seed)
    all_w = np.vstack([np.ones((1, n)), weights])
    corr = _moment_correlations(r.T, groups, n, all_w)
    dist = np.sqrt(np.clip(1.0 - corr, 0.0, None) / 2.0)
    iu = np.triu_indices(k, 1)
    mean = dist[:, iu[0], iu[1]].mean(axis=1) if k > 1 else np.full(len(all_w), np.nan)
    lo, hi = interval(mean[1:])
    return {
        "distance": dist[0],
        "mean_distance": float(mean[0]),
        "mean_distance_lo": lo,
        "mean_distance_hi": hi,
    }
