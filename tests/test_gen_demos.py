"""gen_demos: demos from the random policy and from a tiny real checkpoint (conftest's), level
ranges, auto-reset correctness (replayed step by step), noise, skill spread, appends, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trex.common.envs import TEST_LEVELS, TRAIN_LEVELS, make_procgen_env
from trex.demos.generation import CollectConfig, collect_episodes, demo_id_for
from trex.demos.planning import (
    RANDOM_POLICY_NOISE,
    DemoJob,
    PolicySource,
    plan_jobs,
    split_evenly,
    spread_over_skill,
)
from trex.demos.store import DemoIndex
from trex.gen_demos import main


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The test machine is shared: one torch thread avoids OpenMP threads fighting for cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def checkpoint_dir(tiny_expert: Path) -> Path:
    """The session's tiny real coinrun checkpoint directory (tests/conftest.py)."""
    return tiny_expert


@pytest.fixture(scope="module")
def spread_dir(checkpoint_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint directory whose manifest lists three copies of the checkpoint with
    different (made-up) mean returns, to see the skill spread at work."""
    from trex.rl.checkpoints import read_manifest

    src = checkpoint_dir / read_manifest(checkpoint_dir)["file"].iloc[-1]
    d = tmp_path_factory.mktemp("spread")
    rows = []
    for i, ret in enumerate([0.0, 1.0, 10.0, 10.5, 11.0]):
        shutil.copy(src, d / f"ck{i}.zip")
        rows.append({"file": f"ck{i}.zip", "timesteps": 100 * (i + 1), "mean_return": ret})
    pd.DataFrame(rows).to_csv(d / "checkpoints.csv", index=False)
    return d


def gen(tmp_path: Path, *extra: str) -> int:
    return main(["--log_dir", str(tmp_path / "demos"), "--progress", "false", *extra])


def read(tmp_path: Path, name: str = "demo_infos.csv") -> DemoIndex:
    return DemoIndex.read(tmp_path / "demos" / name)


def replay(
    env_name: str, level_seed: int, actions: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Play ``actions`` on one level from its start: (frames before each step, rewards, dones)."""
    env = make_procgen_env(env_name, 1, "easy", int(level_seed), 1, False, True, seed=123)
    env.reset()
    frames, rewards, dones = [], [], []
    for a in actions:
        frames.append(env.last_rgb[0].copy())
        _, r, d, _ = env.step(np.array([a]))
        rewards.append(r[0])
        dones.append(d[0])
    return np.stack(frames), np.array(rewards, dtype=np.float32), np.array(dones)


def check_store_invariants(index: DemoIndex) -> None:
    for demo in index.iter_demos():
        t = demo.info["length"]
        assert demo.observations.shape == (t, 64, 64, 3)
        assert demo.actions.shape == (t,) and demo.rewards.shape == (t,)
        assert demo.info["return"] == pytest.approx(float(demo.rewards.sum()))
        assert demo.actions.min() >= 0 and demo.actions.max() < 15


# ----------------------------------------------------------------------------- random policy


def test_random_policy_demos_replay_exactly(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Every stored demo is one whole episode of one level: replaying its actions from the
    level's start gives the same frames and rewards, and the game ends exactly at its last
    step (no frame lost or duplicated, nothing spliced from the next level)."""
    assert (
        gen(
            tmp_path,
            "--policy",
            "random",
            "--num_dems",
            "5",
            "--num_envs",
            "2",
            "--max_ep_len",
            "1000",
            "--seed",
            "3",
        )
        == 0
    )
    index = read(tmp_path)
    assert len(index) == 5
    df = index.df
    assert (df["policy"] == "random").all() and (df["noise"] == RANDOM_POLICY_NOISE).all()
    assert (df["set_name"] == "train").all() and df["done"].all()
    assert ((df["level_seed"] >= TRAIN_LEVELS[0]) & (df["level_seed"] < TRAIN_LEVELS[1])).all()
    assert df["demo_id"].str.match(r"^0_\d{3}_\d{3}_\d{3}$").all()
    check_store_invariants(index)
    for demo in index.iter_demos():
        frames, rewards, dones = replay("starpilot", demo.info["level_seed"], demo.actions)
        np.testing.assert_array_equal(frames, demo.observations)
        np.testing.assert_array_equal(rewards, demo.rewards)
        assert dones[-1] and not dones[:-1].any()
    out = capsys.readouterr().out
    assert "return_median" in out and "all" in out
    # a config.json to repeat the run
    configs = list((tmp_path / "demos" / "gen_demos_runs").glob("*/config.json"))
    assert len(configs) == 1


def test_test_set_levels_never_overlap_training(tmp_path: Path) -> None:
    assert (
        gen(tmp_path, "--policy", "random", "--num_dems", "3", "--num_envs", "3", "--seed", "4")
        == 0
    )
    assert (
        gen(
            tmp_path,
            "--policy",
            "random",
            "--num_dems",
            "3",
            "--num_envs",
            "3",
            "--seed",
            "4",
            "--test_set",
        )
        == 0
    )
    df = read(tmp_path).df
    train, test = df[df["set_name"] == "train"], df[df["set_name"] == "test"]
    assert len(train) == 3 and len(test) == 3
    assert (train["level_seed"] < TRAIN_LEVELS[0] + TRAIN_LEVELS[1]).all()
    assert (test["level_seed"] >= TEST_LEVELS[0]).all()
    assert (test["level_seed"] < TEST_LEVELS[0] + TEST_LEVELS[1]).all()
    assert (
        test["demo_id"].str.startswith("1_").all() and train["demo_id"].str.startswith("0_").all()
    )
    for row in test.itertuples():
        assert row.demo_id == demo_id_for(row.level_seed, True)


def test_cut_episodes_are_kept_and_marked(tmp_path: Path) -> None:
    """Episodes cut at --max_ep_len are stored with done=False; the next demo of that
    environment still starts at its level's beginning (replay check)."""
    assert (
        gen(
            tmp_path,
            "--policy",
            "random",
            "--num_dems",
            "6",
            "--num_envs",
            "2",
            "--max_ep_len",
            "30",
            "--seed",
            "5",
        )
        == 0
    )
    index = read(tmp_path)
    df = index.df
    assert len(df) == 6 and (df["length"] <= 30).all()
    assert (~df["done"]).any()
    assert (df.loc[~df["done"], "length"] == 30).all()
    check_store_invariants(index)
    for demo in index.iter_demos():
        frames, rewards, dones = replay("starpilot", demo.info["level_seed"], demo.actions)
        np.testing.assert_array_equal(frames, demo.observations)
        np.testing.assert_array_equal(rewards, demo.rewards)
        assert not dones[:-1].any() and bool(dones[-1]) == demo.info["done"]


def test_append_and_unique_ids(tmp_path: Path) -> None:
    """Two runs with the same seed play the same levels; the second run's demos get
    suffixed ids instead of clashing, and the index grows. (The same command twice is one
    run: the second finds it complete, see tests/test_faults.py.)"""
    args = ["--policy", "random", "--num_dems", "2", "--num_envs", "2", "--seed", "9"]
    assert gen(tmp_path, *args, "--max_ep_len", "50") == 0
    assert gen(tmp_path, *args, "--max_ep_len", "51") == 0
    index = read(tmp_path)
    ids = index.ids()
    assert len(ids) == 4 and len(set(ids)) == 4
    assert sum(i.endswith("_2") for i in ids) == 2
    assert len(list((tmp_path / "demos" / "demo_files").glob("*.npz"))) == 4
    check_store_invariants(index)


def test_name_flag_uses_seed_naming(tmp_path: Path) -> None:
    assert (
        gen(tmp_path, "--policy", "random", "--num_dems", "1", "--name", "batch1", "--seed", "1")
        == 0
    )
    index = read(tmp_path, "demo_infos_batch1.csv")
    assert len(index) == 1
    assert index.df["file"].iloc[0].startswith("demo_files_batch1/")
    assert not (tmp_path / "demos" / "demo_infos.csv").exists()


# ----------------------------------------------------------------------------- checkpoints


def test_demos_from_checkpoint_dir(tmp_path: Path, checkpoint_dir: Path) -> None:
    assert (
        gen(
            tmp_path,
            "--env_name",
            "coinrun",
            "--models_dir",
            str(checkpoint_dir),
            "--num_dems",
            "3",
            "--num_envs",
            "3",
            "--max_ep_len",
            "20",
            "--seed",
            "1",
            "--precision",
            "fp32",
        )
        == 0
    )
    index = read(tmp_path)
    assert len(index) == 3
    assert index.df["policy"].str.contains("checkpoint_").all()
    assert (index.df["noise"] == 0.0).all()
    assert (index.df["policy_timesteps"] > 0).all()
    check_store_invariants(index)


def test_noise_column_honoured(tmp_path: Path, checkpoint_dir: Path) -> None:
    from trex.rl.checkpoints import read_manifest

    ckpt = checkpoint_dir / read_manifest(checkpoint_dir)["file"].iloc[-1]
    assert (
        gen(
            tmp_path,
            "--env_name",
            "coinrun",
            "--policy",
            str(ckpt),
            "--noise",
            "0",
            "0.5",
            "1",
            "--num_dems",
            "6",
            "--num_envs",
            "3",
            "--max_ep_len",
            "15",
            "--seed",
            "2",
        )
        == 0
    )
    df = read(tmp_path).df
    assert sorted(df["noise"]) == [0.0, 0.0, 0.5, 0.5, 1.0, 1.0]
    assert (df["policy"] == str(ckpt)).all()


def test_checkpoints_spread_over_skill(tmp_path: Path, spread_dir: Path) -> None:
    """Returns 0, 1, 10, 10.5, 11: demos evenly spaced in skill use the weak checkpoints as
    much as the strong ones (a uniform choice would take the strong ones 3 times in 5)."""
    assert (
        gen(
            tmp_path,
            "--env_name",
            "coinrun",
            "--models_dir",
            str(spread_dir),
            "--num_dems",
            "5",
            "--num_envs",
            "5",
            "--max_ep_len",
            "5",
            "--seed",
            "3",
        )
        == 0
    )
    used = sorted(Path(p).name for p in read(tmp_path).df["policy"])
    # targets 0, 2.75, 5.5, 8.25, 11 -> nearest returns 0, 1, 1 (tie 1/10), 10, 11
    assert used == ["ck0.zip", "ck1.zip", "ck1.zip", "ck2.zip", "ck4.zip"]


def test_spread_and_plan_units() -> None:
    srcs = [
        PolicySource(f"c{i}", Path(f"c{i}.zip"), i, r)
        for i, r in enumerate([0.0, 1.0, 2.0, 20.0, 20.5, 21.0, 21.5, 22.0])
    ]
    picked = [s.name for s in spread_over_skill(srcs, 5)]
    assert picked == ["c0", "c2", "c2", "c3", "c7"]  # targets 0, 5.5, 11, 16.5, 22
    rets = np.array([s.mean_return for s in spread_over_skill(srcs, 100)])
    assert (rets < 10).mean() == pytest.approx(0.5, abs=0.05)  # half the demos from the weak half
    # checkpoints without a return are skipped; with none, timesteps stand in
    nan_srcs = [PolicySource("a", Path("a"), 1, float("nan")), PolicySource("b", Path("b"), 2, 3.0)]
    assert {s.name for s in spread_over_skill(nan_srcs, 4)} == {"b"}
    all_nan = [PolicySource(n, Path(n), t, float("nan")) for n, t in [("a", 10), ("b", 20)]]
    assert [s.name for s in spread_over_skill(all_nan, 2)] == ["a", "b"]
    assert split_evenly(7, 3).tolist() == [3, 2, 2]
    jobs = plan_jobs(7, [0.0, 0.5], srcs)
    assert len(jobs) == 7 and sorted(j.noise for j in jobs).count(0.0) == 4
    order = [int(j.policy.name[1:]) for j in jobs]
    assert order == sorted(order)  # grouped by policy
    assert all(j.policy.is_random for j in plan_jobs(3, [0.0], None))


def test_every_job_collected_once_with_more_envs_than_jobs() -> None:
    """One episode per job, whatever the episode lengths; surplus environments unused."""
    jobs = [DemoJob(PolicySource("random", None), float(e)) for e in (1.0, 1.0, 1.0)]
    records = []
    stats = collect_episodes(
        jobs,
        CollectConfig("starpilot", num_envs=8, max_ep_len=40, seed=1),
        lambda rec: records.append((rec.job, len(rec.actions), rec.done)),
        progress=False,
    )
    assert len(records) == 3 and stats.demos == 3
    assert stats.demo_steps == sum(n for _, n, _ in records)
    assert stats.env_steps % 3 == 0  # min(num_envs, jobs) = 3 environments


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "give --models_dir"),
        (["--policy", "random", "--noise", "0.5"], "--noise does not apply"),
        (["--policy", "random", "--models_dir", "x"], "not both"),
        (["--policy", "nope.zip"], "checkpoint not found: nope.zip"),
        (["--models_dir", "no_such_dir"], "no checkpoints.csv in no_such_dir"),
        (["--policy", "random", "--env_name", "pong"], "unknown env_name 'pong'"),
        (["--policy", "random", "--distribution_mode", "easyy"], "unknown distribution_mode"),
        (["--policy", "random", "--name", "a/b"], "--name must be a plain name"),
    ],
)
def test_bad_input_one_line_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    args: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert gen(tmp_path, *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "demos" / "demo_infos.csv").exists()


