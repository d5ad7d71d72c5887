"""PPO on a replaced reward: the learned reward is the network's prediction on the observation
acted on, the true reward passes through untouched, sigmoid and constant options."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trex.common.envs import make_procgen_env
from trex.reward.model_file import RewardFunction
from trex.reward.nets import build_net, predict_frame_rewards, prepare_net
from trex.rl.reward_wrappers import ConstantRewardVecEnv, ContinuousVecEnv, LearnedRewardVecEnv


def _reward_fn() -> RewardFunction:
    torch.manual_seed(0)
    net = prepare_net(build_net(), torch.device("cpu"), channels_last=False)
    return RewardFunction(
        net, {"rm_id": "test"}, torch.device("cpu"), bf16=False, channels_last=False
    )


def _roll(env, steps, seed=0):
    rng = np.random.default_rng(seed)
    obs = env.reset()
    out = []
    for _ in range(steps):
        acted_on = obs.copy()
        obs, rew, done, infos = env.step(rng.integers(0, 15, env.num_envs))
        out.append((acted_on, rew, done, infos))
    return out


@pytest.mark.parametrize("use_sigmoid", [False, True])
def test_learned_reward_is_the_prediction_on_the_observation_acted_on(use_sigmoid):
    fn = _reward_fn()
    env = LearnedRewardVecEnv(make_procgen_env("bigfish", 2, seed=4), fn, use_sigmoid=use_sigmoid)
    plain = make_procgen_env("bigfish", 2, seed=4)  # same seed: same true rewards
    learned = _roll(env, 40)
    true = _roll(plain, 40)
    for (obs, rew, done, infos), (_, true_rew, true_done, _) in zip(learned, true):
        expected = predict_frame_rewards(fn.net, obs, torch.device("cpu"), channels_last=False)
        if use_sigmoid:
            expected = 1.0 / (1.0 + np.exp(-expected))
            assert ((rew > 0) & (rew < 1)).all()
        np.testing.assert_allclose(rew, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal([i["true_reward"] for i in infos], true_rew)
        np.testing.assert_array_equal(done, true_done)


def test_episode_returns_true_and_learned_side_by_side():
    env = LearnedRewardVecEnv(make_procgen_env("bigfish", 2, seed=1), _reward_fn())
    learned_sum = np.zeros(2)
    true_sum = np.zeros(2)
    ended = 0
    for _, rew, done, infos in _roll(env, 400):
        learned_sum += rew
        true_sum += [i["true_reward"] for i in infos]
        for i in np.flatnonzero(done):
            assert infos[i]["episode"]["r"] == pytest.approx(true_sum[i])
            assert infos[i]["learned_episode"]["r"] == pytest.approx(learned_sum[i], rel=1e-5)
            learned_sum[i] = true_sum[i] = 0.0
            ended += 1
    assert ended > 0 and len(env.learned_episode_returns) == ended


def test_constant_reward():
    env = ConstantRewardVecEnv(make_procgen_env("coinrun", 2, seed=0), 0.5)
    for _, rew, _, infos in _roll(env, 5):
        np.testing.assert_array_equal(rew, [0.5, 0.5])
        assert all("true_reward" in i for i in infos)


def test_continuous_env_hides_episode_ends_from_ppo_only():
    """PPO never sees done; the game, its rewards and the episode statistics are unchanged."""
    env = ContinuousVecEnv(make_procgen_env("fruitbot", 4, seed=3))
    plain = make_procgen_env("fruitbot", 4, seed=3)
    ends = 0
    for (obs, rew, done, infos), (p_obs, p_rew, p_done, p_infos) in zip(
        _roll(env, 200), _roll(plain, 200)
    ):
        np.testing.assert_array_equal(obs, p_obs)
        np.testing.assert_array_equal(rew, p_rew)
        assert not done.any()
        assert [bool(i.get("episode_end")) for i in infos] == list(p_done)
        assert ["episode" in i for i in infos] == ["episode" in i for i in p_infos]
        ends += int(p_done.sum())
    assert ends > 0
