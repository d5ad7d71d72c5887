"""Learning from preferences (train_preferences): the labeller, the schedule, query selection,
the buffer, and whole toy runs on real Procgen (resumed after kills at named fault points,
with the environment's reward replaced by NaN on every path but the labeller's, read back by
eval_reward and train_policy)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_faults import run_stage

from trex.common.errors import UserError
from trex.preferences.buffer import Comparisons, PreferenceBuffer, load_round, save_round
from trex.preferences.config import TrainPreferencesConfig
from trex.preferences.labeller import SyntheticLabeller
from trex.preferences.schedule import query_schedule
from trex.preferences.selection import (
    Segments,
    candidate_pairs,
    cut_segments,
    preference_disagreement,
    select_pairs,
)

# ----------------------------------------------------------------------------- the labeller


def test_labeller_prefers_the_higher_true_return_and_skips_ties():
    true = np.zeros((12, 2), dtype=np.float32)  # 12 steps x 2 envs
    true[1, 0] = 1.0  # segment (env 0, start 0) has return 1
    true[7, 1] = 3.0  # segment (env 1, start 6) has return 3
    segs = Segments(np.array([0, 0, 1, 1]), np.array([0, 6, 0, 6]), 6)  # returns 1, 0, 0, 3
    pairs = np.array([[0, 1], [1, 0], [3, 0], [1, 2], [2, 3]])
    lab = SyntheticLabeller()
    labels = lab.query(true, segs, pairs, np.random.default_rng(0))
    assert labels.keep.tolist() == [True, True, True, False, True]
    assert labels.prefer[labels.keep].tolist() == [0, 1, 0, 1]
    assert labels.oriented(pairs).tolist() == [[1, 0], [1, 0], [0, 3], [2, 3]]
    assert lab.queries == 5  # the tie was asked too
    lab.query(true, segs, pairs, np.random.default_rng(0), count=False)
    assert lab.queries == 5


@pytest.mark.parametrize("noise", [0.1, 0.3])
def test_label_noise_flips_answers_at_the_stated_rate(noise):
    n = 20000
    returns = np.stack([np.zeros(n), np.ones(n)], axis=1)
    labels = SyntheticLabeller(noise=noise).answer(returns, np.random.default_rng(1))
    wrong = 1 - labels.prefer.mean()
    assert abs(wrong - noise) < 4 * np.sqrt(noise * (1 - noise) / n)


def test_boltzmann_labeller_follows_the_return_gap():
    n = 20000
    returns = np.stack([np.zeros(n), np.full(n, 1.0)], axis=1)
    labels = SyntheticLabeller(beta=2.0).answer(returns, np.random.default_rng(2))
    assert abs(labels.prefer.mean() - 1 / (1 + np.exp(-2.0))) < 0.015


# ----------------------------------------------------------------------------- schedule


@pytest.mark.parametrize(
    "n,updates,every,frac", [(5000, 31, 1, 0.1), (7, 3, 2, 0.5), (1000, 61, 5, 0.0), (3, 1, 1, 0.1)]
)
def test_schedule_spends_exactly_the_budget_and_decays(n, updates, every, frac):
    sched = query_schedule(n, updates, every, frac)
    assert sum(sched.values()) == n
    assert min(sched) == 1 and max(sched) <= updates
    later = [sched[u] for u in sorted(sched)[1:]]
    assert all(a >= b for a, b in zip(later, later[1:]))  # a decaying rate


# ----------------------------------------------------------------------------- selection


def test_segments_tile_every_env_and_sum_per_member():
    segs = cut_segments(10, 3, 3, np.random.default_rng(0))
    assert len(segs) == 9 and set(segs.env.tolist()) == {0, 1, 2}
    values = np.arange(30, dtype=float).reshape(10, 3)
    sums = segs.sums(values)
    for i in range(len(segs)):
        s = segs.start[i]
        assert sums[i] == values[s : s + 3, segs.env[i]].sum()
    members = segs.sums(np.stack([values, -values], axis=1))  # (T, M, N) -> (M, S)
    assert np.allclose(members, np.stack([sums, -sums]))


def test_disagreement_picks_the_pairs_the_members_disagree_on():
    # 3 members, 4 segments; members agree on segments 0-1, disagree wildly on 2-3
    returns = np.array([[0.0, 1.0, 5.0, -5.0], [0.0, 1.0, -5.0, 5.0], [0.0, 1.0, 0.0, 0.0]])
    candidates = np.array([[0, 1], [2, 3], [1, 0], [0, 2], [3, 2]])
    var = preference_disagreement(returns, candidates)
    picked = select_pairs(candidates, 2, "disagreement", returns)
    assert sorted(map(tuple, picked.tolist())) == [(2, 3), (3, 2)]
    assert var[0] == pytest.approx(0.0) and var[1] == var.max()
    assert select_pairs(candidates, 2, "uniform").tolist() == [[0, 1], [2, 3]]
    with pytest.raises(ValueError, match="ensemble"):
        select_pairs(candidates, 2, "disagreement", returns[:1])
    pairs = candidate_pairs(5, 1000, np.random.default_rng(0))
    assert (pairs[:, 0] != pairs[:, 1]).all() and pairs.max() == 4


# ----------------------------------------------------------------------------- buffer


def _segments(n: int, length: int = 4) -> list[np.ndarray]:
    return [np.full((length, 64, 64, 3), i, dtype=np.uint8) for i in range(n)]


def test_buffer_keeps_each_frame_once_and_drops_the_oldest(tmp_path):
    buf = PreferenceBuffer(capacity=3)
    segs = _segments(5)
    buf.add(segs, Comparisons.whole([[0, 1], [2, 1], [0, 2]], 4))
    assert len(buf) == 3 and buf.num_frames == 12  # segments 3, 4 unused: not stored
    buf.add(segs, Comparisons.whole([[3, 4]], 4))  # drops [0, 1]
    assert len(buf) == 3 and buf.dropped == 1
    demos, pairs = buf.training_set()
    seen = demos.frames[pairs.global_starts(demos)][..., 0, 0, 0].tolist()
    assert seen == [[2, 1], [0, 2], [3, 4]]
    buf.add(segs, Comparisons.whole([[4, 3], [3, 3], [4, 4]], 4))  # everything older dropped
    demos, pairs = buf.training_set()
    assert buf.num_frames == 8 and len(demos) == 2  # only this round's two segments remain
    assert demos.frames[pairs.global_starts(demos)][..., 0, 0, 0].tolist() == [
        [4, 3],
        [3, 3],
        [4, 4],
    ]
    save_round(tmp_path / "r.npz", segs, Comparisons.whole([[4, 1]], 4))
    loaded, comps = load_round(tmp_path / "r.npz")
    assert len(loaded) == 2 and comps.segment.tolist() == [[1, 0]]
    assert loaded[1][0, 0, 0, 0] == 4


class _ZeroReward:
    """A reward of 0 for every frame, as one member: (1, N)."""

    frame_stack = 1

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return np.zeros((1, len(obs)), dtype=np.float32)


def test_end_penalty_lands_on_failed_episode_ends_only():
    """The labeller's rewards (the rollout record's) are the game's, less --end_penalty where
    an episode ended without a completed level; PPO's reward is untouched by it."""
    from stable_baselines3.common.vec_env import VecEnvWrapper

    from trex.common.envs import make_procgen_env
    from trex.preferences.loop import PreferenceRewardVecEnv, RolloutRecord

    class Outcomes(VecEnvWrapper):  # env 0 plays on, env 1 completes a level, env 2 dies
        def reset(self):
            return self.venv.reset()

        def step_wait(self):
            obs, _, dones, _ = self.venv.step_wait()
            infos = [{}, {"episode": {}, "level_complete": True}, {"episode": {}}]
            return obs, np.array([1.0, 10.0, 0.0], np.float32), dones, infos

    for penalty, expected in [(0.0, [1.0, 10.0, 0.0]), (5.0, [1.0, 10.0, -5.0])]:
        record = RolloutRecord(2, 3, 1)
        env = PreferenceRewardVecEnv(
            Outcomes(make_procgen_env("fruitbot", 3, seed=1)), _ZeroReward(), record, penalty
        )
        env.reset()
        _, rew, _, _ = env.step(np.zeros(3, dtype=np.int64))
        np.testing.assert_array_equal(record.true[0], expected)
        np.testing.assert_array_equal(rew, 0.0)

    # real fruitbot episodes: a random agent hits walls; completed levels keep their reward
    record = RolloutRecord(200, 8, 1)
    env = PreferenceRewardVecEnv(make_procgen_env("fruitbot", 8, seed=2), _ZeroReward(), record, 10)
    plain = make_procgen_env("fruitbot", 8, seed=2)
    env.reset(), plain.reset()
    rng = np.random.default_rng(0)
    failed = 0
    for t in range(200):
        actions = rng.integers(0, 15, 8)
        _, _, _, infos = env.step(actions)
        _, true, dones, plain_infos = plain.step(actions)
        ended = dones & ~np.array([i.get("level_complete", False) for i in plain_infos])
        np.testing.assert_allclose(record.true[t], true - 10.0 * ended)
        failed += int(ended.sum())
    assert failed > 0


