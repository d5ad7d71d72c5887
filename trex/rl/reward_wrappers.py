"""Reward replacement for PPO: a learned T-REX reward, or a constant "live-long" bonus.

The learned reward of a step is the reward network's output on the observation the agent
acted on, ``r(o_t)``: T-REX scores a trajectory by the sum of ``r`` over its frames
(Brown et al. 2019, arXiv 1904.06387, eq. 1), and a demo's frames are exactly the
observations its actions were taken on. (Using ``o_t`` rather than the next observation
also keeps Procgen's auto-reset from crediting an episode with the next one's first frame.)
All environments are scored in one batched forward per step.

A frame-stacking reward (``reward_fn.frame_stack`` K > 1) scores o_t on the stack
o_{t-K+1..t} of the same episode, kept per environment and reset at every episode start
by repeating its first frame: exactly the stacks of a demo (tested against the reward
function applied to the episode's frames as a demo).

The true reward is never lost: it stays in ``info["true_reward"]``, and the adapter's
``info["episode"]`` returns (what SB3 logs) are counted from the true rewards.
:func:`reward_setup` builds the wrapper a train_policy config asks for.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

if TYPE_CHECKING:
    from trex.rl.config import TrainPolicyConfig

log = logging.getLogger(__name__)

#: uint8 observations (N, 3, 64, 64) -> float32 rewards (N,)
FrameRewardFn = Callable[[np.ndarray], np.ndarray]


class ReplacedRewardVecEnv(VecEnvWrapper):
    """Base: replace each step's reward with ``self.rewards_for(obs_acted_on)``.

    Keeps the true reward in ``info["true_reward"]``, the replaced episode return in
    ``info["learned_episode"]`` on episode ends, and the last 100 replaced episode returns
    in :attr:`learned_episode_returns` (logged as ``learned_return_mean``).
    """

    def __init__(self, venv: VecEnv) -> None:
        super().__init__(venv)
        self._obs: np.ndarray | None = None
        self._ep_learned = np.zeros(venv.num_envs, dtype=np.float64)
        self.learned_episode_returns: deque[float] = deque(maxlen=100)

    def rewards_for(self, obs: np.ndarray) -> np.ndarray:
        """float32 (N,) rewards for the observations (N, 3, 64, 64) the actions were taken on."""
        raise NotImplementedError

    def observed(self, obs: np.ndarray, starts: np.ndarray) -> None:
        """Hook: ``obs`` (N, 3, 64, 64) are the next observations to act on, and
        ``starts`` (N,) bool says which of them begin an episode."""

    def stepped(self, acted_on: np.ndarray, true_rewards: np.ndarray, infos: list[dict]) -> None:
        """Hook: a step is done; ``acted_on`` (N, 3, 64, 64) were its observations and
        ``true_rewards`` (N,) the game's rewards of it (e.g. for a preference labeller)."""

    def reset(self) -> np.ndarray:
        self._obs = self.venv.reset()
        self._ep_learned[:] = 0.0
        self.observed(self._obs, np.ones(self.num_envs, dtype=bool))
        return self._obs

    def step_wait(self) -> VecEnvStepReturn:
        assert self._obs is not None, "reset() must come before step()"
        acted_on = self._obs
        obs, true_rew, dones, infos = self.venv.step_wait()
        rewards = np.asarray(self.rewards_for(acted_on), dtype=np.float32).reshape(self.num_envs)
        self._ep_learned += rewards
        for i, info in enumerate(infos):
            info["true_reward"] = float(true_rew[i])
            if dones[i]:
                info["learned_episode"] = {"r": float(self._ep_learned[i])}
                self.learned_episode_returns.append(float(self._ep_learned[i]))
        self._ep_learned[dones] = 0.0
        self.stepped(acted_on, np.asarray(true_rew), infos)
        self._obs = obs
        self.observed(obs, np.asarray(dones, dtype=bool))
        return obs, rewards, dones, infos


