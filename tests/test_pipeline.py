"""Toy end-to-end run of the whole loop: tiny expert -> demos -> tiny reward model -> PPO on
the learned reward (and on a constant reward) -> test_policy -> comparison figure; plus the
refusal of a reward model of another game or mode."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from conftest import TINY_PPO_FLAGS

from trex.rl.checkpoints import read_checkpoint_meta, read_manifest


@pytest.fixture(scope="module")
def tiny_loop(tmp_path_factory):
    from trex.gen_demos import main as gen_demos
    from trex.train_reward import main as train_reward

    root = tmp_path_factory.mktemp("loop")
    demos = root / "demos"
    # random starpilot play scores a few points in under 100 steps: returns that can be ranked
    for extra in ([], ["--test_set"]):
        assert (
            gen_demos(
                [
                    "--env_name",
                    "starpilot",
                    "--policy",
                    "random",
                    "--num_dems",
                    "12",
                    "--max_ep_len",
                    "100",
                    "--num_envs",
                    "3",
                    "--log_dir",
                    str(demos),
                    "--seed",
                    "3",
                    "--progress",
                    "false",
                    *extra,
                ]
            )
            == 0
        )
    rms = root / "reward_models"
    status = train_reward(
        [
            "--env_name",
            "starpilot",
            "--demo_csv",
            str(demos / "demo_infos.csv"),
            "--num_dems",
            "10",
            "--num_snippets",
            "40",
            "--min_snippet_length",
            "4",
            "--max_snippet_length",
            "8",
            "--epoch_size",
            "20",
            "--max_num_epochs",
            "2",
            "--num_val_snippets",
            "10",
            "--num_test_snippets",
            "10",
            "--seed",
            "1234567",
            "--save_dir",
            str(rms),
            "--log_dir",
            str(root / "LOGS"),
        ]
    )
    return {"root": root, "demos": demos, "rms": rms, "status": status}


def test_ppo_on_learned_and_constant_reward_then_test_and_plot(tiny_expert, tiny_loop, tmp_path):
    from trex.plot_policy_returns import main as plot_returns
    from trex.test_policy import main as test_policy
    from trex.train_policy import main as train_policy

    assert tiny_loop["status"] == 0
    rm = pd.read_csv(tiny_loop["rms"] / "rm_infos.csv")
    rm_id = str(rm["rm_id"].iloc[0])
    log_dir = tmp_path / "runs"
    common = [
        "--env_name",
        "starpilot",
        *TINY_PPO_FLAGS,
        "--timesteps_per_proc",
        "256",
        "--log_dir",
        str(log_dir),
    ]
    assert (
        train_policy(
            [
                *common,
                "--rm_id",
                rm_id,
                "--reward_csv",
                str(tiny_loop["rms"] / "rm_infos.csv"),
                "--use_sigmoid",
            ]
        )
        == 0
    )
    assert train_policy([*common, "--constant_reward", "1"]) == 0
    learned_dir = log_dir / "starpilot" / "easy" / f"rm_{rm_id}"
    const_dir = log_dir / "starpilot" / "easy" / "constant_1"
    for run in (learned_dir, const_dir):
        progress = pd.read_csv(run / "progress.csv")
        assert {"true_return_mean", "learned_return_mean"} <= set(progress.columns)
        ckpt = run / read_manifest(run)["file"].iloc[-1]
        meta = read_checkpoint_meta(ckpt)
        assert meta["reward"] in (f"learned:{rm_id}", "constant:1")
        out = tmp_path / "test.csv"
        assert (
            test_policy(
                [
                    "--load_path",
                    str(ckpt),
                    "--num_runs",
                    "2",
                    "--num_envs",
                    "2",
                    "--max_steps",
                    "10",
                    "--out_csv",
                    str(out),
                ]
            )
            == 0
        )
    df = pd.read_csv(tmp_path / "test.csv")
    assert set(df["reward"]) == {f"learned:{rm_id}", "constant:1"}
    cfg = json.loads((learned_dir / "config.json").read_text())
    assert cfg["args"]["rm_id"] == rm_id and cfg["args"]["use_sigmoid"] is True
    png = tmp_path / "returns.png"
    # 128 steps per env: random-ish starpilot play ends episodes in under 100 steps
    assert (
        plot_returns(
            [
                "--runs",
                str(learned_dir),
                str(const_dir),
                str(tiny_expert),
                "--demo_csv",
                str(tiny_loop["demos"] / "demo_infos.csv"),
                "--out",
                str(png),
            ]
        )
        == 0
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # with each run's held-out score from test_policy's CSV
    png2 = tmp_path / "returns_held_out.png"
    assert (
        plot_returns(
            ["--runs", str(learned_dir), str(const_dir), "--test_csv", str(out), "--out", str(png2)]
        )
        == 0
    )
    assert png2.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from trex.plotting.policy_returns import read_held_out_scores

    held_out, _ = read_held_out_scores(out, [learned_dir, const_dir])
    assert [len(scores) for scores in held_out] == [1, 1]  # the unseen-level row of each run
    bad = tmp_path / "bad.png"
    assert (
        plot_returns(
            [
                "--runs",
                str(learned_dir),
                "--test_csv",
                str(learned_dir / "progress.csv"),
                "--out",
                str(bad),
            ]
        )
        == 2
    )
    assert not bad.exists()
    # a run with no finished episode has no curve to draw
    empty = tmp_path / "empty_run"
    shutil.copytree(tiny_expert, empty)
    progress = pd.read_csv(empty / "progress.csv")
    progress["true_return_mean"] = float("nan")
    progress.to_csv(empty / "progress.csv", index=False)
    assert plot_returns(["--runs", str(empty), "--out", str(tmp_path / "none.png")]) == 2
    assert not (tmp_path / "none.png").exists()


def test_reward_model_of_another_game_or_mode_is_refused(tiny_loop, tmp_path, capsys):
    from trex.train_policy import main as train_policy

    assert tiny_loop["status"] == 0
    model = next((tiny_loop["rms"]).rglob("*.safetensors"))
    base = [*TINY_PPO_FLAGS, "--timesteps_per_proc", "32", "--log_dir", str(tmp_path / "r")]
    for argv in (
        ["--env_name", "coinrun"],
        ["--env_name", "starpilot", "--distribution_mode", "hard"],
    ):
        assert train_policy([*argv, *base, "--reward_model", str(model)]) == 2
        assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert (
        train_policy(
            [
                "--env_name",
                "coinrun",
                *base,
                "--reward_model",
                str(model),
                "--allow_reward_mismatch",
            ]
        )
        == 0
    )


def test_bad_reward_choices(tmp_path, capsys):
    from trex.train_policy import main as train_policy

    cases = [
        (["--rm_id", "123_4567", "--reward_csv", str(tmp_path / "none.csv")], ""),
        (["--reward_model", str(tmp_path / "missing.safetensors")], ""),
        (["--constant_reward", "1", "--rm_id", "1"], "choose one"),
        (["--use_sigmoid"], "needs a learned reward"),
    ]
    for argv, expected in cases:
        assert train_policy(["--env_name", "coinrun", "--log_dir", str(tmp_path / "x"), *argv]) == 2
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert line.startswith("error:") and expected in line, line
    corrupt = tmp_path / "bad.safetensors"
    corrupt.write_bytes(b"\x00" * 64)
    assert (
        train_policy(
            [
                "--env_name",
                "coinrun",
                "--log_dir",
                str(tmp_path / "x"),
                "--reward_model",
                str(corrupt),
            ]
        )
        == 2
    )
    assert not (tmp_path / "x").exists()
