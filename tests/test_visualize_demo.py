"""visualize_demo: the video is written and readable, shows the upscaled frames under a
banner with the return so far, and bad input gives one clear line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trex.common.video import read_mp4
from trex.demos.store import append_index, write_demo
from trex.visualize_demo import annotate_demo, main


def make_store(
    root: Path, demo_id: str = "0_000_000_042", t: int = 12
) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    # smooth frames (codec-friendly): a moving gradient
    base = np.linspace(0, 255, 64, dtype=np.float32)
    obs = np.stack(
        [np.stack([np.roll(base, k)[None, :].repeat(64, 0)] * 3, -1) for k in range(t)]
    ).astype(np.uint8)
    act = rng.integers(0, 15, t)
    rew = np.zeros(t, dtype=np.float32)
    rew[[3, 7]] = [1.0, 2.5]
    write_demo(root / "demo_files", demo_id, obs, act, rew)
    append_index(
        root / "demo_infos.csv",
        [
            {
                "demo_id": demo_id,
                "env_name": "starpilot",
                "mode": "easy",
                "length": t,
                "return": 3.5,
                "set_name": "train",
                "sequential": 0,
                "level_seed": 42,
                "policy": "random",
                "noise": 1.0,
                "file": f"demo_files/{demo_id}.npz",
                "done": True,
                "seed": 0,
                "policy_timesteps": -1,
            }
        ],
    )
    return root / "demo_infos.csv", obs, rew


def test_annotate_demo_layout() -> None:
    t, scale, hold = 6, 3, 4
    obs = np.random.default_rng(1).integers(0, 256, (t, 64, 64, 3), dtype=np.uint8)
    rew = np.array([0, 1, 0, 0, 2, 0], dtype=np.float32)
    frames = annotate_demo(obs, rew, scale=scale, hold=hold)
    assert frames.dtype == np.uint8 and frames.shape[0] == t + hold
    banner_h = frames.shape[1] - 64 * scale
    assert banner_h > 0 and frames.shape[2] == 64 * scale
    big = obs.repeat(scale, 1).repeat(scale, 2)
    np.testing.assert_array_equal(frames[:t, banner_h:], big)
    np.testing.assert_array_equal(
        frames[t:, banner_h:], np.broadcast_to(big[-1], (hold, *big.shape[1:]))
    )
    # the return line changes exactly when a reward has been received before the frame
    ret_line = frames[:, : banner_h // 2]
    assert np.array_equal(ret_line[0], ret_line[1])  # 0.0, 0.0
    assert not np.array_equal(ret_line[1], ret_line[2])  # 0.0 -> 1.0
    assert np.array_equal(ret_line[2], ret_line[4])  # 1.0
    assert not np.array_equal(ret_line[4], ret_line[5])  # 1.0 -> 3.0
    assert (frames[:, :banner_h] > 0).any()


def test_video_written_and_readable(tmp_path: Path) -> None:
    csv, obs, _ = make_store(tmp_path)
    out = tmp_path / "v.mp4"
    assert (
        main(
            [
                "0_000_000_042",
                "--demo_csv",
                str(csv),
                "--out",
                str(out),
                "--scale",
                "2",
                "--fps",
                "5",
            ]
        )
        == 0
    )
    video = read_mp4(out)
    assert video.shape[0] == len(obs) + 5  # the last frame is held for a second
    assert video.shape[2] == 128 and video.shape[1] > 128
    assert not list(tmp_path.glob(".*.tmp*"))  # written atomically


def test_default_output_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_store(tmp_path / "demos")
    monkeypatch.chdir(tmp_path)
    assert main(["0_000_000_042"]) == 0  # default --demo_csv demos/demo_infos.csv
    assert read_mp4(tmp_path / "Videos" / "demo_0_000_000_042.mp4").shape[2] == 256


@pytest.mark.parametrize(
    "case, message",
    [
        ("unknown_id", "demo id 'nope' is not in"),
        ("missing_csv", "demo index not found"),
        ("missing_file", "demo file not found"),
        ("corrupt_file", "is corrupt or not a demo"),
        ("bad_out", "--out must end in .mp4"),
    ],
)
def test_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture, case: str, message: str) -> None:
    csv, _, _ = make_store(tmp_path)
    npz = tmp_path / "demo_files" / "0_000_000_042.npz"
    args = ["0_000_000_042", "--demo_csv", str(csv), "--out", str(tmp_path / "v.mp4")]
    if case == "unknown_id":
        args[0] = "nope"
    elif case == "missing_csv":
        args[2] = str(tmp_path / "other.csv")
    elif case == "missing_file":
        npz.unlink()
    elif case == "corrupt_file":
        npz.write_bytes(b"PK\x03\x04 broken")
    elif case == "bad_out":
        args[-1] = str(tmp_path / "v.gif")
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "v.mp4").exists()