def test_frames_before_failed_ends_and_after_starts_are_told_apart():
    """scripts/reward_at_episode_ends.py's frame kinds: the k frames up to a failed end are 1,
    an episode's first k frames 2 (a frame that is both counts as 1), the rest 0; a completed
    level's end is a start's predecessor only."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from reward_at_episode_ends import frame_kinds

    dones = np.zeros((10, 1), dtype=bool)
    dones[[4, 8]] = True
    failed = dones.copy()
    failed[8] = False  # step 8 completes its level
    assert frame_kinds(dones, failed, 2)[:, 0].tolist() == [2, 2, 0, 1, 1, 2, 2, 0, 0, 2]


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"selection": "disagreement"}, "needs an ensemble"),
        ({"segment_length": 300}, "at most --nsteps"),
        ({"label_noise": 0.7}, "at most 0.5"),
        ({"init_demos": ["d.csv"], "num_dems": 1}, "--num_dems"),
    ],
)
def test_bad_settings_are_one_line_errors(changes, message):
    with pytest.raises(UserError, match=message):
        TrainPreferencesConfig(**changes).check()


# ----------------------------------------------------------------------------- whole runs

TOY = [
    "--env_name", "starpilot", "--num_levels", "20", "--num_envs", "2", "--nsteps", "32",
    "--timesteps_per_proc", "256", "--segment_length", "8", "--num_queries", "30",
    "--fit_pairs", "16", "--initial_fit_pairs", "32", "--heldout_pairs", "20",
    "--save_interval", "1", "--num_threads", "1", "--seed", "3",
]  # fmt: skip


def _progress(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "progress.csv")


def test_a_killed_run_resumes_and_asks_exactly_the_budget(tmp_path):
    argv = [*TOY, "--log_dir", str(tmp_path), "--log_name", "r"]
    run = tmp_path / "starpilot" / "easy" / "r"
    for fault, sig in (("preferences_after_labels@2", "KILL"), ("preferences_after_fit@3", "INT")):
        killed = run_stage("trex.train_preferences", argv, fault=fault, sig=sig)
        assert killed.returncode != 0 or sig == "INT", killed.stderr[-2000:]
        steps = pd.read_csv(run / "checkpoints.csv")["timesteps"]
        assert (steps % 64 == 0).all()  # checkpoints on update boundaries only
    done = run_stage("trex.train_preferences", argv)
    assert done.returncode == 0, done.stderr[-2000:]
    progress = _progress(run)
    assert progress["timesteps"].is_unique and progress["timesteps"].max() == 256
    assert progress["queries"].iloc[-1] == 30
    state = json.loads((run / "preferences" / "state_0000000256.json").read_text())
    assert state["queries"] == 30
    assert not [p for p in run.rglob(".*tmp*")]
    again = run_stage("trex.train_preferences", argv)  # complete: nothing more to do
    assert again.returncode == 0 and "complete" in again.stderr
    other = run_stage("trex.train_preferences", [*argv, "--num_queries", "40"])
    assert other.returncode == 2 and "other settings (--num_queries)" in other.stderr
    assert "Traceback" not in other.stderr


def test_the_true_reward_is_read_by_the_labeller_only(tmp_path, monkeypatch):
    """The environment's reward is NaN everywhere but where the labeller reads it: the run
    completes and makes the same reward model as with the real reward."""
    from safetensors.torch import load_file
    from stable_baselines3.common.vec_env import VecEnvWrapper

    import trex.rl.training as training
    from trex.common.config import parse_config
    from trex.preferences.config import TrainPreferencesConfig
    from trex.preferences.loop import PreferenceRewardVecEnv
    from trex.preferences.run import train_preferences

    def run(name: str) -> bytes:
        cfg = parse_config(
            TrainPreferencesConfig, [*TOY, "--log_dir", str(tmp_path), "--log_name", name]
        )
        train_preferences(cfg)
        return load_file(str(cfg.run_dir / "reward_model.safetensors"))

    real = run("real")

    class HiddenReward(VecEnvWrapper):
        def reset(self):
            return self.venv.reset()

        def step_wait(self):
            obs, rew, dones, infos = self.venv.step_wait()
            for info, r in zip(infos, rew):
                info["labeller_only"] = float(r)
            return obs, np.full_like(rew, np.nan), dones, infos

    make = training.make_procgen_env
    monkeypatch.setattr(training, "make_procgen_env", lambda *a, **k: HiddenReward(make(*a, **k)))
    monkeypatch.setattr(
        PreferenceRewardVecEnv,
        "true_rewards",
        staticmethod(lambda _, infos: np.array([i["labeller_only"] for i in infos], np.float32)),
    )
    hidden = run("hidden")
    progress = _progress(tmp_path / "starpilot" / "easy" / "hidden")
    assert progress["labels"].iloc[-1] > 0
    assert hidden.keys() == real.keys()
    assert all(torch.equal(hidden[k], real[k]) for k in real)


def test_the_reward_model_is_read_by_eval_reward_and_train_policy(tmp_path):
    from conftest import make_tiny_demos

    argv = [*TOY, "--log_dir", str(tmp_path), "--log_name", "m", "--timesteps_per_proc", "64"]
    extra = ["--ties", "equal", "--end_penalty", "2", "--continuous"]
    assert run_stage("trex.train_preferences", [*argv, *extra]).returncode == 0
    config = json.loads((tmp_path / "starpilot" / "easy" / "m" / "config.json").read_text())
    assert config["args"]["end_penalty"] == 2.0 and config["args"]["continuous"] is True
    rounds = list((tmp_path / "starpilot" / "easy" / "m" / "preferences").glob("round_*.npz"))
    from trex.preferences.buffer import load_round

    _, stored = load_round(rounds[0])
    pairs = {tuple(p) for p in stored.segment.tolist()}
    assert any((b, a) in pairs for a, b in pairs)  # a tie is stored in both orders
    model = tmp_path / "starpilot" / "easy" / "m" / "reward_model.safetensors"
    demo_csv = make_tiny_demos(tmp_path / "demos")
    out = tmp_path / "eval.csv"
    evaluated = run_stage(
        "trex.eval_reward",
        ["--reward_model", str(model), "--demo_csv", str(demo_csv), "--out", str(out),
         "--num_bootstrap", "20"],
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert len(pd.read_csv(out)) == 1
    policy = run_stage(
        "trex.train_policy",
        ["--env_name", "starpilot", "--num_envs", "2", "--nsteps", "32", "--nminibatches", "2",
         "--timesteps_per_proc", "64", "--num_threads", "1", "--log_dir", str(tmp_path / "p"),
         "--reward_model", str(model)],
    )  # fmt: skip
    assert policy.returncode == 0, policy.stderr[-2000:]
    manifest = next((tmp_path / "p").rglob("checkpoints.csv"))
    assert manifest.parent.name == "rm_starpilot_m"  # PPO ran on this reward model


def test_center_reward_subtracts_the_rewards_mean_on_the_last_rollout(tmp_path, monkeypatch):
    """--center_reward: after each fit, PPO's reward is the network's prediction less its mean
    on the rollout just collected (all 64 frames at this size), and the offset is saved."""
    from trex.common.config import parse_config
    from trex.preferences.loop import PreferenceLearner, PreferenceRewardVecEnv
    from trex.preferences.run import train_preferences
    from trex.reward.nets import predict_frame_rewards

    seen: dict[str, list] = {"offsets": [], "means": [], "gaps": []}
    center, rewards_for = PreferenceLearner.center, PreferenceRewardVecEnv.rewards_for

    def spy_center(self, updates):
        center(self, updates)
        frames = self.record.obs.reshape(-1, *self.record.obs.shape[2:])
        full = predict_frame_rewards(self.net, frames, self.device, self.bf16).mean()
        seen["offsets"].append(self.env.offset)
        seen["means"].append(float(full))

    def spy_rewards(self, obs):
        out = rewards_for(self, obs)
        seen["gaps"].append(float(np.max(np.abs(self._pending[1].mean(0) - self.offset - out))))
        return out

    monkeypatch.setattr(PreferenceLearner, "center", spy_center)
    monkeypatch.setattr(PreferenceRewardVecEnv, "rewards_for", spy_rewards)
    cfg = parse_config(
        TrainPreferencesConfig,
        [*TOY, "--log_dir", str(tmp_path), "--log_name", "c", "--center_reward"],
    )
    train_preferences(cfg)
    assert len(seen["offsets"]) == 4 and len(set(seen["offsets"])) == 4
    assert np.allclose(seen["offsets"], seen["means"], atol=1e-5)
    assert max(seen["gaps"]) < 1e-5
    progress = _progress(cfg.run_dir)
    assert np.allclose(progress["reward_offset"], seen["offsets"], atol=1e-6)
    state = json.loads((cfg.run_dir / "preferences" / "state_0000000256.json").read_text())
    assert state["reward_offset"] == pytest.approx(seen["offsets"][-1])


def test_the_reward_tag_names_every_setting_that_changes_the_reward():
    from trex.preferences.run import reward_tag

    assert reward_tag(TrainPreferencesConfig()) == "preferences:5000:uniform"
    tag = reward_tag(TrainPreferencesConfig(ties="equal", center_reward=True, init_reward="a/b.x"))
    assert tag == "preferences:5000:uniform+ties_equal+centered:b"
    tag = reward_tag(TrainPreferencesConfig(num_queries=1000, end_penalty=10.0))
    assert tag == "preferences:1000:uniform+end_penalty_10"
    tag = reward_tag(TrainPreferencesConfig(num_queries=1000, end_penalty=10.0, continuous=True))
    assert tag == "preferences:1000:uniform+end_penalty_10+continuous"
