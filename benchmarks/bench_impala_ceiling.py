"""Benchmark: how close a PPO expert run comes to the IMPALA network's own speed limit here.

PPO with train-procgen's settings does, per environment step, one policy forward (batched
over the 64 environments) and, per update, ``ppo_epochs`` (3) forward+backward passes over
every sample. This script times exactly those two network workloads with the policy PPO
trains (trex.rl.policy.ImpalaPolicy, fast path by default), in the same process, and derives
the ceiling in environment steps per second that the network alone allows:

    ceiling = 1 / (1 / rollout_rate + ppo_epochs / train_rate)

Given expert runs' ``progress.csv`` files (``--progress``), it reports their measured
env-steps/s (median over updates, the first excluded) as a fraction of that ceiling.

    python benchmarks/bench_impala_ceiling.py --threads 1 --progress experts/*/easy/progress.csv
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from gymnasium import spaces

# Run as a script from anywhere: put the repository root on the path before importing trex.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trex.common.device import pick_device
from trex.common.envs import NUM_ACTIONS
from trex.rl.policy import ImpalaPolicy, precision_flags


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (expert runs used 1)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32"))
    p.add_argument("--num_envs", type=int, default=64)
    p.add_argument(
        "--minibatch", type=int, default=2048, help="64 envs x 256 steps / 8 minibatches"
    )
    p.add_argument("--ppo_epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--progress", nargs="*", default=[], help="progress.csv files of expert runs")
    p.add_argument("--out", default=None, help="JSON file for the numbers")
    return p.parse_args()


def timed(fn, repeats: int, device: torch.device) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls, after two warm-up calls.

    On CUDA each call is closed by a synchronize, so the time covers the GPU work, not only its
    launch.
    """

    def call() -> None:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    call()
    call()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    device = pick_device("auto")
    flags = precision_flags(args.precision, device)
    policy = ImpalaPolicy(
        spaces.Box(0, 255, (3, 64, 64), np.uint8),
        spaces.Discrete(NUM_ACTIONS),
        lambda _: 5e-4,
        **flags,
    ).to(device)
    rng = np.random.default_rng(0)
    rollout_obs = torch.as_tensor(
        rng.integers(0, 255, (args.num_envs, 3, 64, 64), dtype=np.uint8), device=device
    )
    batch_obs = torch.as_tensor(
        rng.integers(0, 255, (args.minibatch, 3, 64, 64), dtype=np.uint8), device=device
    )
    actions = torch.as_tensor(rng.integers(0, NUM_ACTIONS, args.minibatch), device=device)

    @torch.no_grad()
    def rollout() -> None:
        policy.forward(rollout_obs)

    def train() -> None:
        values, log_prob, entropy = policy.evaluate_actions(batch_obs, actions)
        loss = -(log_prob.mean()) + 0.5 * values.pow(2).mean() - 0.01 * entropy.mean()
        policy.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 0.5)
        policy.optimizer.step()

    t_roll = timed(rollout, args.repeats * 4, device)
    t_train = timed(train, args.repeats, device)
    rollout_rate = args.num_envs / t_roll
    train_rate = args.minibatch / t_train
    ceiling = 1.0 / (1.0 / rollout_rate + args.ppo_epochs / train_rate)
    result = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__,
        "threads": args.threads,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "bf16": bool(flags["bf16"]),
        "channels_last": bool(flags["channels_last"]),
        "rollout_forward_samples_per_s": round(rollout_rate, 1),
        "train_fwd_bwd_samples_per_s": round(train_rate, 1),
        "ppo_ceiling_env_steps_per_s": round(ceiling, 1),
        "runs": {},
    }
    for path in args.progress:
        import pandas as pd

        df = pd.read_csv(path)
        fps = np.diff(df["timesteps"].to_numpy()) / np.diff(df["elapsed_s"].to_numpy())
        fps = fps[np.isfinite(fps) & (fps > 0)]
        med = float(np.median(fps[1:] if len(fps) > 1 else fps)) if len(fps) else float("nan")
        result["runs"][path] = {
            "env_steps_per_s": round(med, 1),
            "fraction_of_ceiling": round(med / ceiling, 3),
            "timesteps": int(df["timesteps"].iloc[-1]),
        }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
