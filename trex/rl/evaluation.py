"""Run a policy for a number of episodes on a level range, batched over environments.

Episode counting is unbiased: each environment plays a fixed quota of episodes (taking
"the first N episodes to finish" would favour short ones).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from trex.common.envs import make_procgen_env
from trex.common.errors import UserError

if TYPE_CHECKING:
    from trex.rl.config import PolicyConfig

log = logging.getLogger(__name__)

#: obs uint8 (N, 3, 64, 64) -> actions int (N,)
ActFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class EpisodeStats:
    """Per-episode results: returns float64 (E,), lengths int64 (E,), level_seeds int64 (E,),
    truncated bool (E,) (cut at ``max_steps``)."""

    returns: np.ndarray
    lengths: np.ndarray
    level_seeds: np.ndarray
    truncated: np.ndarray

    def summary(self) -> dict[str, float]:
        """mean/std/min/max of return and mean/std of length."""
        r, n = self.returns, self.lengths
        return {
            "episodes": int(len(r)),
            "return_mean": float(r.mean()),
            "return_std": float(r.std()),
            "return_min": float(r.min()),
            "return_max": float(r.max()),
            "length_mean": float(n.mean()),
            "length_std": float(n.std()),
            "truncated": int(self.truncated.sum()),
        }

    def records(self) -> list[dict[str, int | float | bool]]:
        """One dict per episode, in the order they ended: episode (index), level_seed,
        return, length, truncated."""
        return [
            {
                "episode": i,
                "level_seed": int(s),
                "return": float(r),
                "length": int(n),
                "truncated": bool(t),
            }
            for i, (s, r, n, t) in enumerate(
                zip(self.level_seeds, self.returns, self.lengths, self.truncated)
            )
        ]


def random_act_fn(seed: int) -> ActFn:
    """A uniformly random policy over Procgen's 15 actions."""
    rng = np.random.default_rng(seed)
    return lambda obs: rng.integers(0, 15, size=len(obs))


def episode_quotas(num_episodes: int, num_envs: int) -> np.ndarray:
    """int64 (num_envs,): how many episodes each environment plays, summing to num_episodes."""
    quota = np.full(num_envs, num_episodes // num_envs, dtype=np.int64)
    quota[: num_episodes % num_envs] += 1
    return quota


def run_episodes(
    act_fn: ActFn,
    env_name: str,
    *,
    distribution_mode: str = "easy",
    start_level: int = 0,
    num_levels: int = 0,
    num_episodes: int = 100,
    num_envs: int = 32,
    max_steps: int | None = None,
    seed: int = 0,
    use_backgrounds: bool = True,
    progress: bool = True,
) -> EpisodeStats:
    """Play ``num_episodes`` episodes on levels [start_level, start_level + num_levels).

    ``max_steps`` cuts an episode there (recorded as truncated); that environment's
    further steps are ignored until its game ends the episode by itself, so every
    counted episode starts at a level's beginning.
    """
    if num_episodes <= 0:
        raise UserError(f"number of episodes must be positive, got {num_episodes}")
    num_envs = max(1, min(num_envs, num_episodes))
    env = make_procgen_env(
        env_name, num_envs, distribution_mode, start_level, num_levels, False, use_backgrounds, seed
    )
    quota = episode_quotas(num_episodes, num_envs)
    done_count = np.zeros(num_envs, dtype=np.int64)
    ep_ret = np.zeros(num_envs)
    ep_len = np.zeros(num_envs, dtype=np.int64)
    waiting = np.zeros(num_envs, dtype=bool)  # cut at max_steps, waiting for the game's own end
    returns: list[np.ndarray] = []
    lengths: list[np.ndarray] = []
    levels: list[np.ndarray] = []
    truncs: list[np.ndarray] = []
    from tqdm.auto import tqdm

    bar = tqdm(
        total=num_episodes,
        unit="ep",
        desc=f"{env_name} levels {start_level}+",
        disable=not progress,
        mininterval=2,
    )
    obs = env.reset()
    level = env.level_seeds
    while (done_count < quota).any():
        obs, rew, done, _ = env.step(act_fn(obs))
        counting = (done_count < quota) & ~waiting
        ep_ret += np.where(counting, rew, 0.0)
        ep_len += counting
        cut = counting & ~done & (ep_len >= max_steps) if max_steps else np.zeros_like(done)
        finished = counting & (done | cut)
        if finished.any():
            idx = np.flatnonzero(finished)
            returns.append(ep_ret[idx].copy())
            lengths.append(ep_len[idx].copy())
            levels.append(level[idx].copy())
            truncs.append(cut[idx].copy())
            done_count[idx] += 1
            bar.update(len(idx))
            ep_ret[idx] = 0.0
            ep_len[idx] = 0
        waiting = (waiting | cut) & ~done
        if done.any():
            level[done] = env.level_seeds[done]
    bar.close()
    env.close()
    return EpisodeStats(
        np.concatenate(returns),
        np.concatenate(lengths),
        np.concatenate(levels),
        np.concatenate(truncs),
    )


def load_act_fn(
    load_path: str,
    env_name: str | None,
    *,
    device: str = "auto",
    precision: str = "auto",
    deterministic: bool = False,
    seed: int = 0,
) -> tuple[ActFn, dict]:
    """(act_fn, checkpoint meta) for a checkpoint path (.zip or weights-only .safetensors),
    or for ``"random"`` (then ``env_name`` is required). UserError for a missing/corrupt
    checkpoint or one of another game."""
    if load_path == "random":
        if env_name is None:
            raise UserError("--env_name is required with --load_path random")
        return random_act_fn(seed), {"env_name": env_name}
    from trex.common.device import pick_device
    from trex.rl.checkpoints import load_policy
    from trex.rl.policy import act

    policy, meta = load_policy(load_path, pick_device(device), precision, expected_env=env_name)
    return (lambda obs: act(policy, obs, deterministic)), meta


def load_configured_policy(cfg: PolicyConfig) -> tuple[ActFn, dict, tuple[str, str, bool]]:
    """The policy a :class:`~trex.rl.config.PolicyConfig` names, seeded by ``cfg.seed`` (the
    policy samples its actions with torch's generator): (act_fn, checkpoint meta,
    (env_name, distribution_mode, use_backgrounds) from the flags, else the checkpoint)."""
    from trex.common.runs import seed_everything

    seed_everything(cfg.seed)
    act_fn, meta = load_act_fn(
        cfg.load_path,
        cfg.env_name,
        device=cfg.device,
        precision=cfg.precision,
        deterministic=cfg.deterministic,
        seed=cfg.seed,
    )
    return act_fn, meta, cfg.game(meta)
