"""Does fitting fewer comparisons per round learn a worse reward? A replay of a finished
train_preferences run's labelled rounds (its ``preferences/round_*.npz``), fitted again with
each ``--settings`` of (initial_fit_pairs, fit_pairs), the fit being most of the stage's
overhead over plain PPO (bench_preferences_overhead.py).

Per round u the network is first scored on round u's labelled comparisons, which it has not
been fitted on (the agent's newest behaviour, as train_preferences' ``heldout_acc``), then
round u joins the buffer and the network is fitted as the stage does (fresh original-project
CNN, the stage's Adam settings, warm-started). It replays the labels a run collected; it does
not close the loop (the policy does not see the replayed reward), so it measures reward
learning at fixed data, not PPO's return. With ``--save_dir`` each final network is written in
the model format (the level pool and game of ``--like``, the run's own reward model), for
eval_reward on the study's test demos.

    python benchmarks/bench_fit_pairs_replay.py --rounds_dir RUN/preferences \
        --like RUN/reward_model.safetensors --save_dir replay --settings 2000:400 1000:128 \
        --out benchmarks/results/fit_pairs_replay_intel_amx.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
from machine import machine_record  # noqa: E402

from trex.common.device import pick_device, use_bf16  # noqa: E402
from trex.preferences.buffer import Comparisons, PreferenceBuffer, load_round  # noqa: E402
from trex.preferences.config import TrainPreferencesConfig  # noqa: E402
from trex.preferences.fitting import fit_on_buffer  # noqa: E402
from trex.reward.metrics import pair_accuracy  # noqa: E402
from trex.reward.nets import prepare_net  # noqa: E402
from trex.reward.passes import frame_rewards, pair_returns  # noqa: E402
from trex.reward.trex import step_lr  # noqa: E402


def round_accuracy(
    net: torch.nn.Module,
    segments: list[np.ndarray],
    comparisons: Comparisons,
    device: torch.device,
    bf16: bool,
) -> float:
    """Share of a round's comparisons (second preferred) the net's snippet returns order
    right; segments uint8 (L_i, 64, 64, 3)."""
    held_out = PreferenceBuffer(max(len(comparisons), 1))
    held_out.add(segments, comparisons)
    demos, pairs = held_out.training_set()
    rewards = frame_rewards(net, demos.frames, device, bf16, offsets=demos.offsets)
    return pair_accuracy(pair_returns(demos, rewards, pairs)[0])


def replay(
    rounds: list[Path], initial: int, later: int, seed: int, buffer_size: int
) -> tuple[torch.nn.Module, dict[str, object]]:
    cfg = TrainPreferencesConfig(seed=seed)
    trex = cfg.trex_config()
    torch.manual_seed(seed)
    device = pick_device("cpu")
    bf16 = use_bf16("auto", device)
    net = prepare_net(trex.make_net(), device)
    opt = torch.optim.Adam(net.parameters(), lr=step_lr(trex), weight_decay=cfg.weight_decay)
    buffer = PreferenceBuffer(buffer_size)
    acc, fit_s = [], 0.0
    for i, path in enumerate(rounds):
        segments, comparisons = load_round(path)
        if i > 0 and len(comparisons):
            acc.append(round_accuracy(net, segments, comparisons, device, bf16))
        buffer.add(segments, comparisons)
        rng = np.random.default_rng([seed, i, 2])
        stats = fit_on_buffer(
            net, opt, buffer, initial if i == 0 else later, trex, rng, device, bf16
        )
        fit_s += stats["fit_s"]
    a = np.array(acc)
    return net, {
        "initial_fit_pairs": initial,
        "fit_pairs": later,
        "seed": seed,
        "fit_s_total": fit_s,
        "next_round_acc_mean": float(a.mean()),
        "next_round_acc_last10": float(a[-10:].mean()),
        "next_round_acc": [round(float(x), 4) for x in a],
    }


def save_like(path: Path, net: torch.nn.Module, like: str, rm_id: str, seed: int) -> None:
    """Write ``net`` in the model format with ``like``'s game and level pool."""
    from trex.reward.model_file import read_metadata, save_reward_model

    meta = read_metadata(like)
    pool = ("start_level", "num_levels", "use_backgrounds", "method")
    save_reward_model(
        path, net, env_name=meta["env_name"], mode=meta["mode"], num_dems=0, seed=seed,
        rm_id=rm_id, extra={k: meta[k] for k in pool if k in meta},
    )  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds_dir", required=True)
    p.add_argument("--settings", nargs="+", default=["2000:400", "1000:128"])
    p.add_argument("--seeds", nargs="+", type=int, default=[1])
    p.add_argument("--buffer_size", type=int, default=3000)
    p.add_argument("--like", default=None, help="the run's reward model (for --save_dir)")
    p.add_argument("--save_dir", default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    if args.save_dir and not args.like:
        raise SystemExit("--save_dir needs --like (the run's reward model file)")
    torch.set_num_threads(1)
    rounds = sorted(Path(args.rounds_dir).glob("round_*.npz"))
    if not rounds:
        raise SystemExit(f"no round_*.npz in {args.rounds_dir}")
    rows = []
    t0 = time.perf_counter()
    for seed in args.seeds:
        for setting in args.settings:
            initial, later = (int(x) for x in setting.split(":"))
            net, row = replay(rounds, initial, later, seed, args.buffer_size)
            rows.append(row)
            if args.save_dir:
                rm_id = f"replay_{initial}_{later}_s{seed}"
                save_like(Path(args.save_dir) / f"{rm_id}.safetensors", net, args.like, rm_id, seed)
            acc, last = row["next_round_acc_mean"], row["next_round_acc_last10"]
            print(
                f"seed {seed} {initial}:{later}: next-round accuracy {acc:.3f} "
                f"(last 10 {last:.3f}), fit {row['fit_s_total']:.0f} s",
                flush=True,
            )
    record = {
        "claim": "fitting fewer comparisons per round learns as good a reward (replayed labels)",
        "command": " ".join(sys.argv),
        "machine": machine_record(threads=1),
        "rounds_dir": args.rounds_dir,
        "rounds": len(rounds),
        "wall_s": time.perf_counter() - t0,
        "rows": rows,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
