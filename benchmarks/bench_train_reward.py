"""Benchmark: train_reward against the original project's T-REX loop at equal quality, over
several seeds.

For each seed, three trainers run one after another, each in a process of its own (so that
its peak memory is its own), on the same chosen demos, the same pair sets (sampled once
from the seed, as (demo, start, length) indices) and the same initial weights:

* ``reference``: the original project's loop (benchmarks/reference_trex.py, written from its
  behaviour: one pair per Adam step, fp32, per-pair evaluation of 1000 training, 1000
  validation and 1000 test pairs and whole-demo correlations on the test demos after every
  epoch);
* ``ours``: this toolkit's trainer with train_reward's defaults (bf16 autocast + channels_last,
  each distinct frame run once; until issue 23 64 pairs per step at Adam lr x sqrt(64), the
  runs recorded in benchmarks/README.md; now one pair per step, so ``--ours batch_size=64``
  is that setting);
* ``faithful``: this toolkit's trainer with the original project's optimiser (``--batch_size 1
  --lr_scaling none``).

The reference runs ``--reference_epochs`` epochs; its target is the validation accuracy and
the ``--criterion`` (test accuracy on unseen-level pairs by default, or the test Pearson) of
its best-validation epoch (what upstream reports). The reference's time is the wall time until
its first epoch that reaches both; ours and faithful train (no early stopping, at most
``--max_epochs``) until their first epoch that reaches both, and stop there. Times are measured
inside each process from the start of training; ``setup_s`` (imports, loading the demos,
sampling the pairs) is reported beside. Peak memory: the process's max RSS when it stops.

Measured command (benchmarks/README.md), on the starpilot study's demos from the shipped experts:
    python benchmarks/bench_train_reward.py --demo_csv study/demos/demo_infos.csv \
        --env_name starpilot --num_dems 50 --seeds 0 1 2 --reference_epochs 5 --max_epochs 15 \
        --threads 1 --out bench_tr_50.json
Other settings of ours against the same reference runs:
    python benchmarks/bench_train_reward.py <the same> --trainers ours --ours batch_size=16 \
        --reference_from bench_tr_50.json --out bench_tr_50_b16.json
Quick check (a few minutes):
    python benchmarks/bench_train_reward.py --demo_csv study/demos/demo_infos.csv --seeds 0 \
        --epoch_size 200 --n_eval 200 --reference_epochs 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("bench_train_reward")
TRAINERS = ("reference", "ours", "faithful")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--demo_csv", nargs="+", default=["demos/demo_infos.csv"])
    p.add_argument("--env_name", default="starpilot")
    p.add_argument("--mode", default="easy")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--num_dems", type=int, default=20)
    p.add_argument("--max_return", type=float, default=1.0)
    p.add_argument("--num_snippets", type=int, default=50000)
    p.add_argument("--min_snippet_length", type=int, default=20)
    p.add_argument("--max_snippet_length", type=int, default=100)
    p.add_argument(
        "--epoch_size", type=int, default=500, help="training pairs per epoch (all trainers)"
    )
    p.add_argument(
        "--lr", type=float, default=5e-5, help="the original project's per-pair learning rate"
    )
    p.add_argument(
        "--n_eval",
        type=int,
        default=1000,
        help="training-eval, validation and test pairs evaluated each epoch (upstream: 1000)",
    )
    p.add_argument(
        "--n_test_demos",
        type=int,
        default=100,
        help="test demos for the per-epoch Pearson (upstream: the first 100)",
    )
    p.add_argument(
        "--reference_epochs", type=int, default=6, help="epochs of the reference (sets the target)"
    )
    p.add_argument(
        "--max_epochs", type=int, default=40, help="at most this many epochs for ours/faithful"
    )
    p.add_argument("--trainers", nargs="+", default=list(TRAINERS), choices=TRAINERS)
    p.add_argument(
        "--criterion",
        default="test_acc",
        choices=("test_acc", "window_pearson", "pearson"),
        help="quality reached besides the validation accuracy: test_acc (accuracy on test "
        "pairs from unseen levels), window_pearson (Pearson of predicted with true return "
        "over fixed 50-frame windows of the test demos: what the reward knows beyond "
        "episode length) or pearson (test-demo Pearson; degenerate on expert demos: an "
        "untrained net's summed output already tracks episode length)",
    )
    p.add_argument(
        "--ours",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="override train_reward settings of 'ours' (TrexConfig fields, e.g. lr=1e-4 "
        "batch_size=32); default: none, train_reward's defaults",
    )
    p.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "bf16", "fp32"),
        help="ours and faithful: auto (bf16 autocast + channels_last where supported, "
        "train_reward's default) or fp32",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads in every trainer (default: torch's own, as upstream ran)",
    )
    p.add_argument(
        "--reference_from",
        default=None,
        metavar="FILE.json",
        help="take each seed's reference run from this earlier output of the script (same "
        "demos and settings) instead of running it again",
    )
    p.add_argument("--out", default=None, help="write all results as JSON here")
    # one trainer in this process (what the driver spawns)
    p.add_argument("--worker", choices=TRAINERS, default=None, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--target", type=float, nargs=2, default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker_out", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def parse_overrides(items: list[str]) -> dict:
    """KEY=VALUE strings -> TrexConfig fields with the field's type."""
    from trex.reward.trex import TrexConfig

    types = {f.name: type(f.default) for f in dataclasses.fields(TrexConfig)}
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if key not in types:
            raise SystemExit(f"--ours: unknown setting {key!r}")
        out[key] = types[key](value)
    return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def first_reaching(
    history: list[dict], val_acc: float, second: float, criterion: str
) -> dict | None:
    """The first epoch whose validation accuracy and ``criterion`` (test_acc, window_pearson or
    pearson) both reach the target."""
    for row in history:
        if row["val_acc"] >= val_acc and row[criterion] >= second:
            return row
    return None