class LearnedRewardVecEnv(ReplacedRewardVecEnv):
    """The reward network's prediction ``r(o_t)`` (optionally squashed by a sigmoid, as the
    original project's ``--use_sigmoid``) replaces the game's reward.

    With ``reward_fn.frame_stack`` K > 1 (a :class:`trex.reward.model_file.RewardFunction`
    of a frame-stacking model), each environment keeps its last K observations
    (N, K, 3, 64, 64), the episode's first repeated until there are K, and the reward
    function gets these stacks.
    """

    def __init__(self, venv: VecEnv, reward_fn: FrameRewardFn, use_sigmoid: bool = False) -> None:
        super().__init__(venv)
        self.reward_fn = reward_fn
        self.use_sigmoid = use_sigmoid
        self.frame_stack = int(getattr(reward_fn, "frame_stack", 1))
        self._stacks: np.ndarray | None = None  # (N, K, 3, 64, 64) uint8 when K > 1

    def observed(self, obs: np.ndarray, starts: np.ndarray) -> None:
        if self.frame_stack == 1:
            return
        if self._stacks is None:
            self._stacks = np.empty((len(obs), self.frame_stack, *obs.shape[1:]), dtype=obs.dtype)
            starts = np.ones(len(obs), dtype=bool)
        self._stacks[:, :-1] = self._stacks[:, 1:]  # numpy buffers the overlapping copy
        self._stacks[:, -1] = obs
        self._stacks[starts] = obs[starts][:, None]

    def rewards_for(self, obs: np.ndarray) -> np.ndarray:
        if self.frame_stack > 1:
            assert self._stacks is not None, "reset() must come before step()"
            obs = self._stacks
        r = np.asarray(self.reward_fn(obs), dtype=np.float32)
        if self.use_sigmoid:
            r = 1.0 / (1.0 + np.exp(-r))
        return r


class ConstantRewardVecEnv(ReplacedRewardVecEnv):
    """+C every step: the "live-long" baseline a learned reward must beat."""

    def __init__(self, venv: VecEnv, constant: float) -> None:
        super().__init__(venv)
        self.constant = float(constant)

    def rewards_for(self, obs: np.ndarray) -> np.ndarray:
        return np.full(len(obs), self.constant, dtype=np.float32)


class ContinuousVecEnv(VecEnvWrapper):
    """PPO plays on through episode ends: ``dones`` are always False, so a death or a
    completed level is one more step (Procgen starts the next level by itself) and the
    value bootstraps across it, as in the original project's ``Gym_procgen_continuous``
    (christiano/env_wrapper.py). Episode statistics still come from ``info["episode"]``;
    ``info["episode_end"]`` marks the hidden ends."""

    def reset(self) -> np.ndarray:
        return self.venv.reset()

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        for i in np.flatnonzero(dones):
            infos[i]["episode_end"] = True
        return obs, rewards, np.zeros_like(dones), infos


def reward_setup(
    cfg: TrainPolicyConfig,
) -> tuple[Callable[[VecEnv], VecEnv] | None, dict[str, Any], str | None]:
    """(env wrapper or None, checkpoint metadata, run-dir tag) for ``cfg``'s reward.

    Loads and checks the reward model before anything is written (UserError on a
    missing/corrupt model, an unknown rm_id, or a model of another game or mode unless
    ``allow_reward_mismatch``).
    """
    if cfg.constant_reward is not None:
        c = cfg.constant_reward
        return (
            (lambda env: ConstantRewardVecEnv(env, c)),
            {"reward": f"constant:{c:g}"},
            f"constant_{c:g}",
        )
    if not cfg.learned_reward:
        return None, {"reward": "true"}, None
    from trex.reward.model_file import load_reward_function
    from trex.reward.registry import resolve_reward_model

    path = resolve_reward_model(
        cfg.reward_model or cfg.rm_id, None if cfg.reward_model else cfg.reward_csv
    )
    check = not cfg.allow_reward_mismatch
    reward_fn = load_reward_function(
        path,
        env_name=cfg.env_name if check else None,
        mode=cfg.distribution_mode if check else None,
        device=cfg.device,
        precision=cfg.precision,
    )
    rm_id = reward_fn.rm_id or Path(path).stem
    meta = {
        "reward": f"learned:{rm_id}",
        "reward_model": str(path),
        "use_sigmoid": cfg.use_sigmoid,
    }
    sig = cfg.use_sigmoid
    return (lambda env: LearnedRewardVecEnv(env, reward_fn, sig)), meta, f"rm_{rm_id}"
