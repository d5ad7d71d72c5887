"""Benchmark: the cost of a train_reward epoch with each optimiser setting (issue 23, item 2).

docs/results/optimizer.md compares the T-REX optimiser settings at equal pairs (quality); this
script times them. Each setting trains train_reward for ``--epochs`` epochs of 500 pairs (the
studies' reduced budget, early stopping off) on the same demos and seed, in a process of its
own with one torch thread, one setting after another, the order rotated in every round so that
a drift in the machine's load falls on every setting alike. Per setting: the median over all
its epochs (every round) of the seconds per epoch (training plus the per-epoch evaluation,
what a user waits for), wall and CPU (process time: less sensitive to a busy other core), and
the ratio to one pair per step (``b1``, the original project's optimiser) in the same run.

    python benchmarks/bench_optimizer_time.py --demo_csv demos/demo_infos.csv --num_dems 50 \
        --out benchmarks/results/optimizer_time_avx512bf16.json
    # the AVX2 kind, emulated on an avx512 CPU (kernels capped at AVX2, auto picks fp32):
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 TREX_CPU_FLAGS="avx2 fma" \
        python benchmarks/bench_optimizer_time.py <the same> --out <...>_avx2_emulated.json
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from machine import machine_record  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: the settings of docs/results/optimizer.md
SETTINGS = {
    "b1": ["--batch_size", "1", "--lr_scaling", "none"],
    "b8": ["--batch_size", "8"],
    "b16": ["--batch_size", "16"],
    "b16n": ["--batch_size", "16", "--lr_scaling", "none"],
    "b64": ["--batch_size", "64"],
}
BUDGET = [
    "--num_snippets", "5000", "--min_snippet_length", "10", "--max_snippet_length", "50",
    "--epoch_size", "500", "--num_val_snippets", "500", "--num_test_snippets", "500",
]  # fmt: skip


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--demo_csv", required=True)
    p.add_argument("--env_name", default="starpilot")
    p.add_argument("--num_dems", type=int, default=50)
    p.add_argument("--seed", type=int, default=1140818)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--settings", nargs="+", default=["b1", "b16n", "b64"], choices=SETTINGS)
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def time_setting(args: argparse.Namespace, name: str, work: Path) -> dict:
    """Train one setting in a subprocess; seconds per epoch (wall, CPU) from its train_log."""
    logs = work / f"logs_{name}_{time.monotonic_ns()}"
    cmd = [
        sys.executable, "-m", "trex.train_reward", "--env_name", args.env_name,
        "--demo_csv", args.demo_csv, "--num_dems", str(args.num_dems), "--seed", str(args.seed),
        *BUDGET, "--max_num_epochs", str(args.epochs), "--patience", str(args.epochs + 1),
        "--save_dir", str(work / "rm"), "--log_dir", str(logs), "--save_name", "bench",
        "--overwrite", *SETTINGS[name],
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name}: train_reward failed\n{done.stderr[-2000:]}")
    import pandas as pd

    log = pd.read_csv(next(logs.rglob("train_log.csv")))
    wall = np.diff(np.concatenate([[0.0], log["wall_s"].to_numpy()]))
    cpu = np.diff(np.concatenate([[0.0], log["cpu_s"].to_numpy()]))
    return {"wall_s_per_epoch": wall.tolist(), "cpu_s_per_epoch": cpu.tolist()}


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    runs: dict[str, list[dict]] = {s: [] for s in args.settings}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_opt_") as tmp:
        for r in range(args.rounds):
            k = r % len(args.settings)
            order = args.settings[k:] + args.settings[:k]
            for name in order:
                runs[name].append(time_setting(args, name, Path(tmp)))
                print(f"round {r} {name}: {runs[name][-1]}", flush=True)
    summary = {}
    for name, rs in runs.items():
        wall = float(np.median([w for x in rs for w in x["wall_s_per_epoch"]]))
        cpu = float(np.median([c for x in rs for c in x["cpu_s_per_epoch"]]))
        summary[name] = {"wall_s_per_epoch": wall, "cpu_s_per_epoch": cpu}
    if "b1" in summary:
        for s in summary.values():
            s["b1_over_this_wall"] = summary["b1"]["wall_s_per_epoch"] / s["wall_s_per_epoch"]
            s["b1_over_this_cpu"] = summary["b1"]["cpu_s_per_epoch"] / s["cpu_s_per_epoch"]
    record = {
        "claim": "seconds per train_reward epoch (500 pairs + evaluation) per optimiser setting, "
        "as a ratio to one pair per step in the same run",
        "command": " ".join(["benchmarks/bench_optimizer_time.py", *(argv or sys.argv[1:])]),
        "machine": machine_record(threads=1),
        "settings": {k: SETTINGS[k] for k in args.settings},
        "epochs": args.epochs,
        "rounds": args.rounds,
        "runs": runs,
        "summary": summary,
        "total_s": time.perf_counter() - t0,
    }
    text = json.dumps(record, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
