"""Claim: PPO env-steps/s with ``--precision auto`` (channels_last, bf16 autocast where the CPU
has native bf16, minibatches in chunks) against plain fp32: ``--precision fp32`` (NCHW, the
minibatch in the same chunks) and, with ``--configs fast fp32 fp32_whole``, stock
stable-baselines3's fp32 (NCHW, the minibatch in one call).

Same configuration for all (train-procgen's PPO on starpilot, IMPALA CNN); they are
interleaved in one process (auto, fp32, auto, fp32, ...) so machine noise hits them alike;
the first update of each is a warm-up and is not timed. The record carries the CPU model and
flags (benchmarks/machine.py).

    python benchmarks/bench_ppo_precision.py --num_envs 64 --nsteps 256 --updates 2
    # train-procgen's minibatch (2048 samples) at a smaller rollout, an AVX2 CPU emulated:
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
        TREX_CPU_FLAGS="avx2 fma" python benchmarks/bench_ppo_precision.py --num_envs 32 \
        --nsteps 128 --nminibatches 2 --configs fast fp32 fp32_whole
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch
from stable_baselines3.common.vec_env import VecNormalize  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import machine_record  # noqa: E402

from trex.common.device import CPU_CHUNKS  # noqa: E402
from trex.common.envs import make_procgen_env
from trex.rl.policy import build_ppo

#: the configurations compared: name -> (--precision, PPO minibatch in chunks on a CPU)
CONFIGS = {"fast": ("auto", True), "fp32": ("fp32", True), "fp32_whole": ("fp32", False)}


@contextlib.contextmanager
def minibatch_chunks(enabled: bool):
    """The policy's CPU chunking of a PPO minibatch as it is (enabled) or off: the whole
    minibatch in one call, what stock stable-baselines3 runs."""
    key = ("ppo_train", "impala", False)
    saved = CPU_CHUNKS[key]
    if not enabled:
        CPU_CHUNKS[key] = None
    try:
        yield
    finally:
        CPU_CHUNKS[key] = saved


def time_updates(config: str, args: argparse.Namespace, seed: int) -> float:
    """Env-steps/s over ``args.updates`` PPO updates after one warm-up update."""
    precision, chunks = CONFIGS[config]
    with minibatch_chunks(chunks):
        return _time_updates(precision, args, seed)


def _time_updates(precision: str, args: argparse.Namespace, seed: int) -> float:
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
    p.add_argument(
        "--configs",
        nargs="+",
        choices=sorted(CONFIGS),
        default=["fast", "fp32"],
        help=(
            "what to compare: fast (--precision auto), fp32 (--precision fp32: NCHW, the "
            "minibatch in chunks), fp32_whole (--precision fp32 with the minibatch in one call: "
            "stock stable-baselines3); the first is the numerator of every ratio"
        ),
    )
    p.add_argument("--out", default=None, help="write the summary as JSON here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, list[float]] = {name: [] for name in args.configs}
    for rep in range(args.repeats):
        for name in args.configs:
            sps = time_updates(name, args, seed=rep)
            results[name].append(sps)
            print(f"rep {rep} {name:>10}: {sps:7.1f} env-steps/s", flush=True)
    mean = {name: sum(v) / len(v) for name, v in results.items()}
    first = args.configs[0]
    summary = {
        "config": vars(args),
        "machine": machine_record(torch.get_num_threads()),
        **{f"{name}_steps_per_s": round(v, 1) for name, v in mean.items()},
        **{f"ratio_{first}_vs_{n}": round(mean[first] / mean[n], 2) for n in args.configs[1:]},
        "runs": results,
    }
    if "ratio_fast_vs_fp32" in summary:
        summary["ratio"] = summary["ratio_fast_vs_fp32"]  # the key of earlier records
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
