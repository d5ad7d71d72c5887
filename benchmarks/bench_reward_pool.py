"""The reward CNN's forward without gradients: the pooling by strided maxima (MaxPool4x2, now)
against ``nn.MaxPool2d(4, stride=2)`` (the reference, the toolkit until this change).

PyTorch's CPU max-pool kernel computes argmax indices for a backward even under no_grad, and
it was most of the original-project CNN's forward (63% of the rollout forward's profile on
the Intel VM). Measured on the paths that score frames without gradients: one call on a
rollout step's 64 observations (train_preferences' and ``train_policy --rm_id``'s reward,
``--batch 64``) and predict_frame_rewards over 2,048 frames (eval_reward and the
held-out scoring, ``--batch 2048``), each precision, the arms alternating in one process;
outputs must be equal.

    python benchmarks/bench_reward_pool.py --out benchmarks/results/reward_pool_intel_amx.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
from machine import machine_record  # noqa: E402

from trex.common.device import pick_device  # noqa: E402
from trex.reward.nets import MaxPool4x2, build_net, predict_frame_rewards, prepare_net  # noqa: E402


def with_reference_pooling(net: nn.Module) -> nn.Module:
    """A copy of ``net`` whose MaxPool4x2 layers are plain nn.MaxPool2d(4, stride=2)."""
    import copy

    ref = copy.deepcopy(net)
    for module in ref.modules():
        for child_name, child in module.named_children():
            if isinstance(child, MaxPool4x2):
                setattr(module, child_name, nn.MaxPool2d(4, stride=2))
    return ref


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=[64, 2048])
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    dev = pick_device("cpu")
    torch.manual_seed(0)
    net = prepare_net(build_net("seed_cnn"), dev)
    arms = {"max_pool2d_reference": with_reference_pooling(net), "strided_maxima": net}
    rng = np.random.default_rng(0)
    rows = []
    for batch in args.batches:
        frames = rng.integers(0, 255, (batch, 64, 64, 3), dtype=np.uint8)
        for bf16 in (True, False):
            outs = {k: predict_frame_rewards(m, frames, dev, bf16) for k, m in arms.items()}
            same = bool(np.array_equal(*outs.values()))
            calls = max(1, 4096 // batch)
            secs: dict[str, list[float]] = {k: [] for k in arms}
            for _ in range(args.repeats):
                for k, m in arms.items():
                    t0 = time.perf_counter()
                    for _ in range(calls):
                        predict_frame_rewards(m, frames, dev, bf16)
                    secs[k].append((time.perf_counter() - t0) / calls / batch * 1e3)
            med = {k: float(np.median(v)) for k, v in secs.items()}
            row = {
                "frames_per_call": batch,
                "precision": "bf16" if bf16 else "fp32",
                "ms_per_frame": med,
                "speedup": med["max_pool2d_reference"] / med["strided_maxima"],
                "outputs_equal": same,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    record = {
        "claim": "the reward CNN's no-grad forward with strided-maxima pooling vs nn.MaxPool2d",
        "command": " ".join(sys.argv),
        "machine": machine_record(threads=1),
        "rows": rows,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
