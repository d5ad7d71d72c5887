"""The experts shipped in pretrained/<game>/: every file is in the manifest (and the other way
round), each loads, and the best one beats a random policy on the same unseen levels by a
margin well over the noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from trex.rl.checkpoints import (
    WEIGHTS_SUFFIX,
    load_policy,
    read_checkpoint_meta,
    read_manifest,
)

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"
GAMES = (
    sorted(p.name for p in PRETRAINED.iterdir() if (p / "checkpoints.csv").is_file())
    if PRETRAINED.is_dir()
    else []
)


def test_something_is_shipped():
    assert "starpilot" in GAMES  # make demo runs on it


@pytest.mark.parametrize("game", GAMES)
def test_manifest_lists_every_shipped_file(game):
    folder = PRETRAINED / game
    manifest = read_manifest(folder)
    files = {p.name for p in folder.glob(f"*{WEIGHTS_SUFFIX}")}
    assert set(manifest["file"]) == files and len(files) >= 2
    assert manifest["timesteps"].is_monotonic_increasing and manifest["mean_return"].notna().all()
    total = sum((folder / f).stat().st_size for f in files)
    assert total < 40 * 2**20 / max(len(GAMES), 1)  # the whole folder stays under 40 MB
    for f in manifest["file"]:
        meta = read_checkpoint_meta(folder / f)
        assert meta["env_name"] == game and meta["timesteps"] == int(
            manifest.loc[manifest["file"] == f, "timesteps"].iloc[0]
        )
        assert meta["num_levels"] > 0  # a training pool, never procgen's unbounded range


@pytest.mark.parametrize("game", GAMES)
def test_best_shipped_expert_beats_random(game):
    from trex.rl.evaluation import random_act_fn, run_episodes
    from trex.rl.policy import act

    folder = PRETRAINED / game
    manifest = read_manifest(folder)
    best = folder / manifest.sort_values("mean_return")["file"].iloc[-1]
    policy, _ = load_policy(best, device="cpu")
    torch.manual_seed(0)  # the policy samples its actions
    kw = dict(
        start_level=10**9,
        num_levels=10**9,
        num_episodes=24,
        num_envs=12,
        max_steps=600,
        seed=3,
        progress=False,
    )
    expert = run_episodes(lambda obs: act(policy, obs), game, **kw)
    rand = run_episodes(random_act_fn(3), game, **kw)
    diff = expert.returns.mean() - rand.returns.mean()
    se = np.sqrt(
        expert.returns.var(ddof=1) / len(expert.returns)
        + rand.returns.var(ddof=1) / len(rand.returns)
    )
    assert diff > 3 * se, (expert.returns.mean(), rand.returns.mean(), se)
