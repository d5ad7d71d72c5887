"""Benchmark: a sweep of 8 small reward models, ``--jobs 2`` against ``--jobs 1``.

Measures, for the same grid run into separate directories (so nothing is skipped), with
``--jobs 1`` (the sweep then gives each run all cores' threads), ``--jobs 1`` with
``OMP_NUM_THREADS=1`` (a reference separating run-level parallelism from threading) and
``--jobs 2`` (one thread per run):
wall time of the whole sweep, total CPU time of all its processes (from the kernel's
accounting of waited-for children), CPU use (CPU time / wall time / cores), and checks that
``rm_infos.csv`` has every run's row exactly once (no row missing or duplicated).

    python benchmarks/bench_sweep.py                 # 8 models, tiny synthetic demos
    python benchmarks/bench_sweep.py --num_runs 8 --repeats 2 --out bench_sweep.json

The demos are synthetic (random frames, known returns), written with the demo store, so
the benchmark needs no policy; per-run settings are small (a few hundred snippet pairs)
so one reward model takes tens of seconds on a CPU core. The machine may be shared:
the load average before and after each sweep is recorded next to the times.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from trex.demos.store import append_index, write_demo


def make_demos(
    root: Path, num_train: int = 12, num_test: int = 6, length: int = 60, seed: int = 0
) -> Path:
    """Tiny synthetic demos: frames whose brightness grows with the return (learnable)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(num_train + num_test):
        set_name = "train" if i < num_train else "test"
        ret = float(i % num_train)
        T = length + int(rng.integers(0, 20))
        obs = rng.integers(0, 40, size=(T, 64, 64, 3), dtype=np.uint8)
        obs[:, :8, :8, :] = min(255, int(ret * 20))
        rewards = np.zeros(T, np.float32)
        rewards[-1] = ret
        demo_id = f"bench_{set_name}_{i:03d}"
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
                "level_seed": int(i if set_name == "train" else 1_000_000_000 + i),
                "policy": "synthetic",
                "noise": 0.0,
                "file": f"demo_files/{demo_id}.npz",
            }
        )
    csv_path = root / "demo_infos.csv"
    append_index(csv_path, rows)
    return csv_path


def run_sweep(
    workdir: Path,
    demo_csv: Path,
    jobs: int,
    num_runs: int,
    stage_args: list[str],
    name: str,
    env: dict | None = None,
) -> dict:
    """One sweep as a child process; wall and CPU time of it and all its descendants."""
    save_dir = workdir / name
    cmd = [
        sys.executable,
        "-m",
        "trex.run_experiments",
        "--env_name",
        "starpilot",
        "--num_dems",
        "8",
        "--num_seeds",
        str(num_runs),
        "--jobs",
        str(jobs),
        "--demo_csv",
        str(demo_csv),
        "--save_dir",
        str(save_dir),
        "--pass_args",
        " ".join(stage_args),
    ]
    load_before = os.getloadavg()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=workdir, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_after = os.getloadavg()
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"sweep with --jobs {jobs} failed (exit {proc.returncode})")
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {
        "name": name,
        "jobs": jobs,
        "wall_s": wall,
        "cpu_s": cpu,
        "load_before": load_before[0],
        "load_after": load_after[0],
        **check_rows(save_dir, num_runs),
    }


def check_rows(save_dir: Path, expected: int) -> dict:
    """rm_infos.csv against the manifest: every run's rm_id (from its seed) exactly once."""
    from trex.reward.registry import rm_id_from_seed

    with (save_dir / "rm_infos.csv").open(newline="") as f:
        rm_ids = [r["rm_id"] for r in csv.DictReader(f)]
    with (save_dir / "sweep_manifest.csv").open(newline="") as f:
        manifest = list(csv.DictReader(f))
    want = sorted(rm_id_from_seed(int(r["seed"])) for r in manifest if r["status"] == "done")
    return {
        "rows": len(rm_ids),
        "runs_done": len(want),
        "rows_ok": sorted(rm_ids) == want
        and len(want) == expected
        and len(set(rm_ids)) == expected,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num_runs", type=int, default=8)
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="repeat all sweeps, in reverse order every other time",
    )
    p.add_argument("--workdir", default=None, help="default: a temporary directory")
    p.add_argument(
        "--no_thread_ref",
        action="store_true",
        help="skip the --jobs 1 sweep with one thread per run",
    )
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument(
        "--stage_args",
        default="--num_snippets 300 --max_num_epochs 2 --epoch_size 150 "
        "--patience 2 --min_snippet_length 10 --max_snippet_length 30",
        help="train_reward flags for every run (small models)",
    )
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as tmp:
        workdir = Path(args.workdir or tmp)
        demo_csv = make_demos(workdir / "demos")
        # the sweep's default: --jobs N gives each run cores/N threads (2 for --jobs 1 here);
        # "jobs1_1thread" (OMP_NUM_THREADS=1) separates run-level parallelism from threading
        configs = [("jobs1", 1, None), ("jobs2", 2, None)]
        if not args.no_thread_ref:
            configs.insert(
                1, ("jobs1_1thread", 1, {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
            )
        results = []
        for rep in range(args.repeats):
            order = configs if rep % 2 == 0 else configs[::-1]
            res = {}
            for name, jobs, env in order:
                rdir = workdir / f"rep{rep}"
                rdir.mkdir(parents=True, exist_ok=True)
                r = res[name] = run_sweep(
                    rdir, demo_csv, jobs, args.num_runs, args.stage_args.split(), name, env
                )
                print(
                    f"rep {rep} {name}: wall {r['wall_s']:.1f}s cpu {r['cpu_s']:.1f}s "
                    f"load {r['load_before']:.2f}->{r['load_after']:.2f} "
                    f"rows {r['rows']} ok={r['rows_ok']}",
                    flush=True,
                )
            results.append(res)
    cores = len(os.sched_getaffinity(0))
    lines = [
        "| repeat | sweep | wall s | CPU s | CPU use (of all cores) | load avg before/after "
        "| rows ok |",
        "|---|---|---|---|---|---|---|",
    ]
    for rep, res in enumerate(results):
        for name, _, _ in configs:
            r = res[name]
            lines.append(
                f"| {rep} | {name} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
                f"{r['cpu_s'] / r['wall_s'] / cores:.0%} | {r['load_before']:.2f} / "
                f"{r['load_after']:.2f} | {r['rows']}/{args.num_runs} "
                f"{'yes' if r['rows_ok'] else 'NO'} |"
            )
    lines.append("")
    ratios = {}
    for name, _, _ in configs[:-1]:
        ratios[name] = [res[name]["wall_s"] / res["jobs2"]["wall_s"] for res in results]
        lines.append(f"wall time {name} / jobs2: {', '.join(f'{x:.2f}x' for x in ratios[name])}")
    lines.append(
        f"(machine: {platform.machine()}, {cores} cores; load average = other work on the machine)"
    )
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text(
            json.dumps({"results": results, "ratios": ratios, "cores": cores}, indent=2)
        )
    if not all(r["rows_ok"] for res in results for r in res.values()):
        raise SystemExit("rm_infos.csv rows missing or duplicated")


if __name__ == "__main__":
    main()
