"""Benchmark (reliability): kill a 6-run train_reward sweep at random moments, restart it, count
what went wrong.

Each trial: a fresh directory with a small synthetic demo store; ``run_experiments`` of 6 tiny
train_reward runs starts; after a random delay (uniform over the time an uninterrupted sweep
takes, measured first) the sweep and every run of it get SIGKILL (local launcher), or the
SLURM job array gets ``scancel`` (``--launcher slurm``, needs a cluster, e.g.
``scripts/start_local_slurm.sh``); then the same command runs again to the end. With
``--kill timelimit`` (SLURM) nothing is killed by hand: the first attempt's tasks get a short
time limit (``--first_timeout_min``) and runs that need longer (``--slow_epochs`` epochs), so
the time limit ends them: submitit asks SLURM for SIGUSR2 90 s before the limit and, the task
not being checkpointable, ends it there (with a 2-minute limit: 30 s into each task, mid-run);
SLURM's own SIGTERM/SIGKILL at the limit ends whatever is left. The restart is the same sweep
with a 30-minute limit. Counted after
the restart: duplicate rm_infos rows, rows without their model, models without their row,
runs not done, and a restart that did not exit 0 (a spurious failure).

    python benchmarks/bench_kill_restart.py --trials 20 --out kill_local.json
    python benchmarks/bench_kill_restart.py --trials 3 --launcher slurm --out kill_slurm.json
    python benchmarks/bench_kill_restart.py --trials 3 --launcher slurm --kill timelimit \
        --out kill_tl.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TINY = [
    "--num_snippets",
    "100",
    "--min_snippet_length",
    "3",
    "--max_snippet_length",
    "8",
    "--epoch_size",
    "32",
    "--batch_size",
    "16",
    "--num_val_snippets",
    "32",
    "--num_test_snippets",
    "32",
    "--num_bootstrap",
    "50",
    "--window",
    "5",
]


def sweep_cmd(
    work: Path, csv: Path, launcher: str, timeout_min: int = 10, epochs: int = 2
) -> list[str]:
    flags = [*TINY, "--max_num_epochs", str(epochs), "--patience", str(epochs)]
    cmd = [
        sys.executable,
        "-m",
        "trex.run_experiments",
        "--env_name",
        "starpilot",
        "--num_dems",
        "8",
        "--num_seeds",
        "6",
        "--pass_args",
        " ".join(
            [
                *flags,
                "--demo_csv",
                str(csv),
                "--save_dir",
                str(work / "rm"),
                "--log_dir",
                str(work / "logs"),
            ]
        ),
    ]
    if launcher == "slurm":
        cmd += [
            "--launcher",
            "slurm",
            "--cpus_per_job",
            "1",
            "--mem_gb",
            "2",
            "--timeout_min",
            str(timeout_min),
        ]
    else:
        cmd += ["--jobs", "2"]
    return cmd


def kill_everything(work: Path, proc: subprocess.Popen, launcher: str) -> None:
    """SIGKILL the sweep and every process whose command line names this trial's directory
    (its runs live in sessions of their own); with SLURM, scancel the job array (all of this
    user's jobs: meant for the local test cluster only)."""
    if launcher == "slurm":  # a local test cluster: every job of this user is this trial's
        import getpass

        subprocess.run(["scancel", "-u", getpass.getuser()], check=False)
    os.killpg(proc.pid, signal.SIGKILL)
    subprocess.run(["pkill", "-KILL", "-f", str(work)], check=False)
    proc.wait()


def check(work: Path) -> dict[str, int]:
    rows = pd.read_csv(work / "rm" / "rm_infos.csv", dtype={"rm_id": str})
    models = {p.stem for p in (work / "rm" / "model_files").glob("*.safetensors")}
    manifest = pd.read_csv(work / "rm" / "sweep_manifest.csv", dtype={"rm_id": str})
    return {
        "duplicate_rows": int(rows["rm_id"].duplicated().sum()),
        "rows_without_model": len(set(rows["rm_id"]) - models),
        "models_without_row": len(models - set(rows["rm_id"])),
        "runs_not_done": int((~manifest["status"].isin(["done", "skipped"])).sum()),
        "rows": len(rows),
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--launcher", choices=("local", "slurm"), default="local")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--kill",
        choices=("signal", "timelimit"),
        default="signal",
        help="signal: SIGKILL / scancel after a random delay; timelimit (SLURM): tasks past "
        "a short time limit",
    )
    p.add_argument(
        "--first_timeout_min",
        type=int,
        default=2,
        help="--kill timelimit: the first attempt's time limit per task (minutes)",
    )
    p.add_argument(
        "--slow_epochs",
        type=int,
        default=400,
        help="--kill timelimit: epochs per run (enough to outlast the first time limit)",
    )
    p.add_argument("--out", default=None)
    args = p.parse_args()
    if args.kill == "timelimit" and args.launcher != "slurm":
        raise SystemExit("--kill timelimit needs --launcher slurm")
    from tests.test_protocol import make_pool_store

    rng = random.Random(args.seed)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    base = Path(tempfile.mkdtemp(prefix="bench_kill_"))
    store = make_pool_store(base / "demos")
    if args.kill == "timelimit":
        return time_limit_trials(args, store, base, env)
    # an uninterrupted sweep first: how long one takes sets the range of kill times
    t0 = time.time()
    ref = subprocess.run(
        sweep_cmd(base / "ref", store, args.launcher),
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    full = time.time() - t0
    assert ref.returncode == 0, ref.stderr[-2000:]
    trials = []
    for k in range(args.trials):
        work = base / f"trial{k}"
        delay = rng.uniform(0.5, full)
        proc = subprocess.Popen(
            sweep_cmd(work, store, args.launcher),
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        time.sleep(delay)
        finished_first = proc.poll() is not None
        if not finished_first:
            kill_everything(work, proc, args.launcher)
        restart = subprocess.run(
            sweep_cmd(work, store, args.launcher), env=env, cwd=ROOT, capture_output=True, text=True
        )
        result = {
            "trial": k,
            "kill_after_s": round(delay, 2),
            "killed": not finished_first,
            "restart_exit": restart.returncode,
            **check(work),
        }
        trials.append(result)
        print(json.dumps(result), flush=True)
    killed = [t for t in trials if t["killed"]]
    summary = {
        "launcher": args.launcher,
        "trials": len(trials),
        "killed": len(killed),
        "uninterrupted_sweep_s": round(full, 1),
        "duplicate_rows": sum(t["duplicate_rows"] for t in trials),
        "missing_models": sum(t["rows_without_model"] for t in trials),
        "models_without_row": sum(t["models_without_row"] for t in trials),
        "runs_not_done": sum(t["runs_not_done"] for t in trials),
        "spurious_failures": sum(t["restart_exit"] != 0 for t in trials),
        "rows_per_trial": sorted({t["rows"] for t in trials}),
    }
    report(summary, trials, args.out)


def report(summary: dict, trials: list[dict], out: str | None) -> None:
    print(json.dumps(summary, indent=2))
    if out:
        Path(out).write_text(json.dumps({"summary": summary, "trials": trials}, indent=2) + "\n")


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def time_limit_trials(args: argparse.Namespace, store: Path, base: Path, env: dict) -> None:
    """Each trial: the sweep with short task limits and runs that need longer (ended by the time
    limit), then the same sweep with a 30-minute limit."""
    trials = []
    for k in range(args.trials):
        work = base / f"timelimit{k}"
        t0 = time.time()
        first = subprocess.run(
            sweep_cmd(work, store, "slurm", args.first_timeout_min, args.slow_epochs),
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        first_s = time.time() - t0
        manifest = pd.read_csv(work / "rm" / "sweep_manifest.csv", dtype={"rm_id": str})
        cut = int((manifest["status"] != "done").sum())
        # runs whose training had begun when the time limit ended them (mid-run cuts)
        mid_run = sum(
            1
            for log in (work / "rm" / "sweep_runs").glob("*/log.txt")
            if "epoch " in log.read_text(errors="replace")
            and '"done"' not in _read(log.parent / "status.json")
        )
        restart = subprocess.run(
            sweep_cmd(work, store, "slurm", 30, args.slow_epochs),
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        result = {
            "trial": k,
            "first_attempt_s": round(first_s, 1),
            "first_exit": first.returncode,
            "runs_cut_by_time_limit": cut,
            "cut_mid_training": mid_run,
            "restart_exit": restart.returncode,
            **check(work),
        }
        trials.append(result)
        print(json.dumps(result), flush=True)
    summary = {
        "launcher": "slurm",
        "kill": "timelimit",
        "trials": len(trials),
        "runs_cut_by_time_limit": sum(t["runs_cut_by_time_limit"] for t in trials),
        "cut_mid_training": sum(t["cut_mid_training"] for t in trials),
        "duplicate_rows": sum(t["duplicate_rows"] for t in trials),
        "missing_models": sum(t["rows_without_model"] for t in trials),
        "models_without_row": sum(t["models_without_row"] for t in trials),
        "runs_not_done": sum(t["runs_not_done"] for t in trials),
        "spurious_failures": sum(t["restart_exit"] != 0 for t in trials),
        "rows_per_trial": sorted({t["rows"] for t in trials}),
    }
    report(summary, trials, args.out)


if __name__ == "__main__":
    main()
