"""T-REX learning: demo selection, pair sampling rules, loss and accuracy on hand-made pairs,
the batched/per-frame computations against the naive per-pair ones, learning a known
reward, and determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from trex.common.errors import UserError
from trex.reward.metrics import (
    correlations,
    length_baseline,
    pair_accuracy,
    pair_loss,
    pair_losses,
)
from trex.reward.nets import CnnRewardNet, prepare_net
from trex.reward.pairs import (
    DemoSet,
    PairSet,
    frames_mask,
    sample_pairs,
    select_demos,
    snippet_frames,
    split_train_val,
)
from trex.reward.passes import batch_returns, frame_rewards, pair_returns, train_step, trex_loss
from trex.reward.trex import TrexConfig, make_data, step_lr, train_trex

CPU = torch.device("cpu")


def synth_demos(n: int, length: int, seed: int = 0, vary: bool = True) -> DemoSet:
    """Dim noise frames; a bright 8x8 square (reward 1) on a demo-specific share of the frames."""
    rng = np.random.default_rng(seed)
    obs, rews = [], []
    for p in np.linspace(0.05, 0.8, n):
        t = length + (int(rng.integers(0, length // 2 + 1)) if vary else 0)
        o = rng.integers(0, 60, size=(t, 64, 64, 3), dtype=np.uint8)
        hit = np.zeros(t, dtype=bool)
        hit[rng.choice(t, size=max(1, round(p * t)), replace=False)] = True
        o[hit, 20:28, 20:28, :] = 255
        obs.append(o)
        rews.append(hit.astype(np.float32))
    return DemoSet.from_arrays(obs, rews)


def tiny_demos(returns, lengths) -> DemoSet:
    """Demos with zero frames and given returns/lengths (reward on the last frame)."""
    obs = [np.zeros((t, 64, 64, 3), np.uint8) for t in lengths]
    rews = []
    for r, t in zip(returns, lengths):
        x = np.zeros(t, np.float32)
        x[-1] = r
        rews.append(x)
    return DemoSet.from_arrays(obs, rews)


# ----------------------------------------------------------------------------- selection


def test_select_demos_spreads_over_return_bins():
    rng = np.random.default_rng(0)
    returns = np.concatenate([np.full(50, 0.0), np.linspace(0, 10, 20), np.full(50, 10.0)])
    pos = select_demos(returns, 8, 1.0, rng)
    assert len(set(pos.tolist())) == 8
    chosen = returns[pos]
    # four bins visited round-robin: every quarter of the range is represented twice
    bins = np.minimum((chosen / 2.5).astype(int), 3)
    assert sorted(np.bincount(bins, minlength=4).tolist()) == [2, 2, 2, 2]


def test_select_demos_max_return_caps_the_range():
    returns = np.arange(100, dtype=float)
    pos = select_demos(returns, 10, 0.5, np.random.default_rng(1))
    assert returns[pos].max() <= 49.5


@pytest.mark.parametrize(
    "returns, n, frac, msg",
    [
        (np.ones(10), 4, 1.0, "same return"),
        (np.arange(5.0), 6, 1.0, "only 5"),
        (np.array([0, 0, 0, 100.0]), 4, 0.5, "--max_return"),
        (np.arange(5.0), 1, 1.0, "at least 2"),
    ],
)
def test_select_demos_bad_requests(returns, n, frac, msg):
    with pytest.raises(UserError, match=msg):
        select_demos(returns, n, frac, np.random.default_rng(0))


def test_split_keeps_training_and_validation_demos_apart():
    tr, va = split_train_val(12)
    assert len(tr) == 9 and len(va) == 3 and not set(tr) & set(va)
    demos = synth_demos(12, 20)
    cfg = TrexConfig(
        num_snippets=500,
        min_snippet_length=3,
        max_snippet_length=10,
        num_val_snippets=200,
        num_test_snippets=50,
        num_train_eval_snippets=100,
    )
    data = make_data(demos, None, cfg, np.random.default_rng(0))
    assert data.train_pairs.demo_set() <= set(data.train_demos.tolist())
    assert data.val_pairs.demo_set() <= set(data.val_demos.tolist())
    assert not data.train_pairs.demo_set() & data.val_pairs.demo_set()
    assert data.train_eval_pairs.demo_set() <= set(data.train_demos.tolist())


# ----------------------------------------------------------------------------- pair sampling


def test_pairs_clip_heuristic_and_labels():
    demos = tiny_demos([1, 2, 3, 3, 5], [30, 40, 25, 50, 60])
    rng = np.random.default_rng(0)
    p = sample_pairs(demos, np.arange(5), 2000, 5, 20, rng, use_clip_heuristic=True)
    lengths, rets = demos.lengths, demos.returns
    assert len(p) == 2000
    assert np.all(rets[p.demo[:, 1]] > rets[p.demo[:, 0]])  # label 1 = the better demo, never ties
    assert np.all(p.start[:, 1] >= p.start[:, 0])  # better snippet starts no earlier
    shortest = np.minimum(lengths[p.demo[:, 0]], lengths[p.demo[:, 1]])
    assert np.all((p.length >= 5) & (p.length < np.minimum(shortest, 20)))
    assert np.all(p.start + p.length[:, None] <= lengths[p.demo])
    assert np.all(p.start >= 0)
    q = sample_pairs(demos, np.arange(5), 2000, 5, 20, rng, use_clip_heuristic=False)
    assert np.any(q.start[:, 1] < q.start[:, 0])
    assert np.all(q.start + q.length[:, None] <= lengths[q.demo])


def test_pairs_snippet_reward_labels():
    demos = synth_demos(6, 30)
    rng = np.random.default_rng(3)
    p = sample_pairs(demos, np.arange(6), 1000, 3, 15, rng, use_snippet_rewards=False)
    gs = p.global_starts(demos)
    naive = np.array([[demos.rewards[g : g + n].sum() for g in gg] for gg, n in zip(gs, p.length)])
    assert np.array_equal(p.honest, naive[:, 0] <= naive[:, 1])
    assert not p.honest.all()  # demo-return labels are sometimes wrong for snippets
    q = sample_pairs(demos, np.arange(6), 1000, 3, 15, rng, use_snippet_rewards=True)
    gs = q.global_starts(demos)
    truth = np.array([[demos.rewards[g : g + n].sum() for g in gg] for gg, n in zip(gs, q.length)])
    assert np.all(truth[:, 1] >= truth[:, 0])


def test_pairs_bad_input():
    demos = tiny_demos([1, 2, 3], [10, 30, 30])
    with pytest.raises(UserError, match="not more than"):
        sample_pairs(demos, np.arange(3), 10, 10, 20, np.random.default_rng(0))
    with pytest.raises(UserError, match="must be smaller"):
        sample_pairs(demos, np.arange(3), 10, 5, 5, np.random.default_rng(0))
    same = tiny_demos([2, 2], [30, 30])
    with pytest.raises(UserError, match="different returns"):
        sample_pairs(same, np.arange(2), 10, 3, 8, np.random.default_rng(0))


def test_snippet_frames_and_mask():
    frame, seg = snippet_frames(np.array([3, 10, 4]), np.array([2, 3, 1]))
    assert frame.tolist() == [3, 4, 10, 11, 12, 4]
    assert seg.tolist() == [0, 0, 1, 1, 1, 2]
    demos = tiny_demos([1, 2], [10, 10])
    pairs = PairSet(np.array([[0, 1]]), np.array([[2, 5]]), np.array([3]), np.array([True]))
    mask = frames_mask(demos, pairs)
    assert np.flatnonzero(mask).tolist() == [2, 3, 4, 15, 16, 17]


# ----------------------------------------------------------------------------- loss and metrics


def test_loss_and_accuracy_on_hand_made_pairs():
    r = np.array([[0.0, 1.0], [2.0, 0.0], [1.0, 1.0], [-3.0, 3.0]])
    assert (
        pair_accuracy(r) == 0.5
    )  # the tie counts as wrong (the original project's torch.max picks index 0)
    expected = np.log1p(np.exp(r[:, 0] - r[:, 1]))
    np.testing.assert_allclose(pair_losses(r), expected)
    absr = np.abs(r)
    np.testing.assert_allclose(pair_losses(r, absr, 0.1), expected + 0.1 * absr.sum(1))
    # the torch loss used for training is the original project's CrossEntropyLoss(label 1) + l1,
    # per pair
    rt = torch.tensor(r)
    ce = nn.CrossEntropyLoss(reduction="none")(rt, torch.ones(4, dtype=torch.long))
    seed_style = (ce + 0.1 * torch.tensor(absr).sum(1)).mean()
    assert torch.allclose(trex_loss(rt, torch.tensor(absr), 0.1), seed_style)
    assert pair_loss(r, absr, 0.1) == pytest.approx(float(seed_style))


def test_correlations_and_length_baseline():
    p, s = correlations([1, 2, 3, 4], [2, 4, 6, 9])
    assert p > 0.98 and s == pytest.approx(1.0)
    assert np.isnan(correlations([1, 1, 1], [1, 2, 3])[0])
    assert length_baseline(np.array([10, 20, 30]), np.array([1.0, 2.0, 3.0])) == pytest.approx(
        (1.0, 1.0)
    )


# ----------------------------------------------------------------------------- fast == naive


def _net(seed=0, channels_last=False) -> CnnRewardNet:
    torch.manual_seed(seed)
    return prepare_net(CnnRewardNet(), CPU, channels_last)


def _naive_pair_returns(net, demos, pairs):
    """The original project's way: run the network on each snippet of each pair separately."""
    out = torch.zeros(len(pairs), 2, dtype=torch.float64)
    absr = torch.zeros(len(pairs), 2, dtype=torch.float64)
    gs = pairs.global_starts(demos)
    for i in range(len(pairs)):
        for k in range(2):
            clip = demos.frames[gs[i, k] : gs[i, k] + pairs.length[i]]
            r = net(torch.from_numpy(clip).float().permute(0, 3, 1, 2))
            out[i, k] = r.sum()
            absr[i, k] = r.abs().sum()
    return out, absr


