"""What a reward looks at: perturbation saliency (Greydanus et al. 2018, arXiv 1711.00138),
as in T-REX's Atari figures (Brown et al. 2019, arXiv 1904.06387, sec. 6.4).

A frame ``I`` is blurred around one point (i, j): ``Φ = I (1 - M) + A(I) M`` with ``A(I)``
the frame under a Gaussian blur (sigma 3 px) and ``M`` a Gaussian mask centred at (i, j)
(sigma 5 px, cut to zero beyond 2 sigma, so a point far from what the reward reads scores
exactly 0); the saliency of (i, j) is the change of the predicted reward, ``|r(I) - r(Φ)|``.
Every perturbed copy of a frame is scored in one batched call.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: frames float32 (N, 64, 64, 3) -> rewards (N,)
FrameReward = Callable[[np.ndarray], np.ndarray]

MASK_SIGMA = 5.0
BLUR_SIGMA = 3.0
MASK_RADIUS = 2.0  # in mask sigmas


def blur_masks(centres: np.ndarray, size: int = 64, sigma: float = MASK_SIGMA) -> np.ndarray:
    """Gaussian masks float32 (P, size, size) in [0, 1] centred at ``centres`` (P, 2) (row,
    col), zero beyond ``MASK_RADIUS * sigma``."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    d2 = (y[None] - centres[:, 0, None, None]) ** 2 + (x[None] - centres[:, 1, None, None]) ** 2
    m = np.exp(-d2 / (2 * sigma**2))
    m[d2 > (MASK_RADIUS * sigma) ** 2] = 0.0
    return m.astype(np.float32)


def saliency_map(
    reward_fn: FrameReward, frame: np.ndarray, stride: int = 2, batch: int = 512
) -> tuple[np.ndarray, float]:
    """(saliency float32 (64, 64), the frame's reward) of one uint8 frame (64, 64, 3): the
    reward change when blurring around every ``stride``-th point, each value filling its
    stride x stride cell."""
    from scipy.ndimage import gaussian_filter

    img = frame.astype(np.float32)
    blurred = gaussian_filter(img, sigma=(BLUR_SIGMA, BLUR_SIGMA, 0))
    size = img.shape[0]
    grid = np.arange(stride // 2, size, stride)
    centres = np.stack(np.meshgrid(grid, grid, indexing="ij"), axis=-1).reshape(-1, 2)
    base = float(np.asarray(reward_fn(img[None]))[0])
    change = np.empty(len(centres), dtype=np.float32)
    for lo in range(0, len(centres), batch):
        m = blur_masks(centres[lo : lo + batch], size)[..., None]
        perturbed = img[None] * (1 - m) + blurred[None] * m
        change[lo : lo + batch] = np.abs(base - np.asarray(reward_fn(perturbed), np.float32))
    cells = change.reshape(len(grid), len(grid))
    full = np.repeat(np.repeat(cells, stride, axis=0), stride, axis=1)[:size, :size]
    return full.astype(np.float32), base