def test_bad_noise_values(
    tmp_path: Path, checkpoint_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    assert (
        gen(
            tmp_path, "--env_name", "coinrun", "--models_dir", str(checkpoint_dir), "--noise", "1.5"
        )
        == 2
    )
    assert "--noise values must be in [0, 1]" in capsys.readouterr().err


def test_checkpoint_of_another_game(
    tmp_path: Path, checkpoint_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    assert gen(tmp_path, "--models_dir", str(checkpoint_dir), "--env_name", "starpilot") == 2
    assert "not of 'starpilot'" in capsys.readouterr().err


def test_argparse_errors_exit_2(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        gen(tmp_path, "--policy", "random", "--num_dems", "0")
    assert exc.value.code == 2


def test_existing_index_with_other_columns(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    csv = tmp_path / "demos" / "demo_infos.csv"
    csv.parent.mkdir()
    csv.write_text("demo_id,env_name\n")
    assert gen(tmp_path, "--policy", "random", "--num_dems", "1") == 2
    assert "demo_infos.csv lacks column(s) mode" in capsys.readouterr().err
    assert csv.read_text() == "demo_id,env_name\n"
    assert not (tmp_path / "demos" / "gen_demos_runs").exists()
    assert not (tmp_path / "demos" / "demo_files").exists()