def test_per_frame_evaluation_equals_naive_per_pair():
    demos = synth_demos(4, 20, seed=1)
    pairs = sample_pairs(demos, np.arange(4), 12, 3, 10, np.random.default_rng(0))
    net = _net()
    with torch.no_grad():
        naive, naive_abs = _naive_pair_returns(net, demos, pairs)
    mask = frames_mask(demos, pairs)
    r = frame_rewards(
        net, demos.frames, CPU, bf16=False, mask=mask, channels_last=False, batch_size=7
    )
    fast, fast_abs = pair_returns(demos, r, pairs)
    np.testing.assert_allclose(fast, naive.numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(fast_abs, naive_abs.numpy(), rtol=1e-4, atol=1e-3)
    assert pair_accuracy(fast) == pair_accuracy(naive.numpy())
    # demo returns from per-frame rewards = the original project's whole-demo forward
    full = frame_rewards(net, demos.frames, CPU, bf16=False, channels_last=False)
    with torch.no_grad():
        seed_way = [
            float(net(torch.from_numpy(demos.frames[a:b]).float().permute(0, 3, 1, 2)).sum())
            for a, b in zip(demos.offsets[:-1], demos.offsets[1:])
        ]
    np.testing.assert_allclose(demos.demo_sums(full), seed_way, rtol=1e-4, atol=1e-3)


def test_batched_training_step_equals_naive_per_pair_loss_and_gradients():
    demos = synth_demos(3, 16, seed=2)
    pairs = sample_pairs(demos, np.arange(3), 6, 3, 12, np.random.default_rng(1))
    net = _net(1)
    ret, absr, n_uniq = batch_returns(net, demos, pairs, CPU, bf16=False, channels_last=False)
    assert n_uniq < 2 * int(pairs.length.sum())  # overlapping snippets: each frame once
    loss = trex_loss(ret, absr, 0.01)
    loss.backward()
    fast_grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    naive, naive_abs = _naive_pair_returns(net, demos, pairs)
    ce = nn.CrossEntropyLoss()
    naive_loss = sum(
        ce(naive[i].float().unsqueeze(0), torch.tensor([1])) + 0.01 * naive_abs[i].sum().float()
        for i in range(len(pairs))
    ) / len(pairs)
    naive_loss.backward()
    assert float(loss.detach()) == pytest.approx(float(naive_loss.detach()), rel=1e-4)
    naive_grads = [p.grad.clone() for p in net.parameters()]
    for a, b in zip(fast_grads, naive_grads):
        # same maths, different fp32 summation order: compare relative to the gradient's size
        assert float((a - b).norm() / b.norm()) < 1e-3
    # the optimizer step: one pass, and split into chunks of 7 frames (two-pass, bounded memory)
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    for max_frames in (10_000, 30, 7):  # one pass; groups of pairs; pairs in chunks
        loss2, ret2, _, _ = train_step(
            net,
            opt,
            demos,
            pairs,
            0.01,
            CPU,
            bf16=False,
            channels_last=False,
            max_frames=max_frames,
        )
        assert loss2 == pytest.approx(float(naive_loss.detach()), rel=1e-4)
        torch.testing.assert_close(ret2, ret.detach(), rtol=1e-5, atol=1e-3)
        for p, b in zip(net.parameters(), naive_grads):
            assert float((p.grad - b).norm() / b.norm()) < 1e-3


def test_lr_scaling():
    assert step_lr(TrexConfig(lr=5e-5, batch_size=64)) == pytest.approx(4e-4)
    assert step_lr(TrexConfig(lr=5e-5, batch_size=1)) == pytest.approx(5e-5)
    assert step_lr(TrexConfig(lr=5e-5, batch_size=64, lr_scaling="none")) == pytest.approx(5e-5)
    with pytest.raises(UserError):
        step_lr(TrexConfig(lr_scaling="cubic"))


def test_channels_last_and_bf16_agree_with_fp32():
    demos = synth_demos(2, 10)
    net = _net(2, channels_last=False)
    ref = frame_rewards(net, demos.frames, CPU, bf16=False, channels_last=False)
    cl = frame_rewards(
        prepare_net(net, CPU, True), demos.frames, CPU, bf16=False, channels_last=True
    )
    np.testing.assert_allclose(cl, ref, rtol=1e-4, atol=1e-3)
    bf = frame_rewards(net, demos.frames, CPU, bf16=True, channels_last=True)
    assert np.corrcoef(bf, ref)[0, 1] > 0.99


# ----------------------------------------------------------------------------- training


def _train(seed: int, demos: DemoSet, test: DemoSet, epochs: int = 3):
    cfg = TrexConfig(
        num_snippets=400,
        min_snippet_length=3,
        max_snippet_length=10,
        epoch_size=96,
        max_num_epochs=epochs,
        patience=epochs,
        batch_size=16,
        num_val_snippets=100,
        num_test_snippets=100,
        num_train_eval_snippets=100,
    )
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    data = make_data(demos, test, cfg, rng)
    net = prepare_net(CnnRewardNet(), CPU, True)
    res = train_trex(net, data, cfg, rng, CPU, bf16=False, channels_last=True)
    return net, res, data


def test_learns_a_known_reward_and_is_deterministic():
    demos = synth_demos(10, 16, seed=4)
    test = synth_demos(8, 16, seed=5)
    net, res, data = _train(0, demos, test)
    assert res.epochs == 3 and len(res.history) == 3
    assert res.best["val_acc"] == max(h["val_acc"] for h in res.history)
    assert res.best["val_acc"] > 0.8 and res.best["test_acc"] > 0.65 and res.best["pearson"] > 0.9
    assert 0.5 < data.gt_snippet_acc <= 1.0
    # the restored best model reproduces the best epoch's validation accuracy
    mask = frames_mask(demos, data.val_pairs)
    r = frame_rewards(net, demos.frames, CPU, bf16=False, mask=mask)
    assert pair_accuracy(pair_returns(demos, r, data.val_pairs)[0]) == pytest.approx(
        res.best["val_acc"]
    )
    net2, res2, _ = _train(0, demos, test)
    for a, b in zip(net.state_dict().values(), net2.state_dict().values()):
        assert torch.equal(a, b)
    assert [h["val_acc"] for h in res.history] == [h["val_acc"] for h in res2.history]


def test_early_stopping_restores_best():
    demos = synth_demos(6, 12, seed=6)
    cfg = TrexConfig(
        num_snippets=200,
        min_snippet_length=3,
        max_snippet_length=8,
        epoch_size=16,
        max_num_epochs=20,
        patience=1,
        batch_size=16,
        num_val_snippets=50,
        num_train_eval_snippets=50,
    )
    rng = np.random.default_rng(0)
    data = make_data(demos, None, cfg, rng)
    torch.manual_seed(0)
    net = prepare_net(CnnRewardNet(), CPU, True)
    res = train_trex(net, data, cfg, rng, CPU, bf16=False)
    assert res.epochs < 20 and res.epochs == res.best_epoch + 2
    assert np.isnan(res.best["test_acc"])


@pytest.mark.parametrize("select_by", ["val_loss", "last"])
def test_select_by_keeps_that_epoch(select_by):
    demos = synth_demos(6, 12, seed=6)
    test = synth_demos(4, 12, seed=7)
    cfg = TrexConfig(
        num_snippets=200,
        min_snippet_length=3,
        max_snippet_length=8,
        epoch_size=16,
        max_num_epochs=4,
        patience=1,
        batch_size=16,
        num_val_snippets=50,
        num_test_snippets=50,
        num_train_eval_snippets=50,
        select_by=select_by,
    )
    rng = np.random.default_rng(0)
    data = make_data(demos, test, cfg, rng)
    torch.manual_seed(0)
    net = prepare_net(CnnRewardNet(), CPU, True)
    res = train_trex(net, data, cfg, rng, CPU, bf16=False)
    if select_by == "last":  # never stops early, keeps the final weights
        assert res.epochs == 4 and res.best_epoch == 3
    else:
        assert res.best["val_loss"] == min(h["val_loss"] for h in res.history)
        assert res.epochs == min(4, res.best_epoch + 2)
    # the kept weights are the kept epoch's: its validation accuracy again
    r = frame_rewards(net, demos.frames, CPU, bf16=False, mask=frames_mask(demos, data.val_pairs))
    assert pair_accuracy(pair_returns(demos, r, data.val_pairs)[0]) == pytest.approx(
        res.best["val_acc"]
    )
    assert cfg.variant == f"sel_{select_by}"