class _TargetReached(Exception):
    pass


def run_worker(args: argparse.Namespace) -> dict:
    """One trainer, one seed: load, sample, train; its history, times and peak RSS."""
    t_setup = time.perf_counter()
    import torch

    from trex.common.device import pick_device, use_bf16
    from trex.demos.store import DemoIndex
    from trex.reward.nets import CnnRewardNet, prepare_net
    from trex.reward.pairs import DemoSet, select_demos
    from trex.reward.trex import TrexConfig, make_data, train_trex

    if args.threads:
        torch.set_num_threads(args.threads)
    index = DemoIndex.read(args.demo_csv)
    match = index.filter(env_name=args.env_name, mode=args.mode, sequential=0)
    train_idx = match.filter(set_name="train", min_length=args.min_snippet_length + 1)
    test_idx = match.filter(set_name="test", min_length=args.min_snippet_length + 1)
    rng = np.random.default_rng(args.seed)
    pos = select_demos(train_idx.df["return"].to_numpy(), args.num_dems, args.max_return, rng)
    demos = DemoSet.from_index(train_idx, [str(train_idx.df["demo_id"].iloc[i]) for i in pos])
    test = DemoSet.from_index(test_idx, test_idx.ids()[: args.n_test_demos])
    faithful = args.worker == "faithful"
    cfg = TrexConfig(
        num_snippets=args.num_snippets,
        min_snippet_length=args.min_snippet_length,
        max_snippet_length=args.max_snippet_length,
        epoch_size=args.epoch_size,
        lr=args.lr,
        num_val_snippets=args.n_eval,
        num_test_snippets=args.n_eval,
        num_train_eval_snippets=args.n_eval,
        max_num_epochs=args.reference_epochs if args.worker == "reference" else args.max_epochs,
        patience=10**6,
        **({"batch_size": 1, "lr_scaling": "none"} if faithful else {}),
    )
    if args.worker == "ours":
        cfg = dataclasses.replace(cfg, **parse_overrides(args.ours))
    data = make_data(demos, test, cfg, rng)
    device = pick_device("auto")
    out: dict = {
        "trainer": args.worker,
        "seed": args.seed,
        "threads": torch.get_num_threads(),
        "train_demos": len(data.train_demos),
        "val_demos": len(data.val_demos),
        "test_demos": len(test),
        "mean_demo_length": float(demos.lengths.mean()),
        "demo_returns": sorted(np.round(demos.returns, 2).tolist()),
    }

    if args.worker == "reference":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from reference_trex import ReferenceConfig, ReferenceTrainer

        def as_seed_pairs(ds: DemoSet, pairs) -> list:
            """The reference's pair list: (worse snippet, preferred snippet), frame views
            into the demos."""
            g0 = ds.offsets[pairs.demo[:, 0]] + pairs.start[:, 0]
            g1 = ds.offsets[pairs.demo[:, 1]] + pairs.start[:, 1]
            return [
                (ds.frames[a : a + n], ds.frames[b : b + n])
                for a, b, n in zip(g0, g1, pairs.length)
            ]

        test_dems = [
            {
                "observations": test.frames[test.offsets[i] : test.offsets[i + 1]],
                "return": float(test.returns[i]),
                "rewards": test.rewards[test.offsets[i] : test.offsets[i + 1]],
            }
            for i in range(len(test))
        ]
        rcfg = ReferenceConfig(
            epoch_size=args.epoch_size,
            max_num_epochs=args.reference_epochs,
            patience=args.reference_epochs,
            lr=args.lr,
            n_eval=args.n_eval,
            n_test_demos=args.n_test_demos,
        )
        ref = ReferenceTrainer(rcfg, device, args.seed, shuffle_seed=args.seed)
        out["setup_s"] = time.perf_counter() - t_setup
        res = ref.learn_reward(
            as_seed_pairs(demos, data.train_pairs),
            as_seed_pairs(demos, data.val_pairs),
            as_seed_pairs(test, data.test_pairs),
            test_dems,
        )
        out.update(precision="fp32", batch_size=1, adam_lr=args.lr, history=res.history)
    else:
        torch.manual_seed(args.seed)  # the same initial weights as the reference's
        bf16 = use_bf16(args.precision, device)
        channels_last = args.precision != "fp32"
        net = prepare_net(CnnRewardNet(), device, channels_last=channels_last)
        target = args.target

        def stop_at_target(row: dict) -> None:
            if target is not None and first_reaching([row], *target, args.criterion) is not None:
                raise _TargetReached

        history: list[dict] = []

        def record(row: dict) -> None:
            history.append(
                dict(row, peak_rss_mb=round(peak_rss_mb(), 1))
            )  # memory growth per epoch
            stop_at_target(row)

        out["setup_s"] = time.perf_counter() - t_setup
        try:
            train_trex(
                net,
                data,
                cfg,
                np.random.default_rng(args.seed + 1),
                device,
                bf16,
                channels_last,
                on_epoch=record,
            )
        except _TargetReached:
            pass
        from trex.reward.trex import step_lr

        out.update(
            precision="bf16" if bf16 else "fp32",
            batch_size=cfg.batch_size,
            adam_lr=step_lr(cfg),
            history=history,
        )
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return out


