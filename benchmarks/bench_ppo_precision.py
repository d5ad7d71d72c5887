"""Claim: PPO env-steps/s with ``--precision auto`` (channels_last, bf16 autocast where the CPU
has native bf16, minibatches in chunks) against plain fp32 (``--precision fp32``).

Same configuration for both (train-procgen's PPO on starpilot, IMPALA CNN); the two are
interleaved in one process (auto, fp32, auto, fp32, ...) so machine noise hits both alike;
the first update of each is a warm-up and is not timed. The record carries the CPU model and
flags (benchmarks/machine.py).

    python benchmarks/bench_ppo_precision.py --num_envs 64 --nsteps 256 --updates 2
    # train-procgen's minibatch (2048 samples) at a smaller rollout, an AVX2 CPU emulated:
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 TREX_CPU_FLAGS="avx2 fma" \
        python benchmarks/bench_ppo_precision.py --num_envs 32 --nsteps 128 --nminibatches 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from stable_baselines3.common.vec_env import VecNormalize  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import machine_record  # noqa: E402

from trex.common.envs import make_procgen_env
from trex.rl.policy import build_ppo


def time_updates(precision: str, args: argparse.Namespace, seed: int) -> float:
    """Env-steps/s over ``args.updates`` PPO updates after one warm-up update."""
    env = VecNormalize(
        make_procgen_env(args.env_name, args.num_envs, seed=seed),
        norm_obs=False,
        norm_reward=True,
        gamma=0.999,
    )
    model = build_ppo(
        env,
        nsteps=args.nsteps,
        nminibatches=args.nminibatches,
        ppo_epochs=3,
        learning_rate=5e-4,
        gamma=0.999,
        lam=0.95,
        clip_range=0.2,
        ent_coef=0.01,
        seed=seed,
        device=torch.device("cpu"),
        precision=precision,
    )
    per_update = args.num_envs * args.nsteps
    model.learn(per_update)  # warm-up
    t0 = time.perf_counter()
    model.learn(per_update * args.updates, reset_num_timesteps=False)
    return per_update * args.updates / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env_name", default="starpilot")
    p.add_argument("--num_envs", type=int, default=64)
    p.add_argument("--nsteps", type=int, default=256)
    p.add_argument("--nminibatches", type=int, default=8)
    p.add_argument("--updates", type=int, default=2, help="timed updates per repetition")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: robust on a shared machine)"
    )
    p.add_argument("--out", default=None, help="write the summary as JSON here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, list[float]] = {"fast": [], "fp32": []}
    for rep in range(args.repeats):
        for name, precision in (("fast", "auto"), ("fp32", "fp32")):
            sps = time_updates(precision, args, seed=rep)
            results[name].append(sps)
            print(f"rep {rep} {name:>4}: {sps:7.1f} env-steps/s", flush=True)
    fast, fp32 = (sum(v) / len(v) for v in (results["fast"], results["fp32"]))
    summary = {
        "config": vars(args),
        "machine": machine_record(torch.get_num_threads()),
        "fast_steps_per_s": round(fast, 1),
        "fp32_steps_per_s": round(fp32, 1),
        "ratio": round(fast / fp32, 2),
        "runs": results,
    }
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
