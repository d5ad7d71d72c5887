"""`make demo`: the whole procgen-trex pipeline at a scale that runs in about 15 minutes on
2 CPU cores. Every step is the real stage, run from the shell as a user would run it:

 1. train_policy      a small starpilot expert with checkpoints (true reward)
 2. gen_demos         training demos (levels [0, 1e9)) and test demos ([1e9, 2e9)) from them
 3. run_experiments   a small grid of train_reward runs (2 demo counts x 2 seeds), 2 at a time
 4. plot_correlations / plot_reward_predictions
 5. train_policy      PPO on the best reward model, and on a constant "live-long" reward
 6. test_policy       true return of every policy on training and unseen levels
 7. plot_policy_returns, visualize_policy, visualize_demo

Everything goes under --out (default demo_output/); the end prints where each artefact is
and a table of the numbers. Toy scale: the numbers show the pipeline works, not what T-REX
can do (see the README's results for real runs).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ENV = "starpilot"


THREADS = {"OMP_NUM_THREADS": "1"}


def stage(name: str, *args: str | Path) -> None:
    """Run ``python -m trex.<name> args...``; stop the demo if it fails."""
    cmd = [sys.executable, "-m", f"trex.{name}", *map(str, args)]
    print(f"\n$ {shlex.join(['python', '-m', f'trex.{name}', *map(str, args)])}", flush=True)
    t0 = time.time()
    if subprocess.run(cmd, env={**os.environ, **THREADS}).returncode != 0:
        sys.exit(f"demo stopped: trex.{name} failed")
    print(f"  ({time.time() - t0:.0f} s)", flush=True)


def stages_together(log_dir: Path, *calls: tuple[str, list]) -> None:
    """Run several stages at once (one per core), each logging to ``log_dir/<i>_<name>.log``;
    print each one's last log line; stop the demo if any fails."""
    log_dir.mkdir(parents=True, exist_ok=True)
    t0, running = time.time(), []
    for i, (name, args) in enumerate(calls):
        log = log_dir / f"{i}_{name}.log"
        print(f"\n$ {shlex.join(['python', '-m', f'trex.{name}', *map(str, args)])}  > {log}", flush=True)
        with open(log, "w") as fh:
            proc = subprocess.Popen([sys.executable, "-m", f"trex.{name}", *map(str, args)],
                                    env={**os.environ, **THREADS}, stdout=fh, stderr=subprocess.STDOUT)
        running.append((name, log, proc))
    failed = [name for name, _, proc in running if proc.wait() != 0]
    for _, log, _ in running:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        print(f"  {log.name}: {lines[-1][:160] if lines else '(empty)'}")
    if failed:
        sys.exit(f"demo stopped: {', '.join(failed)} failed (see {log_dir})")
    print(f"  ({time.time() - t0:.0f} s)", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="demo_output", help="where everything goes (must not exist yet)")
    p.add_argument("--expert_steps", type=int, default=40960, help="PPO steps of the expert")
    p.add_argument("--policy_steps", type=int, default=20480, help="PPO steps on each replaced reward")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    args = p.parse_args()
    out = Path(args.out)
    if out.exists():
        sys.exit(f"{out} exists: remove it (make clean-demo) or pass --out elsewhere")
    t_start = time.time()
    # torch threads per process: on a busy 2-core machine torch's default pool makes small
    # forwards 10-20x slower (benchmarks/README.md); run_experiments sets its own per run
    THREADS["OMP_NUM_THREADS"] = str(args.threads)
    threads = ["--num_threads", str(args.threads)]
    ppo = ["--num_envs", "32", "--nsteps", "128", "--nminibatches", "4", "--save_interval", "2"]
    experts = out / "experts"
    expert_dir = experts / ENV / "easy"

    # 1. the expert
    stage("train_policy", "--env_name", ENV, *ppo, "--timesteps_per_proc", args.expert_steps,
          "--log_dir", experts, "--seed", 1, *threads)

    # 2. demos of varied skill (checkpoints spread over the skill range, plus D-REX noise)
    demos = out / "demos"
    stage("gen_demos", "--env_name", ENV, "--models_dir", expert_dir, "--num_dems", 60,
          "--noise", 0, 0.5, "--max_ep_len", 400, "--num_envs", 30, "--log_dir", demos, "--seed", 1)
    stage("gen_demos", "--env_name", ENV, "--models_dir", expert_dir, "--num_dems", 40,
          "--noise", 0, 0.5, "--max_ep_len", 400, "--num_envs", 20, "--test_set",
          "--log_dir", demos, "--seed", 2)
    demo_csv = demos / "demo_infos.csv"

    # 3. reward models: 2 demo counts x 2 seeds, 2 at a time
    rms = out / "reward_models"
    stage("run_experiments", "--env_name", ENV, "--num_dems", 20, 40, "--num_seeds", 2,
          "--jobs", 2, "--save_name", "demo",
          "--pass_args", f"--demo_csv {demo_csv} --save_dir {rms} --log_dir {out / 'LOGS'} "
          "--num_snippets 2000 --epoch_size 500 --max_num_epochs 4 --patience 2 "
          "--min_snippet_length 10 --max_snippet_length 40 --num_val_snippets 300 "
          "--num_test_snippets 300 --batch_size 32")
    rm_csv = rms / "rm_infos_demo.csv"
    rm = pd.read_csv(rm_csv)
    best = rm.sort_values("val_acc", ascending=False).iloc[0]
    best_id = str(best["rm_id"])

    # 4. how well the rewards generalize to unseen levels
    figures = out / "figures"
    stage("plot_correlations", "--rm_csv_path", rm_csv, "--env_name", ENV,
          "--demo_csv", demo_csv, "--out", figures / "correlations.png")
    stage("plot_reward_predictions", "--env_name", ENV, "--demo_csv", demo_csv,
          "--reward_csv", rm_csv, "--rm_id", best_id, "--num_demos", 6,
          "--out", figures / "reward_predictions.png")

    # 5. PPO on the best learned reward, and on the live-long constant reward
    # (both at once: one core each)
    stages_together(
        out / "LOGS" / "ppo",
        ("train_policy", ["--env_name", ENV, *ppo, "--timesteps_per_proc", args.policy_steps,
                          "--log_dir", experts, "--rm_id", best_id, "--reward_csv", rm_csv,
                          "--seed", 1, *threads]),
        ("train_policy", ["--env_name", ENV, *ppo, "--timesteps_per_proc", args.policy_steps,
                          "--log_dir", experts, "--constant_reward", 1, "--seed", 1, *threads]),
    )
    runs = {
        "expert (true reward)": expert_dir,
        f"learned reward {best_id}": expert_dir / f"rm_{best_id}",
        "constant reward": expert_dir / "constant_1",
    }

    # 6. true returns on training and unseen levels
    results = out / "results" / "test_policy.csv"
    for run_dir in runs.values():
        last = pd.read_csv(run_dir / "checkpoints.csv").sort_values("timesteps")["file"].iloc[-1]
        stage("test_policy", "--load_path", run_dir / last, "--num_runs", 32, "--num_envs", 16,
              "--out_csv", results)
    stage("test_policy", "--load_path", "random", "--env_name", ENV, "--num_runs", 32,
          "--num_envs", 16, "--out_csv", results)

    # 7. figures and videos
    stage("plot_policy_returns", "--runs", *runs.values(), "--demo_csv", demo_csv,
          "--test_csv", results, "--out", figures / "policy_returns.png")
    expert_last = pd.read_csv(expert_dir / "checkpoints.csv").sort_values("timesteps")["file"].iloc[-1]
    stage("visualize_policy", "--load_path", expert_dir / expert_last, "--video_length", 300,
          "--num_screens", 4, "--out", out / "Videos" / "expert.mp4")
    demo_index = pd.read_csv(demo_csv)
    best_demo = demo_index[demo_index["set_name"] == "train"].sort_values("return").iloc[-1]
    stage("visualize_demo", best_demo["demo_id"], "--demo_csv", demo_csv,
          "--out", out / "Videos" / f"demo_{best_demo['demo_id']}.mp4")

    # summary
    tests = pd.read_csv(results)
    train_demos = demo_index[demo_index["set_name"] == "train"]["return"]
    print("\n" + "=" * 78)
    print(f"procgen-trex demo finished in {(time.time() - t_start) / 60:.1f} min; everything is in {out}/")
    print(f"  expert checkpoints      {expert_dir}/ (checkpoints.csv)")
    print(f"  demos                   {demo_csv} ({len(demo_index)} demos; train returns "
          f"{train_demos.min():.0f} to {train_demos.max():.0f})")
    print(f"  reward models           {rm_csv} + {rms}/model_files_demo/")
    print(f"  sweep manifest          {rms}/")
    print(f"  figures                 {figures}/ (correlations, reward_predictions, policy_returns)")
    print(f"  policy test results     {results}")
    print(f"  videos                  {out / 'Videos'}/")
    print("\nreward models (test = held-out demos on unseen levels):")
    cols = ["rm_id", "num_dems", "seed", "val_acc", "test_acc", "pearson", "spearman",
            "baseline_pearson", "baseline_spearman"]
    print(rm[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("\npolicies, true return (mean over 32 episodes):")
    table = tests.pivot_table(index="load_path", columns="level_set", values="return_mean")
    table.index = [Path(i).parent.name + "/" + Path(i).name if i != "random" else "random" for i in table.index]
    print(table.to_string(float_format=lambda v: f"{v:.2f}"))


if __name__ == "__main__":
    main()
