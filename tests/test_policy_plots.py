"""The comparison figure's inputs: progress curves and test_policy's held-out scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trex.core.policy_plots import plot_policy_returns, read_curve, read_held_out_scores
from trex.core.runs import UserError


def _test_rows(tmp_path):
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    run_a.mkdir()
    run_b.mkdir()
    row = dict(time="t", reward="true", distribution_mode="easy", start_level=0, num_levels=0,
               deterministic=False, seed=0, return_min=0, return_max=5, length_mean=50,
               length_std=5, truncated=0)
    rows = [
        # an older evaluation of a's checkpoint, superseded by the next row
        dict(row, load_path=str(run_a / "checkpoint_0000000200.zip"), timesteps=200, level_set="test",
             env_name="starpilot", episodes=10, return_mean=9.0, return_std=1.0),
        dict(row, load_path=str(run_a / "checkpoint_0000000200.zip"), timesteps=200, level_set="test",
             env_name="starpilot", episodes=101, return_mean=2.0, return_std=3.0),
        dict(row, load_path=str(run_a / "checkpoint_0000000100.zip"), timesteps=100, level_set="test",
             env_name="starpilot", episodes=5, return_mean=1.0, return_std=2.0),
        dict(row, load_path=str(run_a / "checkpoint_0000000200.zip"), timesteps=200, level_set="train",
             env_name="starpilot", episodes=101, return_mean=7.0, return_std=3.0),
        dict(row, load_path="random", timesteps="", level_set="test", env_name="coinrun",
             episodes=50, return_mean=4.0, return_std=1.0),
        dict(row, load_path="random", timesteps="", level_set="test", env_name="starpilot",
             episodes=50, return_mean=0.5, return_std=1.0),
    ]
    csv = tmp_path / "test_policy.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv, run_a, run_b


def test_held_out_scores_latest_row_per_checkpoint_sorted_with_standard_error(tmp_path):
    csv, run_a, run_b = _test_rows(tmp_path)
    (per_run_a, per_run_b), random_score = read_held_out_scores(csv, [run_a, run_b])
    assert [s.timesteps for s in per_run_a] == [100, 200]
    assert per_run_a[1].mean == 2.0 and per_run_a[1].episodes == 101
    assert per_run_a[1].sem == pytest.approx(3.0 / np.sqrt(100))
    assert per_run_b == []
    assert random_score is not None and random_score.mean == 0.5  # the runs' game, not coinrun
    (train_a, _), _ = read_held_out_scores(csv, [run_a, run_b], level_set="train")
    assert [s.mean for s in train_a] == [7.0]
    _, random_coinrun = read_held_out_scores(csv, [run_a], env_name="coinrun")
    assert random_coinrun.mean == 4.0


def test_held_out_scores_drawn_and_bad_csvs_refused(tmp_path):
    csv, run_a, _ = _test_rows(tmp_path)
    pd.DataFrame({"timesteps": [100, 200], "true_return_mean": [1.0, 2.0]}).to_csv(
        run_a / "progress.csv", index=False)
    curve = read_curve(run_a, "a")
    held_out, random_score = read_held_out_scores(csv, [run_a])
    png = plot_policy_returns([curve], tmp_path / "fig.png", np.array([0.0, 1.0, 4.0]),
                              held_out=held_out, random_score=random_score)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(UserError, match="no test_policy CSV"):
        read_held_out_scores(tmp_path / "missing.csv", [run_a])
    with pytest.raises(UserError, match="not a test_policy CSV"):
        read_held_out_scores(run_a / "progress.csv", [run_a])
