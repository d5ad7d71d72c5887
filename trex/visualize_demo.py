"""Watch a stored demo: an MP4 with upscaled frames and the return so far written above them.

    python -m trex.visualize_demo 0_123_456_789
    python -m trex.visualize_demo 1_987_654_321 --demo_csv demos/demo_infos_test.csv --out demo.mp4

The demo is looked up by id in the index CSV(s) (default ``demos/demo_infos.csv``); the
video goes to ``Videos/demo_<id>.mp4`` unless ``--out`` says otherwise. The banner shows,
over each frame, the sum of the rewards received before it and the step number; the last
frame is held for a second with the final return.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from trex.common.cli import cli_entry, positive_int, setup_logging
from trex.common.config import Config, config_parser, flag, parse_config, require

log = logging.getLogger("trex.visualize_demo")

_DIGITS = "0123456789.-+/ "
#: the largest --scale (64 px frames -> 1024 px)
MAX_SCALE = 16


@dataclasses.dataclass
class VisualizeDemoConfig(Config):
    """The options of ``visualize_demo`` (``demo_id`` must be given)."""

    demo_id: str | None = flag(positional=True, help="id of the demo (a demo_id of the index CSV)")
    demo_csv: list[str] = flag(["demos/demo_infos.csv"], help="index CSV(s) to look the id up in")
    out: str | None = flag(None, help="output MP4 (default Videos/demo_<id>.mp4)")
    scale: int = flag(4, type=positive_int, help="upscaling factor (64 px -> 256 px)")
    fps: int = flag(15, type=positive_int, help=None)

    def check(self) -> None:
        super().check()
        self.check_flags()
        require(
            self.scale <= MAX_SCALE,
            f"--scale {self.scale} is too large (at most {MAX_SCALE})",
        )
        require(
            self.out_path.suffix.lower() == ".mp4", f"--out must end in .mp4, got {self.out_path}"
        )

    @property
    def out_path(self) -> Path:
        return Path(self.out) if self.out else Path("Videos") / f"demo_{self.demo_id}.mp4"


def build_parser() -> argparse.ArgumentParser:
    return config_parser(
        VisualizeDemoConfig,
        prog="trex-visualize-demo",
        description="Render a stored demo as an MP4 with its return so far.",
    )


# ----------------------------------------------------------------------------- text banner


@functools.lru_cache(maxsize=4)
def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _text_bitmap(text: str, size: int, height: int, width: int | None = None) -> np.ndarray:
    """bool (height, width) bitmap of ``text`` (white = True), rendered once with PIL."""
    from PIL import Image, ImageDraw

    font = _font(size)
    w = width if width is not None else int(np.ceil(font.getlength(text))) + 1
    img = Image.new("L", (max(w, 1), height), 0)
    ImageDraw.Draw(img).text((0, (height - size) // 2 - 1), text, fill=255, font=font)
    return np.asarray(img) > 127


@functools.lru_cache(maxsize=4)
def _digit_glyphs(size: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(glyphs bool (len(_DIGITS), height, cell) drawn at x=0, advance width int per glyph,
    lookup int (128,) ascii -> glyph index)."""
    font = _font(size)
    advance = np.array([int(round(font.getlength(c))) for c in _DIGITS], dtype=np.int64)
    cell = int(advance.max()) + 1
    glyphs = np.stack([_text_bitmap(c, size, height, cell) for c in _DIGITS])
    lookup = np.full(128, _DIGITS.index(" "), dtype=np.int64)
    lookup[[ord(c) for c in _DIGITS]] = np.arange(len(_DIGITS))
    return glyphs, advance, lookup


def _number_strip(texts: Sequence[str], size: int, height: int) -> np.ndarray:
    """bool (T, height, W): strings of digits and ``.-+/`` rendered by glyph lookup,
    right-aligned; vectorised over frames (a loop over the few character columns only).
    Each column is as wide as the widest glyph it holds, so '.' and '/' stay narrow."""
    glyphs, advance, lookup = _digit_glyphs(size, height)
    width = max(len(s) for s in texts)
    codes = np.frombuffer("".join(s.rjust(width) for s in texts).encode("ascii"), dtype=np.uint8)
    idx = lookup[codes.reshape(len(texts), width)]  # (T, L)
    columns = []
    for j in range(width):
        w = int(advance[np.unique(idx[:, j])].max())
        columns.append(glyphs[idx[:, j], :, :w])  # (T, h, w)
    return np.concatenate(columns, axis=2)


def _banner_line(
    label: str, values: Sequence[str], size: int, height: int, width: int
) -> np.ndarray:
    """bool (T, height, width): a static label followed by per-frame digits, cropped/padded."""
    lab = _text_bitmap(label, size, height)
    nums = _number_strip(values, size, height)
    line = np.concatenate([np.broadcast_to(lab, (len(values), *lab.shape)), nums], axis=2)
    out = np.zeros((len(values), height, width), dtype=bool)
    w = min(width - 4, line.shape[2])
    out[:, :, 4 : 4 + w] = line[:, :, :w]
    return out


def annotate_demo(
    observations: np.ndarray, rewards: np.ndarray, scale: int = 4, hold: int = 15
) -> np.ndarray:
    """Video frames for a demo: uint8 (T + hold, 2 lines + 64*scale, 64*scale, 3).

    Each frame is upscaled ``scale`` times (nearest neighbour) under a banner with the
    return so far (rewards received before the frame) and the step; the last frame is
    repeated ``hold`` times showing the final return.
    """
    from trex.common.video import upscale

    obs = np.asarray(observations)
    rew = np.asarray(rewards, dtype=np.float64)
    t = len(obs)
    cum = np.concatenate([[0.0], np.cumsum(rew)])  # cum[i] = reward received before frame i
    frame_idx = np.concatenate([np.arange(t), np.full(hold, t - 1)])
    shown_ret = np.concatenate([cum[:t], np.full(hold, cum[t])])
    steps = [f"{i + 1}/{t}" for i in range(t)] + [f"{t}/{t}"] * hold
    rets = [f"{r:.1f}" for r in shown_ret]
    big = upscale(obs, scale)
    width = big.shape[2]
    size = max(10, 4 * scale)
    line_h = size + 4
    lines = np.concatenate(
        [
            _banner_line("return ", rets, size, line_h, width),
            _banner_line("step ", steps, size, line_h, width),
        ],
        axis=1,
    )
    color = np.full((len(frame_idx), 2, 3), 255, dtype=np.uint8)  # white text
    color[t:, 0] = (255, 220, 0)  # the final return, held at the end, in yellow
    row_color = color.repeat(line_h, axis=1)  # (T', 2 * line_h, 3)
    banner = np.where(lines[..., None], row_color[:, :, None, :], np.uint8(0)).astype(np.uint8)
    return np.concatenate([banner, big[frame_idx]], axis=1)


# ----------------------------------------------------------------------------- stage


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_config(VisualizeDemoConfig, argv, build_parser())
    setup_logging()
    from trex.common.video import write_mp4
    from trex.demos.store import DemoIndex

    demo = DemoIndex.read(cfg.demo_csv).load(cfg.demo_id)
    frames = annotate_demo(demo.observations, demo.rewards, cfg.scale, hold=cfg.fps)
    write_mp4(cfg.out_path, frames, fps=cfg.fps)
    log.info(
        "demo %s (%s, %d steps, return %.2f, level %s) -> %s",
        demo.demo_id,
        demo.info.get("env_name"),
        len(demo),
        demo.ret,
        demo.info.get("level_seed"),
        cfg.out_path,
    )
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