def spawn(
    args: argparse.Namespace, trainer: str, seed: int, target: tuple[float, float] | None
) -> dict:
    """Run one trainer in a child process; its JSON result."""
    with tempfile.TemporaryDirectory() as tmp:
        res_path = Path(tmp) / "result.json"
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            trainer,
            "--seed",
            str(seed),
            "--worker_out",
            str(res_path),
            "--demo_csv",
            *args.demo_csv,
            "--env_name",
            args.env_name,
            "--mode",
            args.mode,
            "--num_dems",
            str(args.num_dems),
            "--max_return",
            str(args.max_return),
            "--num_snippets",
            str(args.num_snippets),
            "--min_snippet_length",
            str(args.min_snippet_length),
            "--max_snippet_length",
            str(args.max_snippet_length),
            "--epoch_size",
            str(args.epoch_size),
            "--lr",
            str(args.lr),
            "--n_eval",
            str(args.n_eval),
            "--n_test_demos",
            str(args.n_test_demos),
            "--reference_epochs",
            str(args.reference_epochs),
            "--max_epochs",
            str(args.max_epochs),
        ]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        cmd += ["--precision", args.precision, "--criterion", args.criterion]
        if target is not None:
            cmd += ["--target", str(target[0]), str(target[1])]
        if trainer == "ours" and args.ours:
            cmd += ["--ours", *args.ours]
        env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": str(ROOT)}
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{trainer} (seed {seed}) failed:\n{done.stderr[-3000:]}")
        res = json.loads(res_path.read_text())
        res["process_wall_s"] = time.perf_counter() - t0
        return res


def summarise(run: dict, target: tuple[float, float], criterion: str) -> dict:
    hit = first_reaching(run["history"], *target, criterion)
    last = run["history"][-1]
    return {
        "reached": hit is not None,
        "epochs_run": len(run["history"]),
        "epoch_at_target": hit["epoch"] if hit else None,
        "time_to_target_s": round(hit["wall_s"], 2) if hit else None,
        "cpu_to_target_s": round(hit["cpu_s"], 2) if hit else None,
        "val_acc": round((hit or last)["val_acc"], 4),
        "pearson": round((hit or last)["pearson"], 4),
        "window_pearson": round((hit or last)["window_pearson"], 4),
        "test_acc": round((hit or last)["test_acc"], 4),
        "total_train_s": round(last["wall_s"], 2),
        "setup_s": round(run["setup_s"], 2),
        "peak_rss_mb": run["peak_rss_mb"],
        "s_per_epoch": round(last["wall_s"] / len(run["history"]), 2),
    }


#: settings that must match for a reference run to be reused
SAME_SETTINGS = (
    "demo_csv",
    "env_name",
    "mode",
    "num_dems",
    "max_return",
    "num_snippets",
    "min_snippet_length",
    "max_snippet_length",
    "epoch_size",
    "lr",
    "n_eval",
    "n_test_demos",
    "reference_epochs",
    "threads",
)


