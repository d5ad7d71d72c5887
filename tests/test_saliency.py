"""Perturbation saliency (plot_reward_saliency): a reward that reads one region of the frame is
salient only within reach of that region, and the stage draws a grid for real models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from trex.common.errors import UserError
from trex.plotting.saliency import PlotRewardSaliencyConfig
from trex.reward.saliency import MASK_RADIUS, MASK_SIGMA, saliency_map


@pytest.mark.parametrize("stride", [1, 4])
def test_a_reward_of_one_region_is_salient_only_there(stride):
    rows, cols = slice(20, 30), slice(36, 44)

    def reward(frames: np.ndarray) -> np.ndarray:
        return frames[:, rows, cols, :].mean(axis=(1, 2, 3))

    frame = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    sal, base = saliency_map(reward, frame, stride=stride)
    assert base == pytest.approx(float(reward(frame[None].astype(np.float32))[0]))
    reach = int(MASK_RADIUS * MASK_SIGMA)
    near = np.zeros((64, 64), dtype=bool)
    grid = np.arange(stride // 2, 64, stride)
    for i in grid:  # a cell is near if its blur centre is within reach of the region
        for j in grid:
            dy = max(rows.start - i, 0, i - (rows.stop - 1))
            dx = max(cols.start - j, 0, j - (cols.stop - 1))
            if dy * dy + dx * dx <= reach * reach:
                near[
                    i - stride // 2 : i - stride // 2 + stride,
                    j - stride // 2 : j - stride // 2 + stride,
                ] = True
    assert (sal[~near] == 0).all()
    assert (sal[rows, cols] > 0).all()


def test_saliency_stage_draws_models_side_by_side(tmp_path):
    import matplotlib.image as mpimg
    from conftest import make_tiny_demos

    from trex.plotting.saliency import reward_saliency_figure
    from trex.reward.model_file import save_reward_model
    from trex.reward.nets import build_net

    paths = []
    for i in range(2):
        p = tmp_path / f"m{i}.safetensors"
        save_reward_model(
            p,
            build_net("seed_cnn"),
            env_name="starpilot",
            mode="easy",
            num_dems=2,
            seed=i,
            rm_id=f"m{i}",
        )
        paths.append(str(p))
    demo_csv = make_tiny_demos(tmp_path / "demos")
    cfg = PlotRewardSaliencyConfig(
        reward_model=paths,
        demo_csv=[str(demo_csv)],
        num_frames=2,
        stride=8,
        out=str(tmp_path / "s.png"),
    )
    cfg.check()
    img = mpimg.imread(reward_saliency_figure(cfg))
    assert img.shape[1] > img.shape[0]  # 3 columns, 2 rows


@pytest.mark.parametrize(
    "changes,message",
    [
        ({}, "--reward_model"),
        ({"reward_model": ["a.safetensors"]}, "--demo_csv or --load_path"),
        ({"reward_model": ["a"], "demo_csv": ["d"], "position": 2.0}, "--position"),
    ],
)
def test_bad_saliency_settings_are_one_line_errors(changes, message):
    with pytest.raises(UserError, match=message):
        PlotRewardSaliencyConfig(**changes).check()


def test_saliency_of_policy_frames(tmp_path):
    from trex.plotting.saliency import reward_saliency_figure
    from trex.reward.model_file import save_reward_model
    from trex.reward.nets import build_net

    model = tmp_path / "m.safetensors"
    save_reward_model(
        model, build_net("seed_cnn"), env_name="starpilot", mode="easy", num_dems=2, seed=0
    )
    cfg = PlotRewardSaliencyConfig(
        reward_model=[str(model)], load_path="random", num_frames=2, max_steps=6,
        position=0.9, stride=16, out=str(tmp_path / "p.png"),
    )  # fmt: skip
    cfg.check()
    assert reward_saliency_figure(cfg).is_file()


def test_policy_frames_are_the_same_for_the_same_seed():
    """A shipped expert samples its actions: the seed fixes them, as it fixes the levels."""
    from trex.plotting.saliency import _policy_frames

    expert = Path(__file__).resolve().parents[1] / "pretrained/starpilot"

    def frames(seed: int) -> np.ndarray:
        cfg = PlotRewardSaliencyConfig(
            load_path=str(expert / "checkpoint_0000081920.safetensors"), num_frames=3,
            max_steps=40, position=0.9, seed=seed,
        )  # fmt: skip
        return _policy_frames(cfg, "starpilot")

    first = frames(0)
    torch.manual_seed(12345)  # whatever ran before in this process
    assert np.array_equal(frames(0), first)
    assert not np.array_equal(frames(1), first)
