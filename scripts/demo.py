"""`make demo`: the procgen-trex pipeline on the shipped starpilot experts, in 6-9 minutes
on a 2-core VM. Every step is the real stage, run from the shell as a user would run it:

 1. gen_demos         training demos from a pool of 200 levels and test demos from unseen
                      levels, from the shipped checkpoints (pretrained/starpilot/), spread
                      over their skill
 2. run_experiments   reward models: T-REX (ranked by return) and D-REX-style (ranked by the
                      demonstrator's training steps, never reading the reward), 2 seeds each
 3. eval_reward       every metric on the unseen-level demos, with bootstrap intervals, and
                      how much the seeds agree; plot_correlations / plot_reward_predictions
 4. train_policy      a short PPO on the best reward model and on a constant "live-long"
                      reward, on the same 200-level pool
 5. test_policy       true return of the shipped expert, both PPO runs and a random policy
                      on the training pool and on unseen levels
 6. plot_policy_returns, visualize_policy, visualize_demo

Everything goes under --out (default demo_output/); the end prints where each artefact is
and the tables. The reward-model numbers are real measurements with their intervals; the PPO
runs are far too short to rank the rewards (see the README's results for that).
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
ROOT = Path(__file__).resolve().parents[1]


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
        print(
            f"\n$ {shlex.join(['python', '-m', f'trex.{name}', *map(str, args)])}  > {log}",
            flush=True,
        )
        with open(log, "w") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", f"trex.{name}", *map(str, args)],
                env={**os.environ, **THREADS},
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
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
    p.add_argument(
        "--out", default="demo_output", help="where everything goes (must not exist yet)"
    )
    p.add_argument("--train_demos", type=int, default=120, help="training demos (200-level pool)")
    p.add_argument("--test_demos", type=int, default=60, help="test demos (unseen levels)")
    p.add_argument("--num_dems", type=int, default=40, help="demos each reward model learns from")
    p.add_argument("--snippets", type=int, default=3000, help="snippet pairs per reward model")
    p.add_argument("--epochs", type=int, default=2, help="most epochs (500 pairs) per reward model")
    p.add_argument(
        "--policy_steps", type=int, default=8192, help="PPO steps on each replaced reward"
    )
    p.add_argument(
        "--test_episodes", type=int, default=50, help="test_policy episodes per level set"
    )
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
    pretrained = ROOT / "pretrained" / ENV
    manifest = pd.read_csv(pretrained / "checkpoints.csv").sort_values("timesteps")
    expert = pretrained / manifest.sort_values("mean_return")["file"].iloc[-1]
    pool = ["--num_levels", 200]

    # 1. demos of varied skill from the shipped checkpoints: training demos from a 200-level
    # pool (procgen's protocol), test demos from unseen levels
    demos = out / "demos"
    stage(
        "gen_demos",
        "--env_name",
        ENV,
        "--models_dir",
        pretrained,
        "--num_dems",
        args.train_demos,
        *pool,
        "--max_ep_len",
        500,
        "--num_envs",
        32,
        "--log_dir",
        demos,
        "--seed",
        1,
    )
    stage(
        "gen_demos",
        "--env_name",
        ENV,
        "--models_dir",
        pretrained,
        "--num_dems",
        args.test_demos,
        "--test_set",
        "--max_ep_len",
        500,
        "--num_envs",
        32,
        "--log_dir",
        demos,
        "--seed",
        2,
    )
    demo_csv = demos / "demo_infos.csv"

    # 2. reward models: ranked by return (T-REX) and by checkpoint age (reward-free), 2 seeds each
    rms = out / "reward_models"
    stage(
        "run_experiments",
        "--env_name",
        ENV,
        "--num_dems",
        args.num_dems,
        "--num_seeds",
        2,
        "--grid",
        "rank_by",
        "return",
        "checkpoint",
        "--jobs",
        2,
        "--save_name",
        "demo",
        "--pass_args",
        f"--demo_csv {demo_csv} --save_dir {rms} --log_dir {out / 'LOGS'} "
        f"--num_snippets {args.snippets} --epoch_size 500 --max_num_epochs {args.epochs} "
        "--patience 2 --min_snippet_length 10 --max_snippet_length 50 --num_val_snippets 300 "
        "--num_test_snippets 300 --num_levels 200",
    )
    rm_csv = rms / "rm_infos_demo.csv"
    rm = pd.read_csv(rm_csv, dtype={"rm_id": str})
    best = rm.sort_values("val_acc", ascending=False).iloc[0]
    best_id = str(best["rm_id"])

    # 3. how well the rewards do on unseen levels, and whether the seeds learned the same reward
    figures = out / "figures"
    results = out / "results"
    trex_ids = rm[rm["rank_by"] == "return"]["rm_id"].tolist()
    stage(
        "eval_reward",
        "--rm_id",
        *trex_ids,
        "--reward_csv",
        rm_csv,
        "--demo_csv",
        demo_csv,
        "--out",
        results / "reward_eval.csv",
    )
    stage(
        "plot_correlations",
        "--rm_csv_path",
        rm_csv,
        "--env_name",
        ENV,
        "--by",
        "rank_by",
        "--metric",
        "pearson",
        "partial",
        "window_pearson",
        "--out",
        figures / "correlations.png",
    )
    stage(
        "plot_reward_predictions",
        "--env_name",
        ENV,
        "--demo_csv",
        demo_csv,
        "--reward_csv",
        rm_csv,
        "--rm_id",
        best_id,
        "--num_demos",
        6,
        "--out",
        figures / "reward_predictions.png",
    )

    # 4. PPO on the best learned reward, and on the live-long constant reward (both at once)
    ppo = [
        "--num_envs",
        "32",
        "--nsteps",
        "128",
        "--nminibatches",
        "4",
        "--save_interval",
        "4",
        *pool,
    ]
    runs_dir = out / "policies"
    stages_together(
        out / "LOGS" / "ppo",
        (
            "train_policy",
            [
                "--env_name",
                ENV,
                *ppo,
                "--timesteps_per_proc",
                args.policy_steps,
                "--log_dir",
                runs_dir,
                "--rm_id",
                best_id,
                "--reward_csv",
                rm_csv,
                "--seed",
                1,
                *threads,
            ],
        ),
        (
            "train_policy",
            [
                "--env_name",
                ENV,
                *ppo,
                "--timesteps_per_proc",
                args.policy_steps,
                "--log_dir",
                runs_dir,
                "--constant_reward",
                1,
                "--seed",
                1,
                *threads,
            ],
        ),
    )
    runs = {
        f"learned reward {best_id}": runs_dir / ENV / "easy" / f"rm_{best_id}",
        "constant reward": runs_dir / ENV / "easy" / "constant_1",
    }

    # 5. true returns on the 200 training levels and on unseen levels
    tests = results / "test_policy.csv"
    test = ["--num_runs", args.test_episodes, "--num_envs", 25, "--out_csv", tests]
    stage("test_policy", "--load_path", expert, *test, *pool, "--start_level", 0)
    for run_dir in runs.values():
        last = pd.read_csv(run_dir / "checkpoints.csv").sort_values("timesteps")["file"].iloc[-1]
        stage("test_policy", "--load_path", run_dir / last, *test)
    stage(
        "test_policy", "--load_path", "random", "--env_name", ENV, *test, *pool, "--start_level", 0
    )

    # 6. figures and videos
    stage(
        "plot_policy_returns",
        "--runs",
        *runs.values(),
        "--demo_csv",
        demo_csv,
        "--test_csv",
        tests,
        "--out",
        figures / "policy_returns.png",
    )
    stage(
        "visualize_policy",
        "--load_path",
        expert,
        "--video_length",
        300,
        "--num_screens",
        4,
        "--out",
        out / "Videos" / "expert.mp4",
    )
    demo_index = pd.read_csv(demo_csv)
    best_demo = demo_index[demo_index["set_name"] == "train"].sort_values("return").iloc[-1]
    stage(
        "visualize_demo",
        best_demo["demo_id"],
        "--demo_csv",
        demo_csv,
        "--out",
        out / "Videos" / f"demo_{best_demo['demo_id']}.mp4",
    )

    # summary
    pd.set_option("display.width", 200)
    scores = pd.read_csv(tests)
    train_demos = demo_index[demo_index["set_name"] == "train"]
    print("\n" + "=" * 78)
    print(
        f"procgen-trex demo finished in {(time.time() - t_start) / 60:.1f} min; "
        f"everything is in {out}/"
    )
    print(
        f"  demos                   {demo_csv} ({len(train_demos)} training demos from 200 levels, "
        f"returns {train_demos['return'].min():.0f} to {train_demos['return'].max():.0f}; "
        f"{len(demo_index) - len(train_demos)} test demos from unseen levels)"
    )
    print(f"  reward models           {rm_csv} + {rms}/model_files_demo/")
    print(f"  reward metrics          {results / 'reward_eval.csv'} (+ _agreement.csv)")
    print(
        f"  figures                 {figures}/ (correlations, reward_predictions, policy_returns)"
    )
    print(f"  policy test results     {tests} (+ _episodes.csv)")
    print(f"  videos                  {out / 'Videos'}/")
    print("\nreward models on the unseen-level test demos [bootstrap 95% interval]:")
    shown = rm.copy()
    for m in ("pearson", "partial", "window_pearson"):
        shown[m] = [
            f"{v:.2f} [{lo:.2f}, {hi:.2f}]"
            for v, lo, hi in zip(rm[m], rm[f"{m}_lo"], rm[f"{m}_hi"])
        ]
    shown["length baseline"] = [f"{v:.2f}" for v in rm["baseline_pearson"]]
    print(
        shown[
            [
                "rm_id",
                "rank_by",
                "num_dems",
                "val_acc",
                "pearson",
                "length baseline",
                "partial",
                "window_pearson",
            ]
        ].to_string(index=False, float_format=lambda v: f"{v:.2f}")
    )
    agreement = results / "reward_eval_agreement.csv"
    if agreement.exists():
        d = pd.read_csv(agreement)["distance"]
        print(
            f"T-REX seeds' agreement: EPIC Pearson distance {d.mean():.2f} "
            "(0 = same reward, 1 = opposite)"
        )
    print(f"\npolicies, true return (mean +- s.e. over {args.test_episodes} episodes):")
    scores["cell"] = [
        f"{m:.2f} +- {sd / max(n, 1) ** 0.5:.2f}"
        for m, sd, n in zip(scores["return_mean"], scores["return_std"], scores["episodes"])
    ]
    table = scores.pivot_table(
        index="load_path", columns="level_set", values="cell", aggfunc="last"
    )
    table.index = [
        ("random" if i == "random" else Path(i).parent.name + "/" + Path(i).name)
        for i in table.index
    ]
    table = table.rename(columns={"train": "200 training levels", "test": "unseen levels"})
    print(table.to_string())


if __name__ == "__main__":
    main()
