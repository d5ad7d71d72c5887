"""Benchmark: the cost of one T-REX training step on one pair, the original project's way and ours.

What bounds train_reward's speed-up over the original project's loop at equal quality (issue
10). The original loop reaches its best validation accuracy after ~1000 single-pair Adam steps
(bench_train_reward.py); a trainer that follows the same optimiser can only be faster by
making each step cheaper and evaluating more cheaply. This script times that step, in one
process, on the same frames:

* ``original``: the original project's step as benchmarks/reference_trex.py has it (fp32, NCHW,
  each snippet through the network on its own, CrossEntropy + L1, Adam);
* ``auto``: trex.reward.passes.train_step on a one-pair batch with what ``--precision auto``
  runs on this CPU (bf16 autocast where the CPU has native bf16, channels_last, the frames in
  chunks of :func:`trex.common.device.network_chunk`), what ``--batch_size 1`` runs;
* ``ours_fp32``: the same in fp32 (channels_last): what ``--precision auto`` runs on a CPU
  without native bf16;
* ``ours_plain``: fp32 in the standard NCHW layout, what ``--precision fp32`` runs;

plus the forward-only rate per frame (what evaluation costs) and, for ``ours``, the share of
the step each operator takes (torch.profiler), and the best case it implies: the original project's
1000 steps in ``ours`` steps with free evaluation.

    python benchmarks/bench_reward_step.py --threads 1 --out bench_reward_step.json
    # with real frames:
    python benchmarks/bench_reward_step.py --threads 1 --demo_csv study/demos/demo_infos.csv
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

# Run as a script from anywhere: put the repository root and benchmarks/ on the path before
# importing trex and reference_trex.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from machine import machine_record
from reference_trex import ReferenceNet, reference_step

from trex.common.device import autocast, network_chunk, use_bf16
from trex.reward.nets import CnnRewardNet, forward_in_chunks, prepare_net
from trex.reward.pairs import DemoSet, PairSet
from trex.reward.passes import train_step


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1, as bench_train_reward)"
    )
    p.add_argument(
        "--snippet_length",
        type=int,
        default=60,
        help="frames per snippet (default 60, the mean of the original project's 20-100)",
    )
    p.add_argument(
        "--repeats", type=int, default=30, help="timed steps per trainer (after 5 warm-up steps)"
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds over the trainers, interleaved; the median round is reported",
    )
    p.add_argument(
        "--demo_csv",
        default=None,
        help=(
            "take the two snippets from the first two demos of this store (default: random pixels)"
        ),
    )
    p.add_argument("--out", default=None, help="write the results as JSON here")
    return p.parse_args(argv)


def snippet_frames(args: argparse.Namespace) -> np.ndarray:
    """uint8 (2L, 64, 64, 3): snippet 0 then snippet 1."""
    n = args.snippet_length
    if args.demo_csv is None:
        return np.random.default_rng(0).integers(0, 256, (2 * n, 64, 64, 3), dtype=np.uint8)
    from trex.demos.store import DemoIndex

    index = DemoIndex.read([args.demo_csv])
    long_enough = index.filter(min_length=n)
    if len(long_enough.df) < 2:
        raise SystemExit(f"--demo_csv {args.demo_csv}: fewer than two demos of {n}+ frames")
    demos = DemoSet.from_index(long_enough, long_enough.ids()[:2])
    return np.concatenate([demos.frames[demos.offsets[i] : demos.offsets[i] + n] for i in range(2)])


def timed(step, repeats: int) -> float:
    """Mean seconds per call over ``repeats`` calls, after 5 warm-up calls."""
    for _ in range(5):
        step()
    t0 = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - t0) / repeats


def make_trainers(frames: np.ndarray, n: int) -> dict[str, tuple]:
    """name -> (train step, forward of all 2n frames)."""
    torch.manual_seed(0)
    original_net = ReferenceNet()
    original_opt = torch.optim.Adam(original_net.parameters(), lr=5e-5, weight_decay=0.01)

    def original_step() -> None:
        reference_step(original_net, original_opt, (frames[:n], frames[n:]), 0.001)

    @torch.no_grad()
    def original_forward() -> None:
        original_net.rewards(frames)

    out = {"original": (original_step, original_forward)}
    demos = DemoSet.from_arrays(
        [frames[:n], frames[n:]], [np.zeros(n, np.float32), np.ones(n, np.float32)]
    )
    pair = PairSet(np.array([[0, 1]]), np.array([[0, 0]]), np.array([n]), np.array([True]))
    device = torch.device("cpu")
    for name, bf16, channels_last in (
        ("auto", use_bf16("auto", device), True),
        ("ours_fp32", False, True),
        ("ours_plain", False, False),
    ):
        torch.manual_seed(0)
        net = prepare_net(CnnRewardNet(), device, channels_last=channels_last)
        opt = torch.optim.Adam(net.parameters(), lr=5e-5, weight_decay=0.01)
        # the layout each path feeds the network (a permuted view alone would be channels_last
        # in memory, as the original project's input is)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().contiguous(memory_format=fmt)

        def step(net=net, opt=opt, bf16=bf16, channels_last=channels_last) -> None:
            train_step(net, opt, demos, pair, 0.001, device, bf16, channels_last, max_frames=1024)

        @torch.no_grad()
        def forward(net=net, x=x, bf16=bf16) -> None:
            with autocast(device, bf16):
                forward_in_chunks(
                    net.forward_members, x, network_chunk("reward_forward", device, bf16)
                )

        out[name] = (step, forward)
    return out


def op_shares(step, repeats: int = 10) -> list[dict]:
    """The operators taking the most self CPU time in ``repeats`` steps, with their share."""
    from torch.profiler import profile

    for _ in range(3):
        step()
    with profile() as prof:
        for _ in range(repeats):
            step()
    rows = [(e.key, e.self_cpu_time_total) for e in prof.key_averages()]
    total = sum(t for _, t in rows)
    rows.sort(key=lambda r: -r[1])
    return [
        {"op": k, "share": round(t / total, 3), "ms_per_step": round(t / repeats / 1000, 2)}
        for k, t in rows[:8]
    ]


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    frames = snippet_frames(args)
    n = args.snippet_length
    trainers = make_trainers(frames, n)
    rounds: dict[str, list[tuple[float, float]]] = {k: [] for k in trainers}
    for _ in range(args.rounds):
        for name, (step, forward) in trainers.items():
            rounds[name].append((timed(step, args.repeats), timed(forward, args.repeats)))
    machine = machine_record(args.threads)
    res: dict = {
        "cpu": machine["cpu"],
        "cpu_flags": machine["cpu_flags"],
        "machine": machine,
        "args": vars(args),
        "trainers": {},
    }
    for name, rs in rounds.items():
        step_s = float(np.median([r[0] for r in rs]))
        fwd_s = float(np.median([r[1] for r in rs]))
        res["trainers"][name] = {
            "step_ms": round(step_s * 1000, 1),
            "pair_steps_per_s": round(1 / step_s, 2),
            "forward_frames_per_s": round(2 * n / fwd_s, 1),
            "rounds_step_ms": [round(r[0] * 1000, 1) for r in rs],
        }
    original_ms = res["trainers"]["original"]["step_ms"]
    for row in res["trainers"].values():
        row["step_speedup_vs_original"] = round(original_ms / row["step_ms"], 2)
    res["auto_speedup_vs_original"] = res["trainers"]["auto"]["step_speedup_vs_original"]
    res["auto_op_shares"] = op_shares(trainers["auto"][0])
    res["original_1000_steps_s"] = round(original_ms, 1)
    res["auto_1000_steps_s"] = res["trainers"]["auto"]["step_ms"]  # 1000 steps of x ms = x s
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))
    print(
        f"one training step on one pair of {n}-frame snippets, {args.threads} torch thread(s), "
        f"median of {args.rounds} rounds of {args.repeats} steps"
    )
    print(f"{'trainer':>10} {'ms/step':>8} {'x orig':>7} {'fwd frames/s':>13}")
    for name, row in res["trainers"].items():
        print(
            f"{name:>10} {row['step_ms']:>8} {row['step_speedup_vs_original']:>7} "
            f"{row['forward_frames_per_s']:>13}"
        )
    print("auto, where the step's time goes:")
    for r in res["auto_op_shares"]:
        print(f"  {r['op']:<40} {100 * r['share']:5.1f}%  {r['ms_per_step']:6.2f} ms")
    print(
        "1000 single-pair steps (the original project's steps to its best validation accuracy): "
        f"original {res['original_1000_steps_s']} s, auto {res['auto_1000_steps_s']} s"
    )


if __name__ == "__main__":
    main()
