"""Where a reward pays around episode ends: a diagnostic for train_preferences --end_penalty.

A policy (a checkpoint, or ``random``) plays ``--num_envs`` games for ``--steps`` steps on
unseen levels; each reward model scores every frame the policy acted on, and the mean reward
per frame is reported for three kinds of frame: the ``--k`` frames before a failed episode end
(a death or the time limit: the actions that led to it), the first ``--k`` frames of an episode,
and every other frame. A reward that learned to punish dying pays less on the first kind;
one that learned the penalty from what follows a death (a level's start frames, which in
train_preferences' segments follow a death) pays less on the second, and PPO, which sees the
episode end, cannot trace that back to the actions before it.

    python scripts/reward_at_episode_ends.py --env_name fruitbot --load_path random \\
        --reward_model study_rewards/model_files/fruitbot_pref1k_s1.safetensors \\
        study_rewards/model_files/fruitbot_end1k_s1.safetensors --out reward_at_ends.csv
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import pandas as pd

from trex.common.cli import setup_logging
from trex.common.envs import make_procgen_env
from trex.reward import load_reward_function
from trex.rl import load_act_fn

log = logging.getLogger("reward_at_episode_ends")


def frame_kinds(dones: np.ndarray, failed: np.ndarray, k: int) -> np.ndarray:
    """int8 (T, N) per frame acted on: 1 among the k frames up to and including a failed
    end's, 2 among an episode's first k frames (the first rollout frame counts as a start),
    0 otherwise (a frame that is both counts as 1). ``dones``, ``failed``: bool (T, N)."""
    steps, n = dones.shape
    kind = np.zeros((steps, n), dtype=np.int8)
    since_start = np.zeros(n, dtype=np.int64)
    for t in range(steps):  # starts: count forward from each reset
        kind[t][since_start < k] = 2
        since_start = np.where(dones[t], 0, since_start + 1)
    until_end = np.full(n, k, dtype=np.int64)
    for t in range(steps - 1, -1, -1):  # failed ends: count back from each
        until_end = np.where(failed[t], 0, until_end + 1)
        kind[t][until_end < k] = 1
    return kind


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env_name", required=True)
    p.add_argument("--load_path", default="random", help="policy checkpoint or 'random'")
    p.add_argument("--reward_model", nargs="+", required=True)
    p.add_argument("--num_envs", type=int, default=32)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--k", type=int, default=5, help="frames counted at each end and start")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="CSV of the means (printed either way)")
    args = p.parse_args(argv)
    setup_logging()

    act, _ = load_act_fn(args.load_path, args.env_name, seed=args.seed)
    env = make_procgen_env(args.env_name, args.num_envs, start_level=10**9, num_levels=10**9,
                           seed=args.seed)  # fmt: skip
    obs = env.reset()
    frames = np.empty((args.steps, args.num_envs, 3, 64, 64), dtype=np.uint8)
    dones = np.zeros((args.steps, args.num_envs), dtype=bool)
    failed = np.zeros_like(dones)
    for t in range(args.steps):
        frames[t] = obs
        obs, _, done, infos = env.step(act(obs))
        dones[t] = done
        failed[t] = done & ~np.array([i.get("level_complete", False) for i in infos])
    kind = frame_kinds(dones, failed, args.k).reshape(-1)
    flat = frames.reshape(-1, 3, 64, 64)
    rows = []
    for path in args.reward_model:
        fn = load_reward_function(path, env_name=args.env_name)
        r = np.concatenate([fn(flat[i : i + 512]) for i in range(0, len(flat), 512)])
        rows.append(
            {
                "reward_model": path,
                "failed_ends": int(failed.sum()),
                "before_failed_end": float(r[kind == 1].mean()),
                "episode_start": float(r[kind == 2].mean()),
                "other": float(r[kind == 0].mean()),
                "std_all": float(r.std()),
            }
        )
    table = pd.DataFrame(rows)
    log.info("%s on %d frames (k=%d):\n%s", args.load_path, len(flat), args.k, table.to_string())
    if args.out:
        table.to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
