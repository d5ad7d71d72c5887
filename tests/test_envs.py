"""The Procgen -> SB3 VecEnv adapter: shapes, dtypes, auto-reset, level ranges, seeding."""

from __future__ import annotations

import numpy as np
import pytest

from trex.common.envs import (
    ENV_NAMES,
    TEST_LEVELS,
    TRAIN_LEVELS,
    check_distribution_mode,
    check_env_name,
    make_procgen_env,
)
from trex.common.errors import UserError


def test_reset_shapes_and_spaces():
    env = make_procgen_env("coinrun", 2, seed=0)
    obs = env.reset()
    assert obs.shape == (2, 3, 64, 64) and obs.dtype == np.uint8
    assert env.observation_space.shape == (3, 64, 64)
    assert env.action_space.n == 15
    assert env.last_rgb.shape == (2, 64, 64, 3)
    np.testing.assert_array_equal(obs, env.last_rgb.transpose(0, 3, 1, 2))
    obs, rew, done, infos = env.step(np.zeros(2, dtype=np.int64))
    assert rew.dtype == np.float32 and rew.shape == (2,)
    assert done.dtype == bool and done.shape == (2,)
    assert len(infos) == 2 and all("level_seed" in i for i in infos)


def test_same_seed_same_first_observations():
    a = make_procgen_env("starpilot", 2, seed=7).reset()
    b = make_procgen_env("starpilot", 2, seed=7).reset()
    c = make_procgen_env("starpilot", 2, seed=8).reset()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_level_seed_inside_requested_range_and_episode_infos():
    start, num = 1_000_000_000, 5
    env = make_procgen_env("bigfish", 2, start_level=start, num_levels=num, seed=3)
    env.reset()
    rng = np.random.default_rng(0)
    seen_levels = set(env.level_seeds.tolist())
    episodes = []
    lengths = np.zeros(2, dtype=int)
    returns = np.zeros(2)
    for _ in range(600):
        _, rew, done, infos = env.step(rng.integers(0, 15, 2))
        lengths += 1
        returns += rew
        for i, info in enumerate(infos):
            seen_levels.add(info["level_seed"])
            if done[i]:
                # the adapter's episode stats equal our own count of that episode's steps/rewards
                assert info["episode"]["l"] == lengths[i]
                assert info["episode"]["r"] == pytest.approx(returns[i])
                episodes.append(info)
                lengths[i] = 0
                returns[i] = 0.0
            else:
                assert "episode" not in info
    assert episodes, "no episode finished in 600 random bigfish steps"
    assert all(start <= s < start + num for s in seen_levels)


def test_train_and_test_level_ranges_do_not_overlap():
    train_end = TRAIN_LEVELS[0] + TRAIN_LEVELS[1]
    assert train_end <= TEST_LEVELS[0]
    assert TEST_LEVELS[0] + TEST_LEVELS[1] < 2**31


def test_second_reset_starts_new_episodes():
    env = make_procgen_env("coinrun", 2, seed=0)
    first = env.reset()
    for _ in range(5):
        env.step(np.zeros(2, dtype=np.int64))
    again = env.reset()
    assert again.shape == first.shape


@pytest.mark.parametrize("bad", ["pong", "Coinrun", ""])
def test_unknown_env_name_lists_valid_ones(bad):
    with pytest.raises(UserError, match="valid: bigfish"):
        check_env_name(bad)
    with pytest.raises(UserError):
        make_procgen_env(bad, 1)


def test_unknown_mode_and_bad_sizes():
    with pytest.raises(UserError, match="easy, hard"):
        check_distribution_mode("medium")
    with pytest.raises(UserError):
        make_procgen_env("coinrun", 0)
    with pytest.raises(UserError):
        make_procgen_env("coinrun", 1, start_level=-1)


def test_env_names_match_procgen():
    import procgen.env

    from trex.common.envs import _import_procgen

    _import_procgen()
    assert set(ENV_NAMES) == set(procgen.env.ENV_NAMES)
