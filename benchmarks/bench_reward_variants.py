"""Benchmark: per-epoch cost of each T-REX variant flag against the original project's network,
same data.

Setting (toy but realistic, 1 torch thread, fast path): 25 synthetic demos of 200 frames (20
training / 5 validation by the original project's split), 10 test demos, the original project's
snippet lengths (20..100), batches of 64 pairs, ``max_batch_frames`` 1024, 256 pairs per epoch,
2 epochs. Each variant runs in its own process (so its peak RSS is its own); the original
project's variant runs first and last, as the reference and to show how much the machine drifted.

    python benchmarks/bench_reward_variants.py --out bench_variants.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = [
    {},
    {"use_clip_heuristic": False},
    {"use_snippet_rewards": True},
    {"frame_stack": 4},
    {"scale_frames": True},
    {"augment": "shift"},
    {"architecture": "impala"},
    {"ensemble": 3},
    {"ensemble": 5},
    {"frame_stack": 4, "scale_frames": True, "augment": "shift", "architecture": "impala"},
    {},
]


def one(variant: dict, epochs: int) -> dict:
    """Train ``variant`` for ``epochs`` epochs in this process; times of training and evaluation."""
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT))
    from tests.test_trex_learning import synth_demos
    from trex.common.device import use_bf16
    from trex.reward.nets import prepare_net
    from trex.reward.passes import train_step
    from trex.reward.trex import TrexConfig, evaluate, make_data, step_lr

    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    bf16 = use_bf16("auto", cpu)
    demos = synth_demos(25, 200, seed=0, vary=False)
    test = synth_demos(10, 200, seed=1, vary=False)
    cfg = TrexConfig(epoch_size=256, **variant)
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    data = make_data(demos, test, cfg, rng)
    net = prepare_net(cfg.make_net(), cpu, True)
    opt = torch.optim.Adam(net.parameters(), lr=step_lr(cfg), weight_decay=cfg.weight_decay)
    aug_rng = rng.spawn(1)[0]
    train_s, eval_s = [], []
    for _ in range(epochs):
        order = rng.permutation(len(data.train_pairs))[: cfg.epoch_size]
        t0 = time.perf_counter()
        for lo in range(0, cfg.epoch_size, cfg.batch_size):
            batch = data.train_pairs.take(order[lo : lo + cfg.batch_size])
            train_step(
                net,
                opt,
                data.demos,
                batch,
                cfg.lam_l1,
                cpu,
                bf16,
                True,
                cfg.max_batch_frames,
                cfg.augment,
                aug_rng,
            )
        t1 = time.perf_counter()
        evaluate(net, data, cfg, cpu, bf16, True)
        eval_s.append(time.perf_counter() - t1)
        train_s.append(t1 - t0)
    return {
        "variant": cfg.variant,
        "train_s": sum(train_s) / epochs,
        "eval_s": sum(eval_s) / epochs,
        "max_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--out", default=None, help="JSON lines file for the results")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one variant
    args = p.parse_args()
    if args.one is not None:
        print(json.dumps(one(json.loads(args.one), args.epochs)), flush=True)
        return
    rows = []
    for v in VARIANTS:
        out = subprocess.run(
            [sys.executable, __file__, "--one", json.dumps(v), "--epochs", str(args.epochs)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    ref = rows[0]["train_s"] + rows[0]["eval_s"]
    print(f"{'variant':32s} {'train s':>8s} {'eval s':>7s} {'x seed':>7s} {'peak GB':>8s}")
    for r in rows:
        r["ratio_to_seed"] = (r["train_s"] + r["eval_s"]) / ref
        print(
            f"{r['variant']:32s} {r['train_s']:8.1f} {r['eval_s']:7.1f} "
            f"{r['ratio_to_seed']:7.2f} {r['max_rss_gb']:8.2f}"
        )
    if args.out:
        Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