def load_reference_runs(args: argparse.Namespace) -> dict[str, dict]:
    """Each seed's reference run from ``--reference_from``, checked against these settings."""
    try:
        old = json.loads(Path(args.reference_from).read_text())
        runs = {seed: per["runs"]["reference"] for seed, per in old["seeds"].items()}
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(
            f"--reference_from {args.reference_from}: not an output of this script ({e})"
        ) from e
    differ = [k for k in SAME_SETTINGS if old["args"].get(k) != getattr(args, k)]
    if differ:
        raise SystemExit(
            f"--reference_from {args.reference_from}: other settings ({', '.join(differ)})"
        )
    missing = [s for s in args.seeds if str(s) not in runs]
    if missing:
        raise SystemExit(
            f"--reference_from {args.reference_from}: no reference run for seed(s) {missing}"
        )
    return runs


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.worker:
        res = run_worker(args)
        Path(args.worker_out).write_text(json.dumps(res))
        return
    from trex.common.cli import setup_logging
    from trex.common.files import write_json_atomic

    setup_logging()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from machine import machine_record

    results: dict = {
        "machine": {**machine_record(args.threads), "load_avg_before": os.getloadavg()},
        "args": {
            k: v
            for k, v in vars(args).items()
            if k not in ("worker", "seed", "target", "worker_out")
        },
        "seeds": {},
    }
    earlier = load_reference_runs(args) if args.reference_from else {}
    for seed in args.seeds:
        if earlier:
            ref = earlier[str(seed)]
            log.info("seed %d: reference from %s", seed, args.reference_from)
        else:
            log.info(
                "seed %d: reference, %d epochs of %d pairs",
                seed,
                args.reference_epochs,
                args.epoch_size,
            )
            ref = spawn(args, "reference", seed, None)
        best = max(
            ref["history"], key=lambda r: r["val_acc"]
        )  # first epoch with the max, as upstream
        target = (best["val_acc"], best[args.criterion])
        log.info(
            "seed %d: target val acc %.4f, %s %.4f (reference epoch %d)",
            seed,
            target[0],
            args.criterion,
            target[1],
            best["epoch"],
        )
        per = {
            "target_val_acc": target[0],
            f"target_{args.criterion}": target[1],
            "runs": {"reference": ref},
            "summary": {"reference": summarise(ref, target, args.criterion)},
        }
        for trainer in args.trainers:
            if trainer == "reference":
                continue
            run = spawn(args, trainer, seed, target)
            per["runs"][trainer] = run
            per["summary"][trainer] = s = summarise(run, target, args.criterion)
            log.info("seed %d: %s %s", seed, trainer, s)
        ref_t = per["summary"]["reference"]["time_to_target_s"]
        for _, s in per["summary"].items():
            s["speedup"] = round(ref_t / s["time_to_target_s"], 1) if s["reached"] else None
            s["memory_ratio"] = round(
                s["peak_rss_mb"] / per["summary"]["reference"]["peak_rss_mb"], 2
            )
        results["seeds"][str(seed)] = per
        if args.out:
            write_json_atomic(args.out, results)
    results["machine"]["load_avg_after"] = os.getloadavg()
    if args.out:
        write_json_atomic(args.out, results)
    print(
        "\ntrain_reward vs the original project's loop at equal quality "
        f"({args.env_name}, {args.num_dems} demos, "
        f"epochs of {args.epoch_size} pairs, {args.n_eval}-pair evaluations)"
    )
    print(
        f"{'seed':>4} {'trainer':>9} {'target val/' + args.criterion:>18} "
        f"{'epoch':>5} {'time s':>8} "
        f"{'speedup':>8} {'peak MB':>8} {'val acc':>7} {'test acc':>8} {'pearson':>7} "
        f"{'window':>7}"
    )
    for seed, per in results["seeds"].items():
        for trainer, s in per["summary"].items():
            tgt = f"{per['target_val_acc']:.3f}/{per['target_' + args.criterion]:+.3f}"
            print(
                f"{seed:>4} {trainer:>9} {tgt:>18} "
                f"{s['epoch_at_target'] if s['reached'] else '-':>5} "
                f"{s['time_to_target_s'] if s['reached'] else 'no':>8} {s['speedup'] or '-':>8} "
                f"{s['peak_rss_mb']:>8} {s['val_acc']:>7} {s['test_acc']:>8} {s['pearson']:>7} "
                f"{s['window_pearson']:>7}"
            )
    for trainer in args.trainers:
        sp = [per["summary"][trainer]["speedup"] for per in results["seeds"].values()]
        if trainer != "reference" and all(x is not None for x in sp):
            print(
                f"{trainer}: speedup to equal quality min {min(sp)}x, "
                f"median {float(np.median(sp))}x "
                f"over {len(sp)} seeds"
            )


if __name__ == "__main__":
    main()
