"""Shared fixtures: a tiny real PPO checkpoint directory, made once per test session; and
:func:`run_main`, a stage run in the test's own process."""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import subprocess
from pathlib import Path

import pytest

TINY_PPO_FLAGS = [
    "--num_envs",
    "2",
    "--nsteps",
    "16",
    "--nminibatches",
    "2",
    "--ppo_epochs",
    "1",
    "--save_interval",
    "1",
]


def run_main(module: str, argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``python -m <module> argv`` from ``cwd``, as ``<module>.main(argv)`` in this process
    (the same code, without a new interpreter's imports): its exit status and its stdout and
    stderr, captured as a child's would be."""
    out, err = io.StringIO(), io.StringIO()
    before = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = importlib.import_module(module).main(argv)
    finally:
        os.chdir(before)
    return subprocess.CompletedProcess([module, *argv], status, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def tiny_expert(tmp_path_factory) -> Path:
    """A coinrun checkpoint directory from 3 tiny PPO updates (3 checkpoints + manifest)."""
    from trex.train_policy import main

    log_dir = tmp_path_factory.mktemp("experts")
    assert (
        main(
            [
                "--env_name",
                "coinrun",
                *TINY_PPO_FLAGS,
                "--timesteps_per_proc",
                "96",
                "--log_dir",
                str(log_dir),
                "--seed",
                "1",
            ]
        )
        == 0
    )
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


# tiny train_reward runs (a few seconds each): 40 snippet pairs, one epoch
TINY_TRAIN_REWARD = [
    "--num_snippets",
    "40",
    "--epoch_size",
    "20",
    "--max_num_epochs",
    "1",
    "--patience",
    "1",
    "--min_snippet_length",
    "5",
    "--max_snippet_length",
    "10",
    "--num_val_snippets",
    "10",
    "--num_test_snippets",
    "10",
    "--batch_size",
    "8",
]


def make_tiny_demos(root: Path, num_train: int = 12, num_test: int = 4, length: int = 20) -> Path:
    """Synthetic starpilot demos written with the demo store; returns the index CSV."""
    import numpy as np

    from trex.demos.store import append_index, write_demo

    rng = np.random.default_rng(0)
    rows = []
    for i in range(num_train + num_test):
        set_name = "train" if i < num_train else "test"
        ret = float(i % num_train)
        T = length + i % 5
        obs = rng.integers(0, 40, size=(T, 64, 64, 3), dtype=np.uint8)
        obs[:, :8, :8, :] = int(ret * 20)  # brightness tells the return: learnable
        rewards = np.zeros(T, np.float32)
        rewards[-1] = ret
        demo_id = f"tiny_{i:03d}"
        write_demo(root / "demo_files", demo_id, obs, rng.integers(0, 15, T), rewards)
        rows.append(
            {
                "demo_id": demo_id,
                "env_name": "starpilot",
                "mode": "easy",
                "length": T,
                "return": ret,
                "set_name": set_name,
                "sequential": 0,
                "level_seed": i if set_name == "train" else 10**9 + i,
                "policy": "synthetic",
                "noise": 0.0,
                "file": f"demo_files/{demo_id}.npz",
            }
        )
    append_index(root / "demo_infos.csv", rows)
    return root / "demo_infos.csv"
