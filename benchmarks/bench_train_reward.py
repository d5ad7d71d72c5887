"""Benchmark: this toolkit's T-REX trainer against a literal reference of the seed's loop
(benchmarks/reference_trex.py), same demos, same pairs, same seed, same machine, one run.

Reports: wall time for each to reach the best validation accuracy the reference reaches
(and the ratio), per-epoch wall time, the final test accuracy and the correlations (best
validation model, all test demos) of each, and the peak memory of a train_reward run on
``--mem_num_dems`` demos (a separate process, so its peak RSS is its own).

Both trainers see identical pair sets (sampled once, as (demo, start, length) indices; the
reference gets them as the seed's lists of frame-array views) and start from the same
initial weights, so validation accuracies are directly comparable.

The seed's sizes (1000 pairs per epoch, 1000-pair evaluations, 100 test demos), 6 epochs, one
torch thread for both (steadier on a shared machine), plus the 200-demo memory run (what
benchmarks/README.md reports; ~45 min on 2 CPU cores, almost all of it the reference):
    python benchmarks/bench_train_reward.py --demo_csv demos/demo_infos.csv --env_name starpilot \
        --num_dems 12 --max_num_epochs 6 --patience 6 --threads 1 --mem_num_dems 200 --out bench.json
Reduced, a few minutes:
    python benchmarks/bench_train_reward.py --demo_csv demos/demo_infos.csv --env_name starpilot \
        --epoch_size 200 --n_eval 200 --n_test_demos 30 --max_num_epochs 4 --patience 4 --mem_num_dems 0
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_trex import ReferenceConfig, ReferenceTrainer, get_corr_with_ground  # noqa: E402

from trex.core.demos import DemoIndex  # noqa: E402
from trex.core.device import pick_device, use_bf16  # noqa: E402
from trex.core.metrics import correlations  # noqa: E402
from trex.core.reward_model import RewardNet, prepare_net  # noqa: E402
from trex.core.runs import setup_logging, write_json_atomic  # noqa: E402
from trex.core.trex_learning import (  # noqa: E402
    DemoSet, PairSet, TrexConfig, make_data, predict_demo_returns, select_demos, step_lr, train_trex,
)

log = logging.getLogger("bench_train_reward")
ROOT = Path(__file__).resolve().parents[1]


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo_csv", nargs="+", default=["demos/demo_infos.csv"])
    p.add_argument("--env_name", default="starpilot")
    p.add_argument("--mode", default="easy")
    p.add_argument("--sequential", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num_dems", type=int, default=12)
    p.add_argument("--max_return", type=float, default=1.0)
    p.add_argument("--num_snippets", type=int, default=50000)
    p.add_argument("--min_snippet_length", type=int, default=20)
    p.add_argument("--max_snippet_length", type=int, default=100)
    p.add_argument("--epoch_size", type=int, default=1000)
    p.add_argument("--max_num_epochs", type=int, default=50)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--n_eval", type=int, default=1000,
                   help="training-eval, validation and test pairs evaluated each epoch (the seed: 1000)")
    p.add_argument("--n_test_demos", type=int, default=100, help="test demos evaluated each epoch (the seed: 100)")
    p.add_argument("--batch_size", type=int, default=64, help="ours: pairs per optimizer step")
    p.add_argument("--lr_scaling", default="sqrt", choices=("sqrt", "none"),
                   help="ours: Adam step size lr * sqrt(batch_size) (sqrt) or lr (none)")
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"), help="ours")
    p.add_argument("--ours_lr", type=float, default=None, help="ours: learning rate (default: --lr)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for both trainers (default: torch's; 1 is steadier on a shared machine)")
    p.add_argument("--ours_max_num_epochs", type=int, default=None,
                   help="ours: epoch limit (default: --max_num_epochs)")
    p.add_argument("--skip_reference", action="store_true", help="run only ours (no ratio)")
    p.add_argument("--reference_json", default=None,
                   help="take the reference's results from an earlier --out JSON with the same data "
                        "flags instead of running it (for trying settings of ours; not for reporting)")
    p.add_argument("--mem_num_dems", type=int, default=200, help="peak memory run on this many demos (0: skip)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    return p.parse_args()


def first_reaching(history: list[dict], target: float) -> dict | None:
    for row in history:
        if row["val_acc"] >= target:
            return row
    return None


def peak_memory_run(args: argparse.Namespace) -> dict:
    """train_reward on ``mem_num_dems`` demos, 1 short epoch, in a child process: its peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "trex.train_reward", "--env_name", args.env_name,
               "--distribution_mode", args.mode, "--sequential", str(args.sequential),
               "--num_dems", str(args.mem_num_dems), "--demo_csv", *args.demo_csv,
               "--min_snippet_length", str(args.min_snippet_length),
               "--max_snippet_length", str(args.max_snippet_length),
               "--num_snippets", str(args.num_snippets), "--epoch_size", "64", "--max_num_epochs", "1",
               "--num_val_snippets", str(args.n_eval), "--num_test_snippets", str(args.n_eval),
               "--max_test_demos", str(args.n_test_demos), "--seed", str(args.seed + 1),
               "--save_dir", f"{tmp}/rm", "--log_dir", f"{tmp}/logs", "--precision", args.precision,
               "--batch_size", str(args.batch_size), "--lr_scaling", args.lr_scaling]
        t0 = time.perf_counter()
        env = {**os.environ, "TQDM_DISABLE": "1"}
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
        wall = time.perf_counter() - t0
        if out.returncode != 0:
            log.warning("peak-memory run failed: %s", out.stderr.strip().splitlines()[-1:])
            return {"num_dems": args.mem_num_dems, "error": out.stderr.strip().splitlines()[-1:]}
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        frames_mb = None
        for line in out.stderr.splitlines():
            if "MB of frames" in line:
                frames_mb = float(line.rsplit("MB of frames", 1)[0].rsplit(";", 1)[-1].strip())
        return {"num_dems": args.mem_num_dems, "peak_rss_mb": round(peak_mb, 1),
                "chosen_demo_frames_mb": frames_mb, "wall_s": round(wall, 1)}


