"""Claim to test (issue 23, item 1): does a maintained CPU inference runtime (ONNX Runtime)
make the forward-only paths at least 1.5x faster than the best torch path, with the same
results to tolerance? If so it becomes an optional extra; if not, this records why not.

The forward-only paths: the reward forward (eval_reward, PPO on a learned reward, the
preference learner; the original project's CNN and the IMPALA reward net) and the rollout
forward of gen_demos and test_policy (the IMPALA policy's logits). Each is timed, one thread,
in the same run: torch as ``--precision auto`` runs it on this CPU (what the toolkit does:
chunked calls, bf16 autocast + channels_last where the CPU has avx512_bf16), torch
channels_last fp32 (what ``auto`` runs on a CPU without avx512_bf16), torch plain fp32, and
ONNX Runtime (CPU execution provider, the network exported from torch in
fp32, graph optimisations on). The agreement is the largest difference from torch fp32,
relative to the output's spread.

    pip install onnxruntime onnx   # not a dependency of the toolkit
    python benchmarks/bench_onnx_forward.py --out benchmarks/results/onnx_forward_avx512bf16.json
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_record  # noqa: E402


def timed(fn, x, repeats: int) -> float:
    for _ in range(3):
        fn(x)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn(x)
    return (time.perf_counter() - t0) / repeats


class PolicyLogits(torch.nn.Module):
    """The IMPALA policy's action logits from uint8 observations (N, 3, 64, 64) as float."""

    def __init__(self, policy) -> None:
        super().__init__()
        self.features = policy.features_extractor
        self.head = policy.action_net

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(obs / 255.0))


def onnx_session(module: torch.nn.Module, example: torch.Tensor):
    import onnxruntime as ort

    buf = io.BytesIO()
    torch.onnx.export(
        module, (example,), buf, input_names=["x"], output_names=["y"],
        dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False,
    )  # fmt: skip
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=[64, 512])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    import onnxruntime as ort

    from trex.common.device import use_bf16
    from trex.common.envs import make_procgen_env
    from trex.reward.nets import build_net, predict_frame_rewards, prepare_net
    from trex.rl.policy import build_ppo

    cpu = torch.device("cpu")
    bf16 = use_bf16("auto", cpu)
    rng = np.random.default_rng(0)
    rows = []
    env = make_procgen_env("coinrun", 2)
    ppo = build_ppo(env, nsteps=16, nminibatches=1, ppo_epochs=1, learning_rate=5e-4,
                    gamma=0.999, lam=0.95, clip_range=0.2, ent_coef=0.01, device=cpu,
                    precision="fp32")  # fmt: skip
    env.close()
    torch.manual_seed(0)
    paths = {
        "reward forward, original CNN": build_net("seed_cnn").eval(),
        "reward forward, IMPALA reward net": build_net("impala").eval(),
        "rollout forward, IMPALA policy logits": PolicyLogits(ppo.policy).eval(),
    }
    for name, net in paths.items():
        is_policy = name.startswith("rollout")
        fast = prepare_net(net, cpu, True) if not is_policy else net
        for n in args.batches:
            obs = rng.integers(0, 255, (n, 3, 64, 64), dtype=np.uint8)
            x32 = torch.from_numpy(obs).float()
            if is_policy:
                # what auto runs for the policy: channels_last + bf16 autocast where fast
                cl = torch.from_numpy(obs).contiguous(memory_format=torch.channels_last)

                @torch.no_grad()
                def torch_auto(o, m=net, cl=cl):
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                        return m(cl.float()).float()

                @torch.no_grad()
                def torch_fp32(o, m=net):
                    return m(torch.from_numpy(o).float())

                @torch.no_grad()
                def torch_cl_fp32(o, m=net, cl=cl):
                    return m(cl.float())
            else:

                def torch_auto(o, m=fast):
                    return predict_frame_rewards(m, o, cpu, bf16, True)

                def torch_fp32(o, m=net):
                    return predict_frame_rewards(m, o, cpu, False, False)

                def torch_cl_fp32(o, m=fast):
                    return predict_frame_rewards(m, o, cpu, False, True)

            sess = onnx_session(net, x32[:8])

            def run_ort(o, s=sess):
                return s.run(None, {"x": o.astype(np.float32)})[0]

            ref = np.asarray(torch_fp32(obs), dtype=np.float64).ravel()
            got = np.asarray(run_ort(obs), dtype=np.float64).ravel()
            auto_out = np.asarray(torch_auto(obs), dtype=np.float64).ravel()
            spread = float(ref.std()) or 1.0
            t_auto = timed(torch_auto, obs, args.repeats)
            t_fp32 = timed(torch_fp32, obs, args.repeats)
            t_ort = timed(run_ort, obs, args.repeats)
            t_cl = timed(torch_cl_fp32, obs, args.repeats)
            best = min(t_auto, t_fp32)
            rows.append({
                "path": name, "batch": n,
                "torch_auto_frames_per_s": n / t_auto,
                "torch_fp32_frames_per_s": n / t_fp32,
                "torch_channels_last_fp32_frames_per_s": n / t_cl,
                "onnxruntime_vs_torch_channels_last_fp32": t_cl / t_ort,
                "onnxruntime_frames_per_s": n / t_ort,
                "onnxruntime_vs_best_torch": best / t_ort,
                "onnxruntime_max_diff_rel": float(np.abs(got - ref).max() / spread),
                "torch_auto_max_diff_rel": float(np.abs(auto_out - ref).max() / spread),
            })  # fmt: skip
            print(json.dumps(rows[-1]))
    record = {
        "claim": "ONNX Runtime at least 1.5x the best torch path on the forward-only paths",
        "command": " ".join(sys.argv),
        "machine": machine_record(threads=1),
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
        "rows": rows,
        "met": all(r["onnxruntime_vs_best_torch"] >= 1.5 for r in rows),
    }
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
