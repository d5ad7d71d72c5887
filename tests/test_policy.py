"""PPO training, checkpoints, manifest, resume, loading, testing and video on toy sizes."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_PPO_FLAGS

from trex.common.envs import make_procgen_env
from trex.common.errors import UserError
from trex.rl.checkpoints import load_policy, read_checkpoint_meta, read_manifest
from trex.rl.policy import ImpalaCNN, act, action_logits


def test_training_writes_checkpoints_manifest_and_logs(tiny_expert):
    manifest = read_manifest(tiny_expert)
    assert list(manifest["timesteps"]) == [32, 64, 96]
    assert all((tiny_expert / f).is_file() for f in manifest["file"])
    progress = pd.read_csv(tiny_expert / "progress.csv")
    assert list(progress["timesteps"]) == [32, 64, 96]
    cfg = json.loads((tiny_expert / "config.json").read_text())
    assert cfg["args"]["env_name"] == "coinrun" and cfg["args"]["seed"] == 1
    assert "torch" in cfg["versions"]
    meta = read_checkpoint_meta(tiny_expert / manifest["file"].iloc[-1])
    assert meta["env_name"] == "coinrun" and meta["timesteps"] == 96
    assert not list(tiny_expert.glob(".*tmp*")), "temporary files left behind"


def test_checkpoint_has_no_need_for_unpickling(tiny_expert):
    path = tiny_expert / read_manifest(tiny_expert)["file"].iloc[-1]
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
    assert {"policy.pth", "policy.optimizer.pth", "trex_checkpoint.json"} <= names
    policy, meta = load_policy(path, device="cpu")
    obs = make_procgen_env("coinrun", 3, seed=0).reset()
    actions = act(policy, obs, deterministic=True)
    assert actions.shape == (3,) and actions.dtype == np.int64
    assert ((actions >= 0) & (actions < 15)).all()
    np.testing.assert_array_equal(actions, act(policy, obs, deterministic=True))


def test_resume_continues_to_the_total(tiny_expert, tmp_path):
    import shutil

    from trex.train_policy import main

    run = tmp_path / "coinrun" / "easy"
    shutil.copytree(tiny_expert, run)
    assert (
        main(
            [
                "--env_name",
                "coinrun",
                *TINY_PPO_FLAGS,
                "--timesteps_per_proc",
                "160",
                "--log_dir",
                str(tmp_path),
                "--load_path",
                str(run),
            ]
        )
        == 0
    )
    manifest = read_manifest(run)
    assert list(manifest["timesteps"]) == [32, 64, 96, 128, 160]
    assert (run / "config_resume.json").is_file()
    meta = read_checkpoint_meta(run / manifest["file"].iloc[-1])
    assert meta["timesteps"] == 160


def test_fast_path_matches_fp32_logits(tiny_expert):
    path = tiny_expert / read_manifest(tiny_expert)["file"].iloc[-1]
    fast, _ = load_policy(path, device="cpu", precision="bf16")
    plain, _ = load_policy(path, device="cpu", precision="fp32")
    assert fast.features_extractor.bf16 and fast.features_extractor.channels_last
    assert not plain.features_extractor.bf16
    obs = make_procgen_env("coinrun", 8, seed=2).reset()
    lf, lp = action_logits(fast, obs), action_logits(plain, obs)
    assert lf.dtype == torch.float32
    assert torch.allclose(lf, lp, atol=0.05), (lf - lp).abs().max()
    probs_f, probs_p = lf.softmax(-1), lp.softmax(-1)
    assert (probs_f - probs_p).abs().max() < 0.02


def test_acting_sees_the_frames_ppo_trains_on(tiny_expert):
    """act/action_logits feed the uint8 frames as PPO's update does (SB3 scales by 1/255 once);
    a second scaling would leave the policy nearly blind at test time."""
    path = tiny_expert / read_manifest(tiny_expert)["file"].iloc[-1]
    policy, _ = load_policy(path, device="cpu", precision="fp32")
    torch.nn.init.normal_(
        policy.action_net.weight, std=1.0
    )  # make logits depend strongly on the input
    env = make_procgen_env("coinrun", 6, seed=4)
    obs = env.reset()
    for _ in range(5):
        obs, *_ = env.step(np.arange(6) % 15)
    actions = torch.arange(6) % 15
    with (
        torch.no_grad()
    ):  # PPO.train: evaluate_actions on the rollout buffer's float32 copy of the frames
        _, ppo_logp, _ = policy.evaluate_actions(torch.as_tensor(obs).float(), actions)
    logits = action_logits(policy, obs)
    assert torch.allclose(logits.log_softmax(-1)[torch.arange(6), actions], ppo_logp, atol=1e-4)
    np.testing.assert_array_equal(act(policy, obs, deterministic=True), logits.argmax(-1).numpy())


def test_impala_shapes():
    from gymnasium import spaces

    fx = ImpalaCNN(spaces.Box(0, 255, (3, 64, 64), np.uint8))
    out = fx(torch.rand(5, 3, 64, 64))
    assert out.shape == (5, 256) and out.dtype == torch.float32
    n_params = sum(p.numel() for p in fx.parameters())
    assert 500_000 < n_params < 700_000  # IMPALA 16-32-32 + 2048x256 dense


def test_initialisation_is_train_procgens():
    """Glorot-uniform CNN with zero biases, orthogonal heads with gains 0.01 (policy) and 1
    (value), as baselines' build_impala_cnn + fc; SB3's ortho_init (sqrt(2) gain through the
    residual blocks) blows the initial features up and stays available as init='sb3'."""
    from gymnasium import spaces

    from trex.rl.policy import ImpalaPolicy

    def build(init):
        torch.manual_seed(0)
        return ImpalaPolicy(
            spaces.Box(0, 255, (3, 64, 64), np.uint8),
            spaces.Discrete(15),
            lambda _: 5e-4,
            channels_last=False,
            bf16=False,
            init=init,
        )

    policy = build("baselines")
    for m in policy.features_extractor.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            fan_in = m.weight[0].numel()
            fan_out = m.weight.shape[0] * m.weight[0, 0].numel()
            assert m.weight.abs().max() <= (6 / (fan_in + fan_out)) ** 0.5 + 1e-6
            assert torch.count_nonzero(m.bias) == 0
    for head, gain in ((policy.action_net, 0.01), (policy.value_net, 1.0)):
        w = head.weight.detach()
        assert torch.allclose(w @ w.T, gain**2 * torch.eye(w.shape[0]), atol=1e-6)
        assert torch.count_nonzero(head.bias) == 0
    frames = torch.rand(16, 3, 64, 64) * 255
    with torch.no_grad():
        rms = {
            init: build(init).extract_features(frames).pow(2).mean().sqrt().item()
            for init in ("baselines", "sb3")
        }
    assert rms["sb3"] > 5 * rms["baselines"]
    with pytest.raises(ValueError):
        build("other")


def test_adam_steps_equal_tensorflows():
    """TF1's AdamOptimizer (baselines' ppo2) adds epsilon before the bias correction; TFAdam's
    steps equal that update exactly, also for gradients far below epsilon (where PyTorch's
    Adam steps ~30x further at the start)."""
    import math

    from trex.rl.policy import TFAdam

    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(5))
    expected = w.detach().clone()
    opt = TFAdam([w], lr=1e-2, eps=1e-5)
    m, v = torch.zeros(5), torch.zeros(5)
    for t in range(1, 8):
        g = torch.randn(5) * 1e-4
        w.grad = g.clone()
        opt.step()
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        lr_t = 1e-2 * math.sqrt(1 - 0.999**t) / (1 - 0.9**t)
        expected -= lr_t * m / (v.sqrt() + 1e-5)
        assert torch.allclose(w.detach(), expected, atol=1e-7, rtol=0)
    # the optimizer state round-trips (resume) and keeps TF's epsilon
    again = TFAdam([w], lr=1e-2, eps=1e-5)
    again.load_state_dict(opt.state_dict())
    assert again.param_groups[0]["eps_hat"] == 1e-5


def test_value_coefficient_means_train_procgens():
    """--vf_coef is ppo2's coefficient (of half the squared error), used by PPO2's own loss."""
    from trex.rl.policy import build_ppo
    from trex.rl.ppo2 import PPO2

    env = make_procgen_env("coinrun", num_envs=2)
    model = build_ppo(
        env,
        nsteps=8,
        nminibatches=2,
        ppo_epochs=1,
        learning_rate=5e-4,
        gamma=0.999,
        lam=0.95,
        clip_range=0.2,
        ent_coef=0.01,
        vf_coef=0.5,
        device=torch.device("cpu"),
    )
    assert isinstance(model, PPO2) and model.vf_coef == 0.5
    assert type(model.policy.optimizer).__name__ == "TFAdam"
    model.learn(16)  # two updates through PPO2.train, logged as ppo2 logs them
    logged = model.logger.name_to_value
    assert logged["train/approx_kl"] >= 0 and 0 <= logged["train/clip_fraction"] <= 1
    assert logged["train/value_loss"] > 0


def test_ppo2_value_loss_is_max_of_clipped_and_unclipped():
    """baselines' ppo2: vf = 0.5 * mean(max((v-R)^2, (v_clip-R)^2)). A value pushed past the
    clip range away from its return keeps its gradient (SB3's clipped-only loss drops it);
    one pushed past it towards the return stops; inside the range it is plain (v-R)."""
    from trex.rl.ppo2 import ppo2_loss

    old_v = torch.zeros(3)
    returns = torch.tensor([1.0, 1.0, 1.0])
    values = torch.tensor([-0.5, 0.5, 0.1], requires_grad=True)  # away / towards / inside
    zeros = torch.zeros(3)
    loss, stats = ppo2_loss(
        zeros,
        zeros,
        zeros,
        values,
        old_v,
        returns,
        zeros,
        clip=0.2,
        clip_vf=0.2,
        ent_coef=0.0,
        vf_coef=1.0,
    )
    loss.backward()
    # per-sample d/dv of 0.5 * mean(err) is (v - R) / 3 where the unclipped error is the max
    expected = torch.tensor([(-0.5 - 1.0) / 3, 0.0, (0.1 - 1.0) / 3])
    assert torch.allclose(values.grad, expected)
    assert stats["vf"] == pytest.approx(0.5 * (1.5**2 + 0.8**2 + 0.9**2) / 3)
    # policy part: ratio exp(0.5) > 1.2 with positive advantage is clipped (no gradient)
    lp = torch.tensor([0.5, 0.0, 0.0], requires_grad=True)
    loss, stats = ppo2_loss(
        lp,
        zeros,
        torch.ones(3),
        zeros,
        old_v,
        zeros,
        zeros,
        clip=0.2,
        clip_vf=None,
        ent_coef=0.0,
        vf_coef=0.0,
    )
    loss.backward()
    assert lp.grad[0] == 0 and lp.grad[1] == pytest.approx(-1 / 3)
    assert stats["clipfrac"] == pytest.approx(1 / 3)
    assert stats["kl"] == pytest.approx(0.5 * 0.25 / 3)


def test_test_policy_reports_train_and_unseen_levels(tiny_expert, tmp_path):
    from trex.test_policy import main

    out = tmp_path / "results.csv"
    path = tiny_expert / read_manifest(tiny_expert)["file"].iloc[-1]
    assert (
        main(
            [
                "--load_path",
                str(path),
                "--num_runs",
                "2",
                "--num_envs",
                "2",
                "--max_steps",
                "20",
                "--out_csv",
                str(out),
            ]
        )
        == 0
    )
    df = pd.read_csv(out)
    assert list(df["level_set"]) == ["train", "test"]
    assert (df["episodes"] == 2).all()
    assert (df["length_mean"] <= 20).all()
    assert df.loc[1, "start_level"] == 1_000_000_000
    # random baseline through the same path
    assert (
        main(
            [
                "--load_path",
                "random",
                "--env_name",
                "coinrun",
                "--num_runs",
                "2",
                "--num_envs",
                "2",
                "--max_steps",
                "10",
                "--level_sets",
                "test",
                "--out_csv",
                str(out),
            ]
        )
        == 0
    )
    assert len(pd.read_csv(out)) == 3


def test_test_policy_same_seed_same_numbers(tiny_expert, tmp_path):
    """The policy samples actions with torch's generator: --seed fixes it as well as the levels."""
    from trex.test_policy import main

    path = tiny_expert / read_manifest(tiny_expert)["file"].iloc[-1]
    outs = [tmp_path / "a.csv", tmp_path / "b.csv"]  # (into one CSV the repeat would be "done")
    for out in outs:
        assert (
            main(
                [
                    "--load_path",
                    str(path),
                    "--num_runs",
                    "6",
                    "--num_envs",
                    "6",
                    "--max_steps",
                    "150",
                    "--level_sets",
                    "train",
                    "--seed",
                    "3",
                    "--out_csv",
                    str(out),
                ]
            )
            == 0
        )
    df = pd.concat([pd.read_csv(o) for o in outs], ignore_index=True)
    stats = ["return_mean", "return_std", "length_mean", "length_std", "truncated"]
    pd.testing.assert_series_equal(df.loc[0, stats], df.loc[1, stats], check_names=False)
    # episode by episode, not only on average
    episodes = [pd.read_csv(o.with_name(o.stem + "_episodes.csv")) for o in outs]
    cols = ["level_seed", "return", "length"]
    assert episodes[0][cols].equals(episodes[1][cols])


def test_test_policy_writes_every_episode(tiny_expert, tmp_path):
    """One row per episode beside the summary, whose returns average to the summary's mean."""
    from trex.rl.testing import episodes_csv_path
    from trex.test_policy import main

    out = tmp_path / "results.csv"
    path = tiny_expert / read_manifest(tiny_expert)["file"].iloc[-1]
    assert (
        main(
            [
                "--load_path",
                str(path),
                "--num_runs",
                "3",
                "--num_envs",
                "3",
                "--max_steps",
                "15",
                "--seed",
                "5",
                "--out_csv",
                str(out),
            ]
        )
        == 0
    )
    assert episodes_csv_path(out) == tmp_path / "results_episodes.csv"
    summary, episodes = pd.read_csv(out), pd.read_csv(tmp_path / "results_episodes.csv")
    assert len(episodes) == 6
    assert {"load_path", "level_set", "level_seed", "return", "length", "seed"} <= set(
        episodes.columns
    )
    assert (episodes["load_path"] == str(path.resolve())).all() and (episodes["seed"] == 5).all()
    for row in summary.itertuples():
        eps = episodes[(episodes["level_set"] == row.level_set) & (episodes["time"] == row.time)]
        assert len(eps) == row.episodes == 3
        assert eps["return"].mean() == pytest.approx(row.return_mean)
        assert eps["length"].mean() == pytest.approx(row.length_mean)
    test_levels = episodes.loc[episodes["level_set"] == "test", "level_seed"]
    assert (test_levels >= 1_000_000_000).all() and (test_levels < 2_000_000_000).all()


def test_train_level_set_is_the_policys_own_pool(tiny_expert, tmp_path):
    from trex.rl.checkpoints import save_policy_weights
    from trex.test_policy import main

    src = tiny_expert / read_manifest(tiny_expert)["file"].iloc[-1]
    policy, meta = load_policy(src, device="cpu")
    pooled = save_policy_weights(
        policy, tmp_path / "pool.safetensors", {**meta, "start_level": 10, "num_levels": 3}
    )
    out = tmp_path / "results.csv"
    assert (
        main(
            [
                "--load_path",
                str(pooled),
                "--num_runs",
                "4",
                "--num_envs",
                "4",
                "--max_steps",
                "5",
                "--out_csv",
                str(out),
            ]
        )
        == 0
    )
    summary = pd.read_csv(out).set_index("level_set")
    assert (summary.loc["train", "start_level"], summary.loc["train", "num_levels"]) == (10, 3)
    assert (summary.loc["test", "start_level"], summary.loc["test", "num_levels"]) == (10**9, 10**9)
    episodes = pd.read_csv(tmp_path / "results_episodes.csv")
    assert set(episodes.loc[episodes["level_set"] == "train", "level_seed"]) <= {10, 11, 12}


def test_episodes_stay_in_the_pool_across_resets():
    from trex.rl.evaluation import random_act_fn, run_episodes

    stats = run_episodes(
        random_act_fn(0),
        "coinrun",
        start_level=10,
        num_levels=3,
        num_episodes=8,
        num_envs=2,
        max_steps=5,
        progress=False,
    )
    assert len(stats.level_seeds) == 8 and set(stats.level_seeds) <= {10, 11, 12}
    records = stats.records()
    assert [r["level_seed"] for r in records] == list(stats.level_seeds)
    assert sum(r["return"] for r in records) == pytest.approx(stats.returns.sum())


def test_level_ranges_of_old_and_new_checkpoints():
    import argparse

    from trex.common.envs import TEST_LEVELS, TRAIN_LEVELS
    from trex.rl.testing import level_ranges

    flags = argparse.Namespace(start_level=None, num_levels=None)
    assert (
        level_ranges({"start_level": 0, "num_levels": 0}, flags)["train"] == TRAIN_LEVELS
    )  # old checkpoints
    assert level_ranges({}, flags) == {"train": TRAIN_LEVELS, "test": TEST_LEVELS}  # random policy
    assert level_ranges({"start_level": 10, "num_levels": 3}, flags)["train"] == (10, 3)
    assert level_ranges(
        {"start_level": 10, "num_levels": 3}, argparse.Namespace(start_level=None, num_levels=200)
    )["train"] == (10, 200)
    with pytest.raises(UserError, match="inside the training range"):
        level_ranges({"start_level": 999_999_999, "num_levels": 5}, flags)


def test_episode_quotas_sum():
    from trex.rl.evaluation import episode_quotas

    q = episode_quotas(10, 4)
    assert q.sum() == 10 and q.max() - q.min() <= 1


def test_visualize_policy_writes_watchable_mp4(tiny_expert, tmp_path):
    from trex.common.video import read_mp4
    from trex.visualize_policy import main

    path = tiny_expert / read_manifest(tiny_expert)["file"].iloc[-1]
    out = tmp_path / "v.mp4"
    assert (
        main(
            [
                "--load_path",
                str(path),
                "--video_length",
                "6",
                "--num_screens",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    frames = read_mp4(out)
    assert frames.shape[0] == 6 and frames.shape[1] >= 256 and frames.shape[3] == 3


# ----------------------------------------------------------------------------- bad input


def _run(stage, argv, capsys):
    status = stage(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return status, err[-1] if err else ""


def test_bad_inputs_give_one_clear_line(tiny_expert, tmp_path, capsys):
    from trex.test_policy import main as test_main
    from trex.train_policy import main as train_main
    from trex.visualize_policy import main as vis_main

    ckpt = tiny_expert / read_manifest(tiny_expert)["file"].iloc[-1]
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(b"not a zip at all")
    cases = [
        (train_main, ["--env_name", "pong", "--log_dir", str(tmp_path / "a")], "unknown env_name"),
        (
            train_main,
            ["--distribution_mode", "medium", "--log_dir", str(tmp_path / "a")],
            "distribution_mode",
        ),
        (
            train_main,
            ["--env_name", "starpilot", "--load_path", str(ckpt), "--log_dir", str(tmp_path / "a")],
            "checkpoint of 'coinrun'",
        ),
        (
            train_main,
            ["--load_path", str(tmp_path / "missing.zip"), "--log_dir", str(tmp_path / "a")],
            "not found",
        ),
        (test_main, ["--load_path", str(corrupt)], "not a procgen-trex policy checkpoint"),
        (test_main, ["--load_path", str(tmp_path / "nope.zip")], "not found"),
        (test_main, ["--load_path", str(ckpt), "--env_name", "bigfish"], "checkpoint of 'coinrun'"),
        (vis_main, ["--load_path", str(ckpt), "--env_name", "maze"], "checkpoint of 'coinrun'"),
        (test_main, ["--load_path", "random"], "--env_name is required"),
    ]
    for stage, argv, expected in cases:
        status, line = _run(stage, argv, capsys)
        assert status == 2, (argv, line)
        assert line.startswith("error:") and expected in line, (argv, line)
    assert not (tmp_path / "a").exists(), "a failed run left files behind"


def test_negative_sizes_are_rejected_by_the_parser(capsys):
    from trex.train_policy import main

    for flag in ["--num_envs", "--nsteps", "--timesteps_per_proc", "--num_levels"]:
        with pytest.raises(SystemExit) as exc:
            main([flag, "-3"])
        assert exc.value.code == 2
        assert "error:" in capsys.readouterr().err


def test_existing_run_dir_is_not_mixed(tiny_expert, tmp_path, capsys):
    from trex.train_policy import main

    log_dir = tiny_expert.parent.parent
    status, line = _run(main, ["--env_name", "coinrun", "--log_dir", str(log_dir)], capsys)
    assert status == 2 and "already holds a training run" in line


def test_corrupt_weights_in_checkpoint(tiny_expert, tmp_path, capsys):
    from trex.test_policy import main

    src = tiny_expert / read_manifest(tiny_expert)["file"].iloc[-1]
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.namelist():
            data = zin.read(item)
            zout.writestr(item, data[: len(data) // 2] if item == "policy.pth" else data)
    status, line = _run(main, ["--load_path", str(bad), "--num_runs", "1"], capsys)
    assert status == 2 and "corrupt" in line


def test_config_file_sets_flags(tmp_path, capsys):
    from trex.train_policy import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text("env_name: nosuchgame\n")
    status, line = _run(main, ["-c", str(cfg), "--log_dir", str(tmp_path)], capsys)
    assert status == 2 and "nosuchgame" in line
    cfg.write_text("no_such_flag: 1\n")
    status, line = _run(main, ["-c", str(cfg)], capsys)
    assert status == 2 and "no_such_flag" in line
