"""The benchmarks' reference trainer (benchmarks/reference_trex.py) has the original project's
behaviour, checked by what it produces: one pair per fp32 Adam step, each snippet on its own,
gives the toolkit's one-pair step exactly; evaluation is pair by pair; training learns a
learnable toy; early stopping keeps the best validation epoch."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from reference_trex import (  # noqa: E402
    ReferenceConfig,
    ReferenceNet,
    ReferenceTrainer,
    pair_by_pair,
    reference_step,
)

from trex.reward.nets import CnnRewardNet, prepare_net  # noqa: E402
from trex.reward.pairs import DemoSet, PairSet  # noqa: E402
from trex.reward.passes import train_step  # noqa: E402


def _frames(n: int, value: int, seed: int) -> np.ndarray:
    f = np.random.default_rng(seed).integers(0, 60, (n, 64, 64, 3), dtype=np.uint8)
    f[:, :10, :10] = value  # the brighter corner is the better snippet
    return f


def test_a_reference_step_is_the_toolkits_one_pair_fp32_step():
    a, b = _frames(7, 0, 1), _frames(9, 200, 2)[:7]
    torch.manual_seed(0)
    ref = ReferenceNet()
    torch.manual_seed(0)
    ours = prepare_net(CnnRewardNet(), torch.device("cpu"), channels_last=False)
    kw = dict(lr=5e-5, weight_decay=0.01)
    ref_opt = torch.optim.Adam(ref.parameters(), **kw)
    our_opt = torch.optim.Adam(ours.parameters(), **kw)
    demos = DemoSet.from_arrays([a, b], [np.zeros(7, np.float32), np.ones(7, np.float32)])
    pair = PairSet(np.array([[0, 1]]), np.zeros((1, 2), np.int64), np.array([7]), np.ones(1, bool))
    for _ in range(3):
        ref_loss = reference_step(ref, ref_opt, (a, b), 0.001)
        our_loss, *_ = train_step(
            ours, our_opt, demos, pair, 0.001, torch.device("cpu"), False, channels_last=False
        )
        assert ref_loss == pytest.approx(our_loss, rel=1e-4)
    # Adam's step is about lr wherever a gradient is ~0, whatever its rounding: weights agree
    # within a step's size, and the two networks' rewards agree
    for (name, p), q in zip(ref.model.named_parameters(), ours.model.parameters()):
        assert (p - q).abs().max() < 5e-5, name
    with torch.no_grad():
        x = torch.from_numpy(np.concatenate([a, b])).float().permute(0, 3, 1, 2)
        assert torch.allclose(ref.model(x), ours.model(x), rtol=1e-3, atol=1e-4)


def test_reference_learns_evaluates_pair_by_pair_and_keeps_the_best_epoch():
    rng = np.random.default_rng(0)
    pairs = [
        (_frames(6, 0, int(s)), _frames(6, 250, int(s) + 1)) for s in rng.integers(1e6, size=40)
    ]
    demos = [{"observations": _frames(8, v, v), "return": float(v)} for v in (0, 100, 200, 250)]
    cfg = ReferenceConfig(epoch_size=20, max_num_epochs=6, patience=2, lr=1e-3, n_eval=10)
    trainer = ReferenceTrainer(cfg, torch.device("cpu"), seed=0)
    result = trainer.learn_reward(pairs[:30], pairs[30:], pairs[30:], demos)
    vals = [row["val_acc"] for row in result.history]
    assert max(vals) == 1.0 and result.accs[1] == max(vals)
    assert all(row["n_train_samples"] == 20 * (row["epoch"] + 1) for row in result.history)
    acc, _ = pair_by_pair(trainer.net, [(b, a) for a, b in pairs[30:]], cfg.lam_l1)
    assert acc == 0.0  # the same pairs the other way round: all wrong, one at a time


def test_window_pearson_is_the_toolkits_metric_on_the_same_forwards():
    """The benchmark's window criterion: the reference's per-epoch ``window_pearson`` is
    :func:`window_correlation` of its per-frame outputs, and NaN without true rewards."""
    from reference_trex import demo_correlations

    from trex.reward.metrics import window_correlation

    rng = np.random.default_rng(1)
    demos = [
        {
            "observations": _frames(120, v, v),
            "return": float(v),
            "rewards": rng.normal(size=120).astype(np.float32),
        }
        for v in (0, 100, 200)
    ]
    net = ReferenceNet()
    pearson, _, window = demo_correlations(net, demos)
    with torch.no_grad():
        per_frame = np.concatenate([net.rewards(d["observations"]).numpy() for d in demos])
    expected = window_correlation(
        per_frame, np.concatenate([d["rewards"] for d in demos]), np.array([0, 120, 240, 360])
    )
    assert np.isfinite(window) and window == pytest.approx(expected, abs=1e-6)
    without_rewards = [{k: v for k, v in d.items() if k != "rewards"} for d in demos]
    assert np.isnan(demo_correlations(net, without_rewards)[2])
