"""MP4 video from uint8 frames, headless (imageio's PyAV plugin; see DESIGN.md for why
not imageio-ffmpeg)."""

from __future__ import annotations

import logging
import os

import numpy as np

from trex.common.files import atomic_path

log = logging.getLogger(__name__)


def upscale(frames: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling: (T, H, W, 3) -> (T, H*factor, W*factor, 3)."""
    if factor == 1:
        return frames
    return frames.repeat(factor, axis=1).repeat(factor, axis=2)


def tile(frames: np.ndarray, columns: int | None = None) -> np.ndarray:
    """Tile several screens into one: (T, N, H, W, 3) -> (T, rows*H, cols*W, 3)."""
    t, n, h, w, c = frames.shape
    cols = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    if rows * cols != n:
        pad = np.zeros((t, rows * cols - n, h, w, c), dtype=frames.dtype)
        frames = np.concatenate([frames, pad], axis=1)
    grid = frames.reshape(t, rows, cols, h, w, c).transpose(0, 1, 3, 2, 4, 5)
    return grid.reshape(t, rows * h, cols * w, c)


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: int = 15) -> None:
    """Write uint8 frames (T, H, W, 3) as an H.264 MP4, atomically.

    H and W are padded to even sizes (yuv420p needs them).
    """
    import imageio.v3 as iio

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(
            f"expected uint8 frames (T, H, W, 3) with T > 0, got {frames.dtype} {frames.shape}"
        )
    _, h, w, _ = frames.shape
    if h % 2 or w % 2:
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
    with atomic_path(path, suffix=".mp4") as tmp:
        iio.imwrite(tmp, frames, plugin="pyav", fps=fps, codec="libx264")
    log.info("wrote %s (%d frames, %dx%d)", path, len(frames), frames.shape[2], frames.shape[1])


def read_mp4(path: str | os.PathLike) -> np.ndarray:
    """Read an MP4 back as uint8 frames (T, H, W, 3)."""
    import imageio.v3 as iio

    return np.asarray(iio.imread(path, plugin="pyav"))
