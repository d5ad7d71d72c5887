"""The comparison figure's inputs: progress curves and test_policy's held-out scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trex.common.errors import UserError
from trex.plotting.policy_returns import (
    plot_policy_returns,
    read_curve,
    read_held_out_scores,
)


def _test_rows(tmp_path):
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    run_a.mkdir()
    run_b.mkdir()
    row = dict(
        time="t",
        reward="true",
        distribution_mode="easy",
        start_level=0,
        num_levels=0,
        deterministic=False,
        seed=0,
        return_min=0,
        return_max=5,
        length_mean=50,
        length_std=5,
        truncated=0,
    )
    rows = [
        # an older evaluation of a's checkpoint, superseded by the next row
        dict(
            row,
            load_path=str(run_a / "checkpoint_0000000200.zip"),
            timesteps=200,
            level_set="test",
            env_name="starpilot",
            episodes=10,
            return_mean=9.0,
            return_std=1.0,
        ),
        dict(
            row,
            load_path=str(run_a / "checkpoint_0000000200.zip"),
            timesteps=200,
            level_set="test",
            env_name="starpilot",
            episodes=101,
            return_mean=2.0,
            return_std=3.0,
        ),
        dict(
            row,
            load_path=str(run_a / "checkpoint_0000000100.zip"),
            timesteps=100,
            level_set="test",
            env_name="starpilot",
            episodes=5,
            return_mean=1.0,
            return_std=2.0,
        ),
        dict(
            row,
            load_path=str(run_a / "checkpoint_0000000200.zip"),
            timesteps=200,
            level_set="train",
            env_name="starpilot",
            episodes=101,
            return_mean=7.0,
            return_std=3.0,
        ),
        dict(
            row,
            load_path="random",
            timesteps="",
            level_set="test",
            env_name="coinrun",
            episodes=50,
            return_mean=4.0,
            return_std=1.0,
        ),
        dict(
            row,
            load_path="random",
            timesteps="",
            level_set="test",
            env_name="starpilot",
            episodes=50,
            return_mean=0.5,
            return_std=1.0,
        ),
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
        run_a / "progress.csv", index=False
    )
    curve = read_curve(run_a, "a")
    held_out, random_score = read_held_out_scores(csv, [run_a])
    png = plot_policy_returns(
        [curve],
        tmp_path / "fig.png",
        np.array([0.0, 1.0, 4.0]),
        held_out=held_out,
        random_score=random_score,
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(UserError, match="no test_policy CSV"):
        read_held_out_scores(tmp_path / "missing.csv", [run_a])
    with pytest.raises(UserError, match="not a test_policy CSV"):
        read_held_out_scores(run_a / "progress.csv", [run_a])


def _progress(run_dir, steps, returns):
    run_dir.mkdir(exist_ok=True)
    pd.DataFrame({"timesteps": steps, "true_return_mean": returns}).to_csv(
        run_dir / "progress.csv", index=False
    )
    return run_dir


def test_runs_sharing_a_label_are_combined_on_their_common_steps(tmp_path):
    from trex.plotting.policy_returns import group_curves

    a = read_curve(_progress(tmp_path / "a", [100, 200, 300], [1.0, 2.0, 3.0]), "true reward")
    b = read_curve(_progress(tmp_path / "b", [100, 200], [3.0, 4.0]), "true reward")
    c = read_curve(_progress(tmp_path / "c", [100, 200, 300], [0.0, 0.0, 0.0]), "constant")
    groups = group_curves([a, c, b])
    assert [g.label for g in groups] == ["true reward", "constant"]
    true_group = groups[0]
    assert true_group.runs == 2 and list(true_group.timesteps) == [100, 200]
    assert list(true_group.mean) == [2.0, 3.0]
    assert list(true_group.low) == [1.0, 2.0] and list(true_group.high) == [3.0, 4.0]
    assert groups[1].runs == 1 and list(groups[1].mean) == [0.0, 0.0, 0.0]
    d = read_curve(_progress(tmp_path / "d", [50], [1.0]), "true reward")
    with pytest.raises(UserError, match="share no logged step"):
        group_curves([a, d])


def test_reference_curves_in_baselines_format_are_averaged_and_drawn(tmp_path):
    from trex.plot_policy_returns import main

    refs = []
    for i, offset in enumerate((0.0, 2.0)):
        ref = tmp_path / f"progress-coinrun-train-{i}.csv"
        pd.DataFrame(
            {
                "eplenmean": [100.0] * 3,
                "eprewmean": [1.0 + offset, 2.0 + offset, 3.0 + offset],
                "misc/total_timesteps": [100.0, 200.0, 5000.0],
            }
        ).to_csv(ref, index=False)
        refs.append(str(ref))
    from trex.plotting.policy_returns import read_reference_curves

    group = read_reference_curves(refs, "published")
    assert group.runs == 2 and list(group.mean) == [2.0, 3.0, 4.0]
    run = _progress(tmp_path / "run", [100, 200], [0.5, 1.0])
    out = tmp_path / "fig.png"
    assert main(["--runs", str(run), "--reference_train", *refs, "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a train_policy progress.csv is not a baselines progress CSV: one-line error, no figure
    bad_out = tmp_path / "bad.png"
    assert (
        main(
            [
                "--runs",
                str(run),
                "--reference_test",
                str(run / "progress.csv"),
                "--out",
                str(bad_out),
            ]
        )
        == 2
    )
    assert not bad_out.exists()


def test_learned_returns_are_read_and_drawn_on_their_own_axis(tmp_path):
    """--learned: a run on a learned reward carries its learned return; a true-reward run
    has none; the figure gets a second y axis only when asked."""
    import matplotlib.image as mpimg

    from trex.plotting.policy_returns import PlotPolicyReturnsConfig, policy_returns_figure

    hacked, honest = tmp_path / "hacked", tmp_path / "honest"
    for run, learned in ((hacked, [1.0, 5.0, 9.0]), (honest, [np.nan] * 3)):
        run.mkdir()
        pd.DataFrame(
            {"timesteps": [10, 20, 30], "true_return_mean": [3.0, 2.0, 1.0],
             "learned_return_mean": learned}
        ).to_csv(run / "progress.csv", index=False)  # fmt: skip
    curve = read_curve(hacked, "learned")
    assert curve.learned_return.tolist() == [1.0, 5.0, 9.0]
    assert read_curve(honest, "true").learned_return is None
    outs = {}
    for flag in (False, True):
        cfg = PlotPolicyReturnsConfig(
            runs=[str(hacked), str(honest)], out=str(tmp_path / f"f{flag}.png"), learned=flag
        )
        outs[flag] = mpimg.imread(policy_returns_figure(cfg))
    assert outs[True].shape != outs[False].shape  # the right-hand axis widens the figure


def test_a_preference_runs_unfitted_first_update_is_not_drawn(tmp_path):
    """train_preferences from a fresh network: update 1's learned return is the unfitted
    network's, so it is left out; from --init_reward (a fitted T-REX model) it is kept."""
    import json

    rows = {"timesteps": [10, 20], "updates": [1, 2], "true_return_mean": [1.0, 2.0],
            "learned_return_mean": [470.0, 3.0]}  # fmt: skip
    kept = {}
    for name, init in (("fresh", None), ("refined", "450_8576")):
        run = tmp_path / name
        run.mkdir()
        pd.DataFrame(rows).to_csv(run / "progress.csv", index=False)
        args = {"num_queries": 1000, "selection": "uniform", "init_reward": init}
        (run / "config.json").write_text(json.dumps({"args": args}))
        kept[name] = read_curve(run).learned_return.tolist()
    assert np.isnan(kept["fresh"][0]) and kept["fresh"][1] == 3.0
    assert kept["refined"] == [470.0, 3.0]


def test_preference_runs_with_other_reward_settings_get_other_labels(tmp_path):
    """A run's label names every reward setting its checkpoints' reward tag names, so runs
    of different settings are never averaged into one curve."""
    import json

    from trex.plotting.policy_returns import run_label

    def label(**extra):
        run = tmp_path / str(len(list(tmp_path.iterdir())))
        run.mkdir()
        args = {"num_queries": 1000, "selection": "uniform", "init_reward": None, **extra}
        (run / "config.json").write_text(json.dumps({"args": args}))
        return run_label(run)

    assert label() == "preferences (1000 queries, uniform)"
    assert label(end_penalty=0.0, continuous=False) == "preferences (1000 queries, uniform)"
    assert (
        label(ties="equal", center_reward=True, end_penalty=10.0, continuous=True)
        == "preferences (1000 queries, uniform, ties equal, centered, end penalty 10, continuous)"
    )
