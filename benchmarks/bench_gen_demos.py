"""Benchmark: demo collection throughput, batched vs one environment at a time, and the
disk cost of stored demos.

Arms (same checkpoint, same machine, same run):

* ``batched``: trex's gen_demos path (``generate_demos``): ``--num_envs`` environments,
  one batched policy forward per step, demos compressed and indexed on a writer thread.
* ``seed``: the original project's way: for every demo, reload the checkpoint, build a
  one-environment game on one level, play the episode one step (one forward) at a time,
  then store it.
* ``single``: one environment at a time but the policy loaded once (separates the gain
  from batching from the gain of not reloading).

Reported: demo steps per second (stored frames / wall time) of each arm, the ratios, the
mean episode lengths, and disk bytes per stored frame against 64*64*3 = 12288 raw bytes.

    python benchmarks/bench_gen_demos.py --checkpoint experts/starpilot/easy/checkpoint_X.zip
    python benchmarks/bench_gen_demos.py            # trains a tiny checkpoint first (weights
                                                    # do not change the cost of a forward)
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("bench_gen_demos")


def tiny_checkpoint(root: Path) -> Path:
    """Train a tiny starpilot checkpoint (a few seconds) and return its path."""
    from trex.rl.checkpoints import read_manifest
    from trex.train_policy import main as train_main

    rc = train_main(
        [
            "--env_name",
            "starpilot",
            "--num_envs",
            "2",
            "--nsteps",
            "16",
            "--nminibatches",
            "2",
            "--ppo_epochs",
            "1",
            "--timesteps_per_proc",
            "32",
            "--save_interval",
            "1",
            "--log_dir",
            str(root),
            "--seed",
            "0",
        ]
    )
    assert rc == 0
    d = root / "starpilot" / "easy"
    return d / read_manifest(d)["file"].iloc[-1]


def seed_way(
    checkpoint: Path,
    env_name: str,
    num_dems: int,
    max_ep_len: int,
    out_dir: Path,
    reload_each: bool,
    seed: int,
    precision: str,
) -> tuple[int, float, list[int]]:
    """One environment at a time (optionally reloading the checkpoint for every demo):
    (demo steps, seconds, lengths)."""
    from trex.common.envs import make_procgen_env
    from trex.demos.store import write_demo
    from trex.rl.checkpoints import load_policy
    from trex.rl.policy import act

    rng = np.random.default_rng(seed)
    steps, lengths = 0, []
    policy = None
    t0 = time.perf_counter()
    for d in range(num_dems):
        if reload_each or policy is None:
            policy, _ = load_policy(
                checkpoint, device="cpu", precision=precision, expected_env=env_name
            )
        level = int(rng.integers(0, 1_000_000_000))
        env = make_procgen_env(env_name, 1, "easy", level, 1, False, True, seed=seed + d)
        obs = env.reset()
        frames = np.empty((max_ep_len, 64, 64, 3), dtype=np.uint8)
        actions = np.empty(max_ep_len, dtype=np.int64)
        rewards = np.empty(max_ep_len, dtype=np.float32)
        t = 0
        while t < max_ep_len:
            frames[t] = env.last_rgb[0]
            a = act(policy, obs)
            obs, r, done, _ = env.step(a)
            actions[t], rewards[t] = a[0], r[0]
            t += 1
            if done[0]:
                break
        env.close()
        write_demo(out_dir, f"d{d}", frames[:t], actions[:t], rewards[:t])
        steps += t
        lengths.append(t)
    return steps, time.perf_counter() - t0, lengths


def forward_ceiling(checkpoint: Path, num_envs: int, precision: str) -> dict[str, float]:
    """Policy forwards alone: observations per second at batch 1 and batch ``num_envs``
    (the most batching can gain when the forward dominates)."""
    from trex.rl.checkpoints import load_policy
    from trex.rl.policy import act

    policy, _ = load_policy(checkpoint, device="cpu", precision=precision)
    out = {}
    for n in (1, num_envs):
        obs = np.random.default_rng(0).integers(0, 256, (n, 3, 64, 64), dtype=np.uint8)
        act(policy, obs)
        reps = max(3, 200 // n)
        t0 = time.perf_counter()
        for _ in range(reps):
            act(policy, obs)
        out[f"batch_{n}"] = n * reps / (time.perf_counter() - t0)
    return out


def deflate_levels(files: list[Path]) -> dict[str, dict[str, float]]:
    """Bytes per frame and write speed of some stored demos re-written at deflate levels
    1 (trex's NPZ_COMPRESSLEVEL) and 6 (np.savez_compressed's)."""
    import io

    from trex.demos.store import load_npz, savez_compressed

    demos = [load_npz(f) for f in files]
    frames = sum(len(d[1]) for d in demos)
    out = {}
    for level in (1, 6):
        size, t0 = 0, time.perf_counter()
        for obs, act, rew in demos:
            buf = io.BytesIO()
            savez_compressed(buf, level, observations=obs, actions=act, rewards=rew)
            size += buf.tell()
        sec = time.perf_counter() - t0
        out[f"level_{level}"] = {"bytes_per_frame": size / frames, "frames_per_s": frames / sec}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="policy .zip (default: train a tiny one)")
    p.add_argument("--env_name", default="starpilot")
    p.add_argument("--num_envs", type=int, default=64)
    p.add_argument(
        "--batched_dems", type=int, default=128, help="demos collected by the batched arm"
    )
    p.add_argument("--single_dems", type=int, default=8, help="demos collected by each one-env arm")
    p.add_argument("--max_ep_len", type=int, default=1000)
    p.add_argument(
        "--torch_threads",
        type=int,
        default=1,
        help="torch CPU threads (1 on a shared machine: OpenMP threads fighting for "
        "cores are far slower)",
    )
    p.add_argument("--precision", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    import torch

    from trex.demos.generation import CollectConfig, generate_demos
    from trex.demos.planning import DemoJob, checkpoint_source

    torch.set_num_threads(args.torch_threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = Path(args.checkpoint) if args.checkpoint else tiny_checkpoint(tmp / "experts")
        src = checkpoint_source(ckpt, args.env_name)
        results: dict = {
            "checkpoint": str(ckpt),
            "checkpoint_timesteps": src.timesteps,
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s), "
            f"{__import__('os').cpu_count()} cores",
            "args": vars(args),
        }

        # warm-up (imports, first oneDNN primitives) outside the timings
        seed_way(ckpt, args.env_name, 1, 20, tmp / "warm", False, args.seed, args.precision)
        results["forward_obs_per_s"] = forward_ceiling(ckpt, args.num_envs, args.precision)

        log.info("upstream's way: %d demos, 1 env, reload per demo", args.single_dems)
        s_steps, s_sec, s_len = seed_way(
            ckpt,
            args.env_name,
            args.single_dems,
            args.max_ep_len,
            tmp / "seed",
            True,
            args.seed,
            args.precision,
        )
        log.info("one env, policy loaded once: %d demos", args.single_dems)
        o_steps, o_sec, o_len = seed_way(
            ckpt,
            args.env_name,
            args.single_dems,
            args.max_ep_len,
            tmp / "single",
            False,
            args.seed + 1,
            args.precision,
        )

        log.info("batched: %d demos on %d envs", args.batched_dems, args.num_envs)
        cfg = CollectConfig(
            args.env_name,
            num_envs=args.num_envs,
            max_ep_len=args.max_ep_len,
            seed=args.seed,
            precision=args.precision,
            device="cpu",
        )
        jobs = [DemoJob(src, 0.0) for _ in range(args.batched_dems)]
        csv = tmp / "batched" / "demo_infos.csv"
        t0 = time.perf_counter()
        rows, stats = generate_demos(jobs, cfg, csv, tmp / "batched" / "demo_files", progress=True)
        b_sec = time.perf_counter() - t0  # includes env creation and the last writes
        b_steps = stats.demo_steps
        b_len = [r["length"] for r in rows]
        npz = sorted((tmp / "batched" / "demo_files").glob("*.npz"))
        disk = sum(f.stat().st_size for f in npz)
        results["deflate_levels"] = deflate_levels(npz[:16])

        results.update(
            {
                "batched": {
                    "demos": len(rows),
                    "demo_steps": b_steps,
                    "seconds": b_sec,
                    "steps_per_s": b_steps / b_sec,
                    "mean_length": float(np.mean(b_len)),
                    "env_steps": stats.env_steps,
                    "forwards": stats.forwards,
                    "useful_fraction": b_steps / max(stats.env_steps, 1),
                },
                "seed_way": {
                    "demos": len(s_len),
                    "demo_steps": s_steps,
                    "seconds": s_sec,
                    "steps_per_s": s_steps / s_sec,
                    "mean_length": float(np.mean(s_len)),
                },
                "single_loaded_once": {
                    "demos": len(o_len),
                    "demo_steps": o_steps,
                    "seconds": o_sec,
                    "steps_per_s": o_steps / o_sec,
                    "mean_length": float(np.mean(o_len)),
                },
                "disk_bytes_per_frame": disk / b_steps,
                "raw_bytes_per_frame": 64 * 64 * 3,
            }
        )
    r = results
    r["ratio_vs_seed_way"] = r["batched"]["steps_per_s"] / r["seed_way"]["steps_per_s"]
    r["ratio_vs_single_loaded_once"] = (
        r["batched"]["steps_per_s"] / r["single_loaded_once"]["steps_per_s"]
    )
    r["compression"] = r["raw_bytes_per_frame"] / r["disk_bytes_per_frame"]
    print(f"checkpoint {r['checkpoint']} ({r['checkpoint_timesteps']} steps); {r['machine']}")
    print(f"{'arm':<34}{'demos':>6}{'steps':>8}{'mean len':>10}{'seconds':>9}{'steps/s':>9}")
    for key, label in [
        ("batched", f"batched, {args.num_envs} envs"),
        ("seed_way", "1 env, reload per demo (seed)"),
        ("single_loaded_once", "1 env, policy loaded once"),
    ]:
        a = r[key]
        print(
            f"{label:<34}{a['demos']:>6}{a['demo_steps']:>8}{a['mean_length']:>10.1f}{a['seconds']:>9.1f}"
            f"{a['steps_per_s']:>9.1f}"
        )
    print(
        f"speed-up vs the original project's way: {r['ratio_vs_seed_way']:.1f}x; "
        f"vs one env loaded once: {r['ratio_vs_single_loaded_once']:.1f}x; "
        f"batched useful env steps {r['batched']['useful_fraction']:.0%}"
    )
    f = r["forward_obs_per_s"]
    print(
        f"policy forward alone: {f['batch_1']:.0f} obs/s at batch 1, "
        f"{f[f'batch_{args.num_envs}']:.0f} obs/s at batch {args.num_envs} "
        f"({f[f'batch_{args.num_envs}'] / f['batch_1']:.1f}x: the ceiling of batching "
        f"when the forward dominates)"
    )
    print(
        f"disk: {r['disk_bytes_per_frame']:.0f} bytes/frame vs {r['raw_bytes_per_frame']} raw "
        f"({r['compression']:.1f}x smaller)"
    )
    for level, v in r["deflate_levels"].items():
        print(
            f"  {level.replace('_', ' ')}: {v['bytes_per_frame']:.0f} bytes/frame, "
            f"{v['frames_per_s']:.0f} frames/s compressed"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
