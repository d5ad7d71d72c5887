"""A training step over more distinct frames than ``max_batch_frames``: pairs in groups, one
pass each (now), against the earlier two-pass chunking of the whole batch (the reference).

train_preferences fits 16 comparisons of two 50-frame segments per Adam step: 1,600 distinct
frames against ``--max_batch_frames 256``. The reference (the toolkit until this change)
scored the batch's frames in chunks without gradients, took the loss's gradient with respect
to every frame's reward, then ran a second forward/backward per chunk: one extra forward.
Now the pairs go through in groups of at most 256 snippet frames, one forward/backward each,
the loss of each weighted by its share of the batch, so the gradients add up to the same
(exact) batch gradient with the same memory bound. Both arms fit the same buffer (a finished
run's first ``--rounds`` labelled rounds) from the same initial network with the same pair
order and Adam settings, and the benchmark reports their fit seconds (median over
``--repeats``, the arms alternating) and how far apart the fitted networks end.

    python benchmarks/bench_fit_groups.py --rounds_dir RUN/preferences --rounds 8 \
        --pairs 400 --repeats 3 --out benchmarks/results/fit_groups_intel_amx.json
"""

from __future__ import annotations

import argparse
import copy
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

import trex.preferences.fitting as fitting  # noqa: E402
from trex.common.device import pick_device, use_bf16  # noqa: E402
from trex.preferences.buffer import PreferenceBuffer, load_round  # noqa: E402
from trex.preferences.config import TrainPreferencesConfig  # noqa: E402
from trex.reward.nets import prepare_net  # noqa: E402
from trex.reward.passes import _batch_frames, _BatchInput, _group_pass, train_step  # noqa: E402
from trex.reward.trex import step_lr  # noqa: E402


def two_pass_step(
    net, opt, demos, pairs, lam_l1, device, bf16, channels_last=True, max_frames=1024,
    augment="none", rng=None,
):  # fmt: skip
    """The reference: the earlier train_step over more than ``max_frames`` distinct frames,
    which is train_step's two-pass path (a no-grad forward of every chunk, then a
    forward/backward per chunk) run on the whole batch as one group."""
    opt.zero_grad(set_to_none=True)
    uniq, _, _ = _batch_frames(demos, pairs)
    inputs = _BatchInput(net, demos, uniq, device, channels_last, augment, rng)
    whole = slice(0, len(pairs))
    ret, absr, loss = _group_pass(inputs, demos, pairs, whole, uniq, lam_l1, bf16, max_frames)
    opt.step()
    m = ret.shape[0]
    return float(loss) / m, ret.mean(0), absr.mean(0), len(uniq)


def fit_once(step, net0, buffer, pairs, cfg, device, bf16, seed):
    """Fit a copy of ``net0`` with ``step`` as train_preferences does; (seconds, stats, net)."""
    net = copy.deepcopy(net0)
    trex = cfg.trex_config()
    opt = torch.optim.Adam(net.parameters(), lr=step_lr(trex), weight_decay=cfg.weight_decay)
    fitting.train_step = step
    try:
        t0 = time.perf_counter()
        stats = fitting.fit_on_buffer(
            net, opt, buffer, pairs, trex, np.random.default_rng(seed), device, bf16
        )
        return time.perf_counter() - t0, stats, net
    finally:
        fitting.train_step = train_step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds_dir", required=True)
    p.add_argument("--rounds", type=int, default=8, help="labelled rounds in the buffer")
    p.add_argument("--pairs", type=int, default=400, help="comparisons per fit (the default)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    rounds = sorted(Path(args.rounds_dir).glob("round_*.npz"))[: args.rounds]
    if not rounds:
        raise SystemExit(f"no round_*.npz in {args.rounds_dir}")
    cfg = TrainPreferencesConfig(seed=args.seed)
    buffer = PreferenceBuffer(cfg.buffer_size)
    for path in rounds:
        buffer.add(*load_round(path))
    device = pick_device("cpu")
    bf16 = use_bf16(args.precision, device)
    torch.manual_seed(args.seed)
    net0 = prepare_net(cfg.trex_config().make_net(), device)
    arms = {"two_pass_reference": two_pass_step, "pair_groups": train_step}
    seconds: dict[str, list[float]] = {name: [] for name in arms}
    last: dict[str, tuple[dict, torch.nn.Module]] = {}
    fit_once(train_step, net0, buffer, 32, cfg, device, bf16, args.seed)  # warm-up
    for rep in range(args.repeats):
        for name, step in arms.items():
            s, stats, net = fit_once(step, net0, buffer, args.pairs, cfg, device, bf16, args.seed)
            seconds[name].append(s)
            last[name] = (stats, net)
            print(f"repeat {rep} {name}: {s:.1f} s (loss {stats['fit_loss']:.4f})", flush=True)
    ref_params = torch.cat(
        [q.detach().flatten() for q in last["two_pass_reference"][1].parameters()]
    )
    new_params = torch.cat([q.detach().flatten() for q in last["pair_groups"][1].parameters()])
    start = torch.cat([q.detach().flatten() for q in net0.parameters()])
    med = {name: float(np.median(v)) for name, v in seconds.items()}
    record = {
        "claim": "a step over more than max_batch_frames frames: pair groups vs two-pass chunks",
        "command": " ".join(sys.argv),
        "machine": machine_record(threads=1),
        "bf16": bf16,
        "rounds_dir": args.rounds_dir,
        "comparisons_in_buffer": len(buffer),
        "pairs_per_fit": args.pairs,
        "batch_size": cfg.batch_size,
        "segment_frames_per_step": 2 * cfg.batch_size * cfg.segment_length,
        "max_batch_frames": cfg.max_batch_frames,
        "seconds": seconds,
        "median_s": med,
        "speedup": med["two_pass_reference"] / med["pair_groups"],
        "fit_loss": {name: last[name][0]["fit_loss"] for name in arms},
        "fit_acc": {name: last[name][0]["fit_acc"] for name in arms},
        "param_change_rel_diff": float(
            (new_params - ref_params).norm() / (ref_params - start).norm()
        ),
    }
    print(
        json.dumps(
            {k: record[k] for k in ("median_s", "speedup", "fit_loss", "param_change_rel_diff")}
        )
    )
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
