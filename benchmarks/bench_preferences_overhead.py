"""Claim: learning the reward online (train_preferences) costs at most 30% env-steps/s over
plain PPO on the true reward (train_policy), same settings, one thread each, and the
preference buffer's memory stays within its stated bound.

Both stages run for real, side by side (one process each, one torch thread, as the study runs
them), for ``--updates`` PPO updates at the study's settings (64 envs x 256 steps, a 200-level
pool). train_preferences asks the study's queries per update (``--num_queries`` over a
``--study_updates``-update run, so the same schedule's first ``--updates`` rounds) and fits
as the study does. Where the extra time goes comes from its progress.csv (labelling and
segment cutting, reward fitting) and from timing the reward forward of one rollout; the
overhead of a whole study run is projected from them (the first round's larger fit paid once
over ``--study_updates`` updates).

    python benchmarks/bench_preferences_overhead.py --env_name coinrun --updates 4 \
        --out benchmarks/results/preferences_overhead_avx512bf16.json
    # the cheaper fit of the replay (bench_fit_pairs_replay.py)
    python benchmarks/bench_preferences_overhead.py --env_name coinrun --updates 4 --sequential \
        --fit_pairs 128 --initial_fit_pairs 1000 --out benchmarks/results/prefs_overhead_cheap.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from machine import machine_record  # noqa: E402


def start(module: str, argv: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", module, *argv], stdout=log.open("w"), stderr=subprocess.STDOUT,
        env=env, cwd=ROOT,
    )  # fmt: skip


def forward_seconds_per_rollout(num_envs: int, nsteps: int, architecture: str) -> float:
    """Seconds of the reward forward over one rollout (nsteps batched calls on num_envs)."""
    import torch

    from trex.common.device import pick_device, use_bf16
    from trex.preferences.loop import MemberRewards
    from trex.reward.nets import build_net, prepare_net

    torch.set_num_threads(1)
    dev = pick_device("cpu")
    scorer = MemberRewards(prepare_net(build_net(architecture), dev), dev, use_bf16("auto", dev))
    obs = np.random.default_rng(0).integers(0, 255, (num_envs, 3, 64, 64), dtype=np.uint8)
    for _ in range(3):
        scorer(obs)
    reps = 32
    t0 = time.perf_counter()
    for _ in range(reps):
        scorer(obs)
    return (time.perf_counter() - t0) / reps * nsteps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env_name", default="coinrun")
    p.add_argument("--updates", type=int, default=4)
    p.add_argument("--num_queries", type=int, default=5000)
    p.add_argument("--study_updates", type=int, default=31)
    p.add_argument("--architecture", default="seed_cnn")
    p.add_argument(
        "--fit_pairs", type=int, default=None, help="train_preferences --fit_pairs (its default)"
    )
    p.add_argument(
        "--initial_fit_pairs",
        type=int,
        default=None,
        help="train_preferences --initial_fit_pairs (its default)",
    )
    p.add_argument(
        "--batch_size",
        type=int,
        default=None,
        help="train_preferences --batch_size, comparisons per Adam step (its default)",
    )
    p.add_argument(
        "--sequential",
        action="store_true",
        help="run the two arms one after the other (on a machine with one free core)",
    )
    p.add_argument("--out", default=None)
    args = p.parse_args()
    from trex.preferences.schedule import query_schedule

    num_envs, nsteps = 64, 256
    per_update = num_envs * nsteps
    steps = per_update * args.updates
    schedule = query_schedule(args.num_queries, args.study_updates, 1, 0.1)
    queries = sum(schedule[u] for u in range(1, args.updates + 1))
    fit_flags = [
        f"--{name}={value}"
        for name in ("fit_pairs", "initial_fit_pairs", "batch_size")
        if (value := getattr(args, name)) is not None
    ]
    common = [
        "--env_name", args.env_name, "--num_levels", "200", "--timesteps_per_proc", str(steps),
        "--num_threads", "1", "--save_interval", str(args.updates), "--seed", "1",
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        t0 = time.perf_counter()
        arms = [
            ("train_policy", "p", [*common, "--log_dir", str(tmp_path / "p")]),
            ("train_preferences", "q",
             [*common, "--log_dir", str(tmp_path / "q"), "--num_queries", str(queries),
              "--initial_query_frac", f"{schedule[1] / max(queries, 1):.6f}",
              "--architecture", args.architecture, *fit_flags]),
        ]  # fmt: skip
        walls = {}

        def finish(name: str, log: str, proc: subprocess.Popen) -> None:
            if proc.wait() != 0:
                text = (tmp_path / f"{log}.log").read_text()
                raise SystemExit(f"{name} failed:\n{text[-3000:]}")
            walls[name] = time.perf_counter() - t0

        if args.sequential:
            for name, log, argv in arms:
                finish(name, log, start(f"trex.{name}", argv, tmp_path / f"{log}.log"))
        else:
            procs = [
                (n, log, start(f"trex.{n}", argv, tmp_path / f"{log}.log")) for n, log, argv in arms
            ]
            for name, log, proc in procs:
                finish(name, log, proc)
        pol = pd.read_csv(next((tmp_path / "p").rglob("progress.csv")))
        prf = pd.read_csv(next((tmp_path / "q").rglob("progress.csv")))
    fps_policy = float(pol["fps"].iloc[-1])
    fps_prefs = float(prf["fps"].iloc[-1])
    forward = forward_seconds_per_rollout(num_envs, nsteps, args.architecture)
    base_update = per_update / fps_policy
    fit_first = float(prf["fit_s"].iloc[0])
    fit_later = float(prf["fit_s"].iloc[1:].mean()) if len(prf) > 1 else float("nan")
    label = float(prf["label_s"].mean())
    projected = (
        (fit_first + (args.study_updates - 1) * fit_later) / args.study_updates + label + forward
    ) / base_update
    record = {
        "claim": "train_preferences costs at most 30% env-steps/s over train_policy (true reward)",
        "command": " ".join(sys.argv),
        "machine": machine_record(threads=1),
        "env_name": args.env_name,
        "updates": args.updates,
        "env_steps": steps,
        "queries": queries,
        "fit_flags": fit_flags,
        "train_policy_steps_per_s": fps_policy,
        "train_preferences_steps_per_s": fps_prefs,
        "overhead_measured": fps_policy / fps_prefs - 1,
        "seconds_per_update": {
            "ppo_true_reward": base_update,
            "reward_forward_in_rollout": forward,
            "labelling_and_segments": label,
            "reward_fit_first_round": fit_first,
            "reward_fit_later_rounds": fit_later,
        },
        "overhead_projected_study_run": projected,
        "buffer_gb_final": float(prf["buffer_gb"].iloc[-1]),
        "buffer_pairs_final": int(prf["buffer_pairs"].iloc[-1]),
        "arms": "one after the other" if args.sequential else "side by side",
        "wall_s": walls,
    }
    text = json.dumps(record, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
