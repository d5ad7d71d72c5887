"""Film a policy: the frames of several environments it plays at once, for an MP4."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trex.rl.config import VisualizePolicyConfig


def film_policy(cfg: VisualizePolicyConfig) -> tuple[np.ndarray, Path]:
    """(frames uint8 (video_length, num_screens, 64, 64, 3), the video's path): the policy
    of ``cfg.load_path`` (or a random one) playing ``num_screens`` environments on levels
    [start_level, start_level + num_levels). UserError for a missing, corrupt or mismatched
    checkpoint."""
    from tqdm.auto import tqdm

    from trex.common.envs import make_procgen_env
    from trex.rl.evaluation import load_configured_policy

    act_fn, meta, (env_name, mode, backgrounds) = load_configured_policy(cfg)
    env = make_procgen_env(
        env_name,
        cfg.num_screens,
        mode,
        cfg.start_level,
        cfg.num_levels,
        False,
        backgrounds,
        cfg.seed,
    )
    frames = np.empty((cfg.video_length, cfg.num_screens, 64, 64, 3), dtype=np.uint8)
    obs = env.reset()
    for t in tqdm(range(cfg.video_length), desc="filming", unit="frame", mininterval=2):
        frames[t] = env.last_rgb
        obs, _, _, _ = env.step(act_fn(obs))
    env.close()
    return frames, cfg.out_path(env_name)
