"""Shared fixtures: a tiny real PPO checkpoint directory, made once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_PPO_FLAGS = ["--num_envs", "2", "--nsteps", "16", "--nminibatches", "2", "--ppo_epochs", "1",
                  "--save_interval", "1"]


@pytest.fixture(scope="session")
def tiny_expert(tmp_path_factory) -> Path:
    """A coinrun checkpoint directory from 3 tiny PPO updates (3 checkpoints + manifest)."""
    from trex.train_policy import main

    log_dir = tmp_path_factory.mktemp("experts")
    assert main(["--env_name", "coinrun", *TINY_PPO_FLAGS, "--timesteps_per_proc", "96",
                 "--log_dir", str(log_dir), "--seed", "1"]) == 0
    return log_dir / "coinrun" / "easy"


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Toy-size tensors gain nothing from 2 threads, and on a busy 2-core machine torch's
    thread pool makes small forwards 10-20x slower (measured, benchmarks/README.md)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
