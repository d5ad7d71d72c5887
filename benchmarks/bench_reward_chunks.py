"""Benchmark: frames per network call on a CPU, for the reward networks' two hot paths.

``trex_step``: forward + backward of one T-REX batch (one pair of 60-frame snippets = 120
distinct frames, what ``--batch_size 1`` trains on); ``reward_forward``: scoring 512 frames
without gradients (eval_reward, validation, PPO on a learned reward); ``ppo_train``: the PPO
policy's IMPALA features, forward + backward on a 512-sample minibatch. Each is timed with the
network called on the whole batch and on chunks of 15-64 frames, in bf16 autocast and fp32
(channels_last both), interleaved over rounds so machine noise hits every setting alike. The
ratio ``speedup_vs_whole`` is against one call on the whole batch (what the toolkit did before
``trex.common.device.network_chunk``). Chunking changes no output (tests/test_device.py).

    python benchmarks/bench_reward_chunks.py --out chunks.json
    # an AVX2-only CPU emulated on an AVX-512 one: oneDNN and ATen capped at AVX2, no bf16
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 TREX_CPU_FLAGS="avx2 fma" \\
        python benchmarks/bench_reward_chunks.py --precisions fp32 --out chunks_avx2.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from gymnasium import spaces

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_record

from trex.common.device import CPU_CHUNKS
from trex.reward.nets import CnnRewardNet, ImpalaRewardNet, forward_in_chunks
from trex.rl.policy import ImpalaCNN

NETS = {"seed_cnn": CnnRewardNet, "impala": ImpalaRewardNet}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
    p.add_argument("--repeats", type=int, default=4, help="timed calls per setting and round")
    p.add_argument("--chunks", type=int, nargs="+", default=[0, 64, 48, 32, 15],
                   help="frames per call; 0 = the whole batch")  # fmt: skip
    p.add_argument("--precisions", nargs="+", default=["bf16", "fp32"], choices=["bf16", "fp32"])
    p.add_argument("--architectures", nargs="+", default=list(NETS), choices=list(NETS))
    p.add_argument(
        "--paths", nargs="+", default=["trex_step", "reward_forward", "ppo_train"],
        help="ppo_train: the IMPALA policy's features, forward + backward on 512 samples",
    )  # fmt: skip
    p.add_argument("--out", default=None, help="write the results as JSON here")
    return p.parse_args(argv)


def net_arch(name: str) -> str:
    """The architecture name CPU_CHUNKS keys a row by (the policy's is IMPALA's)."""
    return "impala" if name == "policy" else name


def timed(fn, repeats: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    frames = torch.from_numpy(rng.integers(0, 256, (512, 64, 64, 3), dtype=np.uint8))
    x_all = frames.permute(0, 3, 1, 2).float().contiguous(memory_format=torch.channels_last)
    x_step = x_all[:120]
    cases = {}
    for arch in args.architectures if {"trex_step", "reward_forward"} & set(args.paths) else []:
        torch.manual_seed(0)
        net = NETS[arch]().to(memory_format=torch.channels_last)
        for prec in args.precisions:
            bf16 = prec == "bf16"
            for chunk in args.chunks:
                c = None if chunk == 0 else chunk

                def step(net=net, bf16=bf16, c=c) -> None:
                    net.zero_grad(set_to_none=True)
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                        r = forward_in_chunks(net.forward_members, x_step, c)
                    r.float().sum().backward()

                @torch.no_grad()
                def forward(net=net, bf16=bf16, c=c) -> None:
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                        forward_in_chunks(net.forward_members, x_all, c)

                cases[(arch, prec, chunk, "trex_step")] = step
                cases[(arch, prec, chunk, "reward_forward")] = forward
    for prec in args.precisions if "ppo_train" in args.paths else []:
        # the PPO policy's features on a 512-sample minibatch (chunked inside ImpalaCNN)
        torch.manual_seed(0)
        ext = ImpalaCNN(spaces.Box(0, 255, (3, 64, 64), np.uint8), bf16=prec == "bf16")
        ext = ext.to(memory_format=torch.channels_last)
        x_ppo = (x_all / 255.0).contiguous(memory_format=torch.channels_last)
        for chunk in args.chunks:
            c = None if chunk == 0 else chunk

            def ppo(ext=ext, x=x_ppo, c=c or 512) -> None:
                ext.zero_grad(set_to_none=True)
                parts = [ext._features(x[lo : lo + c]) for lo in range(0, 512, c)]
                torch.cat(parts).sum().backward()

            cases[("policy", prec, chunk, "ppo_train")] = ppo
    times: dict = {k: [] for k in cases}
    for _ in range(args.rounds):
        for key, fn in cases.items():
            times[key].append(timed(fn, args.repeats))
    rows = []
    for (arch, prec, chunk, path), ts in times.items():
        s = float(np.median(ts))
        whole = float(np.median(times[(arch, prec, 0, path)])) if 0 in args.chunks else None
        rows.append({
            "architecture": arch, "precision": prec, "path": path,
            "chunk": chunk or "whole",
            "ms_per_call": round(s * 1000, 1),
            "frames_per_s": round((120 if path == "trex_step" else 512) / s, 1),
            "speedup_vs_whole": round(whole / s, 2) if whole else None,
            "toolkit_chunk": CPU_CHUNKS.get((path, net_arch(arch), prec == "bf16")) or "whole",
        })  # fmt: skip
    res = {"machine": machine_record(args.threads), "args": vars(args), "rows": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))
    m = res["machine"]
    print(f"{m['cpu']} flags {' '.join(m['cpu_flags'])}; {args.threads} thread(s)")
    head = ("arch", "prec", "path", "chunk", "ms", "frames/s", "x whole")
    print("{:>8} {:>5} {:>15} {:>6} {:>8} {:>9} {:>8}".format(*head))
    for r in rows:
        cells = [r[k] for k in ("architecture", "precision", "path", "chunk", "ms_per_call")]
        cells += [r["frames_per_s"], r["speedup_vs_whole"]]
        print("{:>8} {:>5} {:>15} {!s:>6} {:>8} {:>9} {!s:>8}".format(*cells))


if __name__ == "__main__":
    main()