def main() -> None:
    args = parse()
    setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("TQDM_DISABLE", "1")
    results: dict = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                                 "torch": torch.__version__, "threads": torch.get_num_threads()},
                     "args": vars(args)}
    if args.mem_num_dems > 0:  # first, so that RUSAGE_CHILDREN is this child's peak
        log.info("peak memory: train_reward with %d demos", args.mem_num_dems)
        results["memory"] = peak_memory_run(args)
        log.info("peak memory: %s", results["memory"])

    index = DemoIndex.read(args.demo_csv)
    match = index.filter(env_name=args.env_name, mode=args.mode, sequential=args.sequential)
    train_idx = match.filter(set_name="train", min_length=args.min_snippet_length + 1)
    test_idx = match.filter(set_name="test", min_length=args.min_snippet_length + 1)
    rng = np.random.default_rng(args.seed)
    pos = select_demos(train_idx.df["return"].to_numpy(), args.num_dems, args.max_return, rng)
    chosen = [str(train_idx.df["demo_id"].iloc[i]) for i in pos]
    test_ids = test_idx.ids()
    demos = DemoSet.from_index(train_idx, chosen)
    test = DemoSet.from_index(test_idx, test_ids[:args.n_test_demos])  # the seed: test_dems[:100]
    cfg = TrexConfig(num_snippets=args.num_snippets, min_snippet_length=args.min_snippet_length,
                     max_snippet_length=args.max_snippet_length, epoch_size=args.epoch_size,
                     max_num_epochs=args.ours_max_num_epochs or args.max_num_epochs, patience=args.patience,
                     lr=args.ours_lr or args.lr, batch_size=args.batch_size, lr_scaling=args.lr_scaling,
                     num_val_snippets=args.n_eval,
                     num_test_snippets=args.n_eval, num_train_eval_snippets=args.n_eval)
    data = make_data(demos, test, cfg, rng)
    all_test = list(test_idx.iter_demos(test_ids))
    true_all = np.array([float(d.rewards.sum(dtype=np.float64)) for d in all_test])
    results["data"] = {"train_demos": len(data.train_demos), "val_demos": len(data.val_demos),
                       "test_demos_per_epoch": len(test), "test_demos_final": len(all_test),
                       "mean_demo_length": float(demos.lengths.mean()),
                       "demo_returns": np.round(demos.returns, 2).tolist(),
                       "gt_snippet_acc": data.gt_snippet_acc}
    log.info("data: %s", results["data"])
    device = pick_device("auto")

    # ---- reference (the seed's loop), same pairs
    if args.reference_json:
        old = json.loads(Path(args.reference_json).read_text())
        same = ("demo_csv", "env_name", "mode", "sequential", "seed", "num_dems", "max_return", "num_snippets",
                "min_snippet_length", "max_snippet_length", "epoch_size", "n_eval", "n_test_demos", "lr")
        diff = [k for k in same if old["args"].get(k) != vars(args)[k]]
        if diff:
            raise SystemExit(f"--reference_json was run with other {', '.join(diff)}")
        results["reference"] = old["reference"]
        results["reference_from"] = args.reference_json
    elif not args.skip_reference:
        def as_dict(ds: DemoSet, i: int) -> dict:
            a, b = ds.offsets[i], ds.offsets[i + 1]
            return {"observations": ds.frames[a:b], "rewards": ds.rewards[a:b],
                    "return": float(ds.returns[i]), "length": int(b - a)}

        def as_seed_pairs(ds: DemoSet, pairs: PairSet) -> list:
            dd = [as_dict(ds, i) for i in range(len(ds))]
            return [([dd[d0]["observations"][s0:s0 + n], dd[d1]["observations"][s1:s1 + n]], np.array([1]))
                    for (d0, d1), (s0, s1), n in zip(pairs.demo, pairs.start, pairs.length)]

        ref_test_dems = [{"observations": d.observations, "rewards": d.rewards, "return": float(t),
                          "length": len(d)} for d, t in zip(all_test, true_all)]
        rcfg = ReferenceConfig(epoch_size=args.epoch_size, max_num_epochs=args.max_num_epochs,
                               patience=args.patience, lr=args.lr, n_eval=args.n_eval,
                               n_test_demos=args.n_test_demos)
        np.random.seed(args.seed)
        ref = ReferenceTrainer(rcfg, device, args.seed)
        log.info("reference: %d epochs max of %d pairs (one per step)", rcfg.max_num_epochs, rcfg.epoch_size)
        rres = ref.learn_reward(as_seed_pairs(demos, data.train_pairs), as_seed_pairs(demos, data.val_pairs),
                                as_seed_pairs(test, data.test_pairs), ref_test_dems)
        ref.net.load_state_dict(ref.best_model)
        ref_final = get_corr_with_ground(ref_test_dems, ref.net, device)
        best_ref = max(rres.history, key=lambda r: r["val_acc"])  # first epoch with the max
        results["reference"] = {
            "epochs": len(rres.history), "wall_s": round(rres.wall_s, 1),
            "s_per_epoch": round(rres.wall_s / len(rres.history), 1),
            "cpu_s_per_epoch": round(rres.history[-1]["cpu_s"] / len(rres.history), 1),
            "best_val_acc": best_ref["val_acc"], "best_epoch": best_ref["epoch"],
            "time_to_best_val_s": round(best_ref["wall_s"], 1), "test_acc": best_ref["test_acc"],
            "pearson": ref_final[0], "spearman": ref_final[1], "history": rres.history,
        }

    # ---- ours
    torch.manual_seed(args.seed)
    precision = args.precision
    bf16 = use_bf16(precision, device)
    channels_last = precision != "fp32"
    net = prepare_net(RewardNet(), device, channels_last)
    ores = train_trex(net, data, cfg, np.random.default_rng(args.seed + 1), device, bf16, channels_last)
    pred, true, _ = predict_demo_returns(net, all_test, device, bf16, channels_last)
    o_p, o_s = correlations(pred, true)
    results["ours"] = {
        "precision": "bf16" if bf16 else "fp32", "channels_last": channels_last, "batch_size": args.batch_size,
        "lr": cfg.lr, "lr_scaling": cfg.lr_scaling, "adam_lr": step_lr(cfg),
        "epochs": ores.epochs, "wall_s": round(ores.wall_s, 1), "s_per_epoch": round(ores.wall_s / ores.epochs, 2),
        "cpu_s_per_epoch": round(ores.history[-1]["cpu_s"] / ores.epochs, 2),
        "best_val_acc": ores.best["val_acc"], "best_epoch": ores.best_epoch,
        "time_to_best_val_s": round(ores.best["wall_s"], 2), "test_acc": ores.best["test_acc"],
        "pearson": o_p, "spearman": o_s, "history": ores.history,
    }
    if "reference" in results:
        r, o = results["reference"], results["ours"]
        target = r["best_val_acc"]
        hit = first_reaching(ores.history, target)
        r_hit = first_reaching(r["history"], target)
        cmp = {"target_val_acc": target, "reference_time_to_target_s": round(r_hit["wall_s"], 1),
               "ours_time_to_target_s": round(hit["wall_s"], 2) if hit else None,
               "ours_epoch_at_target": hit["epoch"] if hit else None,
               "speedup_time_to_target": round(r_hit["wall_s"] / hit["wall_s"], 1) if hit else None,
               "reference_cpu_to_target_s": round(r_hit["cpu_s"], 1) if "cpu_s" in r_hit else None,
               "ours_cpu_to_target_s": round(hit["cpu_s"], 2) if hit else None,
               "speedup_cpu_to_target": round(r_hit["cpu_s"] / hit["cpu_s"], 1)
               if hit and "cpu_s" in r_hit else None,
               "speedup_per_epoch": round(r["s_per_epoch"] / o["s_per_epoch"], 1),
               "speedup_cpu_per_epoch": round(r["cpu_s_per_epoch"] / o["cpu_s_per_epoch"], 1)
               if "cpu_s_per_epoch" in r else None,
               "test_acc_ours_minus_ref": round(o["test_acc"] - r["test_acc"], 4),
               "pearson_ours_minus_ref": round(o["pearson"] - r["pearson"], 4),
               "spearman_ours_minus_ref": round(o["spearman"] - r["spearman"], 4)}
        results["comparison"] = cmp
    if args.out:
        write_json_atomic(args.out, results)
    # the table
    print(f"\nT-REX train_reward benchmark ({args.env_name}, {args.num_dems} demos, seed {args.seed}, "
          f"epoch {args.epoch_size} pairs, eval {args.n_eval} pairs x3 + {args.n_test_demos} test demos)")
    for name in ("reference", "ours"):
        if name in results:
            x = results[name]
            print(f"  {name:9s}: {x['epochs']:3d} epochs, {x['s_per_epoch']:8.2f} s/epoch, best val acc "
                  f"{x['best_val_acc']:.3f} (epoch {x['best_epoch']}, {x['time_to_best_val_s']:.1f} s); test acc "
                  f"{x['test_acc']:.3f}; pearson {x['pearson']:.3f} spearman {x['spearman']:.3f}")
    if "comparison" in results:
        c = results["comparison"]
        print(f"  target val acc {c['target_val_acc']:.3f}: reference {c['reference_time_to_target_s']} s, ours "
              f"{c['ours_time_to_target_s']} s -> speedup {c['speedup_time_to_target']}x "
              f"(per epoch {c['speedup_per_epoch']}x); CPU time: {c['speedup_cpu_to_target']}x "
              f"(per epoch {c['speedup_cpu_per_epoch']}x)")
    if "memory" in results:
        print(f"  peak memory, train_reward with {args.mem_num_dems} demos: {results['memory']}")


if __name__ == "__main__":
    main()
