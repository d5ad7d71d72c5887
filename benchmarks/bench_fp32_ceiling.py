"""Claim: in fp32, the T-REX step and the PPO training pass of ``--precision auto`` are near
the ceiling this CPU core allows, so a further speed-up over the reference needs cheaper
arithmetic (bf16), not a better layout.

For each path, the network's forward + backward (what one training step computes, without the
optimiser) is run in fp32, one thread, interleaved rounds:

* ``trex_step``: the original CNN on one pair of 60-frame snippets (120 frames); ``auto`` is the
  toolkit's path (channels_last, frames in chunks of ``network_chunk("trex_step")``), the
  reference the original project's call (each snippet on its own, NHWC frames permuted to
  NCHW: a permuted view that is channels_last in memory, so its convolutions already take
  oneDNN's channels_last kernels);
* ``ppo_pass``: the IMPALA policy's features on a PPO minibatch (default 2048 samples,
  train-procgen's); ``auto`` is the policy's fast path (channels_last, chunks of
  ``network_chunk("ppo_train")``), the reference what ``--precision fp32`` runs (NCHW, the
  same chunks), bench_ppo_precision.py's reference.

The floating-point operations of each pass are counted (``torch.utils.flop_counter``) and set
against this core's fp32 matrix-multiply rate (a 2048 x 2048 sgemm, same thread count): the
**ceiling** is the reference's time over the time the pass would take if every operation ran
at that rate, the most any fp32 path could gain over the reference. The record carries the CPU
model and flags (benchmarks/machine.py). To emulate an AVX2-only CPU on an AVX-512 one, cap
MKL's kernels too (its sgemm and the dense layers)::

    python benchmarks/bench_fp32_ceiling.py --out fp32_ceiling.json
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 \\
        TREX_CPU_FLAGS="avx2 fma" python benchmarks/bench_fp32_ceiling.py --out ceiling_avx2.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import machine_record  # noqa: E402

from trex.common.device import network_chunk  # noqa: E402
from trex.nets.impala import EMBEDDING_DIM, impala_stacks  # noqa: E402
from trex.reward.nets import CnnRewardNet  # noqa: E402

CPU = torch.device("cpu")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--minibatch", type=int, default=2048, help="PPO samples per pass (2048)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median reported)")
    p.add_argument(
        "--repeats", type=int, default=10, help="T-REX passes / sgemms per round (PPO: 1)"
    )
    p.add_argument("--out", default=None, help="write the results as JSON here")
    return p.parse_args(argv)


def chunked_pass(net: nn.Module, x: torch.Tensor, chunk: int | None) -> None:
    """Forward + backward of ``net`` on x (N, C, H, W), in calls of ``chunk`` rows."""
    for part in x.split(chunk or len(x)):
        net(part).float().sum().backward()


class PolicyFeatures(nn.Module):
    """The PPO policy's trunk (IMPALA stacks, ReLU, the 256-unit dense layer) with its two
    heads (15 action logits, one value), what a PPO minibatch runs forward and backward."""

    def __init__(self) -> None:
        super().__init__()
        self.stacks, flat = impala_stacks(3, 64, 64)
        self.fc = nn.Linear(flat, EMBEDDING_DIM)
        self.heads = nn.Linear(EMBEDDING_DIM, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc(torch.relu(torch.flatten(self.stacks(x), 1))))
        return self.heads(h)


def paths(minibatch: int) -> dict[str, dict[str, Callable[[], None]]]:
    """path -> {"auto": pass, "reference": pass, "flops_of": pass to count}."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    out: dict[str, dict[str, Callable[[], None]]] = {}

    cnn = CnnRewardNet().model
    cnn_cl = copy.deepcopy(cnn).to(memory_format=torch.channels_last)
    frames = torch.randint(0, 256, (120, 64, 64, 3), generator=gen, dtype=torch.uint8)
    nhwc_view = frames.float().permute(0, 3, 1, 2)  # the original's input: channels_last memory
    x_cl = nhwc_view.contiguous(memory_format=torch.channels_last)
    step_chunk = network_chunk("trex_step", CPU, False, "seed_cnn")
    out["trex_step"] = {
        "auto": lambda: chunked_pass(cnn_cl, x_cl, step_chunk),
        "reference": lambda: chunked_pass(cnn, nhwc_view, 60),
    }

    policy = PolicyFeatures()
    policy_cl = copy.deepcopy(policy).to(memory_format=torch.channels_last)
    obs = torch.rand((minibatch, 3, 64, 64), generator=gen)
    obs_cl = obs.contiguous(memory_format=torch.channels_last)
    ppo_chunk = network_chunk("ppo_train", CPU, False, "impala")
    out["ppo_pass"] = {
        "auto": lambda: chunked_pass(policy_cl, obs_cl, ppo_chunk),
        "reference": lambda: chunked_pass(policy, obs, ppo_chunk),
    }
    return out


def count_flops(fn: Callable[[], None]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    a = torch.randn(2048, 2048)
    b = torch.randn(2048, 2048)
    cases = {"sgemm": {"sgemm": lambda: torch.mm(a, b)}} | paths(args.minibatch)
    flops = {"sgemm": {"sgemm": 2 * 2048**3}}
    for name, fns in cases.items():
        if name != "sgemm":
            flops[name] = {k: count_flops(fn) for k, fn in fns.items()}
        for fn in fns.values():
            fn()  # warm-up
    times: dict[tuple[str, str], list[float]] = {(n, k): [] for n, f in cases.items() for k in f}
    for _ in range(args.rounds):
        for (name, kind), ts in times.items():
            n = 1 if name == "ppo_pass" else args.repeats
            t0 = time.perf_counter()
            for _ in range(n):
                cases[name][kind]()
            ts.append((time.perf_counter() - t0) / n)
    sec = {key: statistics.median(ts) for key, ts in times.items()}
    gemm_rate = flops["sgemm"]["sgemm"] / sec[("sgemm", "sgemm")]
    res: dict = {"machine": machine_record(args.threads), "args": vars(args)}
    res["sgemm_gflops"] = round(gemm_rate / 1e9, 1)
    print(f"fp32 sgemm 2048^3: {gemm_rate / 1e9:.1f} GFLOP/s ({args.threads} thread(s))")
    print(f"{'path':>10} {'kind':>10} {'ms':>8} {'GFLOP':>7} {'GFLOP/s':>8} {'of sgemm':>9}")
    for name in cases:
        if name == "sgemm":
            continue
        row: dict = {}
        for kind in cases[name]:
            s, f = sec[(name, kind)], flops[name][kind]
            row[kind] = {
                "ms": round(s * 1000, 1),
                "gflop": round(f / 1e9, 3),
                "gflops": round(f / s / 1e9, 1),
                "share_of_sgemm": round(f / s / gemm_rate, 2),
            }
            print(
                f"{name:>10} {kind:>10} {s * 1000:8.1f} {f / 1e9:7.2f} {f / s / 1e9:8.1f} "
                f"{f / s / gemm_rate:9.2f}"
            )
        ref_s = sec[(name, "reference")]
        row["auto_speedup"] = round(ref_s / sec[(name, "auto")], 2)
        row["ceiling_speedup"] = round(ref_s / (flops[name]["reference"] / gemm_rate), 2)
        print(
            f"{name:>10}: auto {row['auto_speedup']}x the reference; "
            f"ceiling at the sgemm rate {row['ceiling_speedup']}x"
        )
        res[name] = row
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
