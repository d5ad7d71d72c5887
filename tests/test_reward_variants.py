"""T-REX variants: frame stacks built alike in training, evaluation, the loaded reward function
and PPO's wrapper; scaled frames; random-shift augmentation; the IMPALA encoder; ensembles
(vmapped forward = members one by one, each member gets its own loss's gradient); every
variant survives a save/load round trip, and train_reward's flags reach the model file and
rm_infos."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from tests.test_trex_learning import synth_demos
from trex.common.errors import UserError
from trex.reward.model_file import (
    RewardFunction,
    load_reward_function,
    load_reward_model,
    read_metadata,
    save_reward_model,
)
from trex.reward.nets import (
    CnnRewardNet,
    ImpalaRewardNet,
    RewardEnsemble,
    build_net,
    frames_to_input,
    prepare_net,
)
from trex.reward.pairs import sample_pairs
from trex.reward.passes import batch_returns, frame_rewards, train_step, trex_loss
from trex.reward.trex import TrexConfig, make_data, train_trex
from trex.reward.variants import (
    draw_shifts,
    ensemble_spread,
    random_shift,
    stack_indices,
    variant_name,
)

CPU = torch.device("cpu")


def _net(architecture="seed_cnn", seed=0, channels_last=False, **cfg):
    torch.manual_seed(seed)
    return prepare_net(build_net(architecture, cfg), CPU, channels_last)


def _naive_stacks(frames: np.ndarray, offsets: np.ndarray, k: int) -> np.ndarray:
    """Frame stacks (F, k, 64, 64, 3) by a per-frame Python loop."""
    out = []
    for d in range(len(offsets) - 1):
        a, b = offsets[d], offsets[d + 1]
        for t in range(a, b):
            out.append(np.stack([frames[max(a, t - j)] for j in range(k - 1, -1, -1)]))
    return np.stack(out)


# ----------------------------------------------------------------------------- frame stacks


def test_stack_indices_and_input_layout():
    offsets = np.array([0, 3, 4, 9])
    idx = np.array([0, 2, 3, 4, 8])
    np.testing.assert_array_equal(
        stack_indices(idx, offsets, 3), [[0, 0, 0], [0, 1, 2], [3, 3, 3], [4, 4, 4], [6, 7, 8]]
    )
    np.testing.assert_array_equal(stack_indices(idx, offsets, 1), idx[:, None])
    frames = np.random.default_rng(0).integers(0, 256, size=(9, 64, 64, 3), dtype=np.uint8)
    stacks = frames[stack_indices(np.arange(9), offsets, 3)]
    np.testing.assert_array_equal(stacks, _naive_stacks(frames, offsets, 3))
    x = frames_to_input(stacks, CPU)  # HWC stacks
    assert x.shape == (9, 9, 64, 64) and x.is_contiguous(memory_format=torch.channels_last)
    # channel 3k + c is colour c of stack frame k (oldest first)
    np.testing.assert_array_equal(
        x[:, 6:9].numpy(), frames.transpose(0, 3, 1, 2).astype(np.float32)
    )
    x_chw = frames_to_input(
        np.ascontiguousarray(stacks.transpose(0, 1, 4, 2, 3)), CPU, channels_last=False
    )
    torch.testing.assert_close(x_chw, x, rtol=0, atol=0)
    with pytest.raises(ValueError):
        frames_to_input(np.zeros((2, 3, 32, 32, 3), np.uint8), CPU)


def test_stacked_training_and_evaluation_equal_a_naive_loop():
    demos = synth_demos(4, 12, seed=3)
    k = 3
    net = _net("seed_cnn", 1, frame_stack=k)
    stacks = _naive_stacks(demos.frames, demos.offsets, k)
    with torch.no_grad():
        naive = net(
            torch.from_numpy(stacks).float().permute(0, 1, 4, 2, 3).reshape(-1, 3 * k, 64, 64)
        )
    naive = naive.numpy()
    # evaluation over a demo set, per demo, and by the loaded reward function's path
    full = frame_rewards(
        net, demos.frames, CPU, bf16=False, channels_last=False, batch_size=7, offsets=demos.offsets
    )
    np.testing.assert_allclose(full, naive, rtol=1e-4, atol=1e-3)
    fn = RewardFunction(net, {}, CPU, bf16=False, channels_last=False, batch_size=5)
    for a, b in zip(demos.offsets[:-1], demos.offsets[1:]):
        np.testing.assert_allclose(
            frame_rewards(net, demos.frames[a:b], CPU, bf16=False, channels_last=False),
            naive[a:b],
            rtol=1e-4,
            atol=1e-3,
        )
        np.testing.assert_allclose(fn(demos.frames[a:b]), naive[a:b], rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(
            fn(stacks[a:b]), naive[a:b], rtol=1e-4, atol=1e-3
        )  # explicit stacks
    mask = np.zeros(len(full), bool)
    mask[::3] = True
    part = frame_rewards(
        net, demos.frames, CPU, bf16=False, mask=mask, channels_last=False, offsets=demos.offsets
    )
    np.testing.assert_allclose(part[mask], naive[mask], rtol=1e-4, atol=1e-3)
    assert not part[~mask].any()
    # training: batch returns are the snippets' sums of the naive stacked rewards; the
    # chunked exact-gradient step gives the single pass's loss
    pairs = sample_pairs(demos, np.arange(4), 6, 3, 9, np.random.default_rng(0))
    ret, _, _ = batch_returns(net, demos, pairs, CPU, bf16=False, channels_last=False)
    gs = pairs.global_starts(demos)
    want = np.array([[naive[s : s + n].sum() for s in g] for g, n in zip(gs, pairs.length)])
    np.testing.assert_allclose(ret.detach().numpy(), want, rtol=1e-4, atol=1e-3)
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    one = train_step(net, opt, demos, pairs, 0.01, CPU, False, False, max_frames=10_000)
    g1 = [p.grad.clone() for p in net.parameters()]
    for max_frames in (7, 40):  # pairs in chunks or alone; groups of pairs
        two = train_step(net, opt, demos, pairs, 0.01, CPU, False, False, max_frames=max_frames)
        assert two[0] == pytest.approx(one[0], rel=1e-5)
        for p, g in zip(net.parameters(), g1):
            assert float((p.grad - g).norm() / g.norm()) < 1e-4


# ----------------------------------------------------------------------------- scaling, shift


def test_scale_frames_divides_the_input_by_255():
    plain = _net("seed_cnn", 2)
    scaled = _net("seed_cnn", 2, scale_frames=True)
    scaled.load_state_dict(plain.state_dict())
    x = torch.rand(4, 3, 64, 64) * 255
    torch.testing.assert_close(scaled(x), plain(x / 255.0))


def test_random_shift_is_pad_replicate_then_crop():
    x = torch.rand(5, 6, 64, 64)
    shifts = np.array([[-4, 4], [0, 0], [4, -4], [2, -1], [-3, 3]])
    pad = F.pad(x, (4, 4, 4, 4), mode="replicate")
    want = torch.stack(
        [pad[i, :, 4 + dy : 68 + dy, 4 + dx : 68 + dx] for i, (dy, dx) in enumerate(shifts)]
    )
    torch.testing.assert_close(random_shift(x, shifts), want, rtol=0, atol=0)
    cl = random_shift(x.contiguous(memory_format=torch.channels_last), shifts)
    assert cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(cl, want, rtol=0, atol=0)
    # one shift per demo, shared by its frames
    offsets = np.array([0, 5, 9, 20])
    s = draw_shifts(np.array([0, 1, 4, 5, 8, 12, 19]), offsets, np.random.default_rng(0))
    assert (np.abs(s) <= 4).all()
    assert (s[:3] == s[0]).all() and (s[3:5] == s[3]).all() and (s[5:] == s[5]).all()


def test_shift_augmentation_trains_deterministically_and_keeps_the_pairs_stream():
    demos = synth_demos(6, 10, seed=6)
    cfg = TrexConfig(
        num_snippets=64,
        min_snippet_length=3,
        max_snippet_length=6,
        epoch_size=32,
        max_num_epochs=1,
        patience=1,
        batch_size=16,
        num_val_snippets=16,
        num_train_eval_snippets=16,
        augment="shift",
        frame_stack=2,
    )

    def run(c):
        rng = np.random.default_rng(0)
        torch.manual_seed(0)
        data = make_data(demos, None, c, rng)
        net = prepare_net(c.make_net(), CPU, True)
        train_trex(net, data, c, rng, CPU, bf16=False)
        return net, rng.bit_generator.state

    a, state_a = run(cfg)
    b, _ = run(cfg)
    c, state_c = run(TrexConfig(**{**cfg.__dict__, "augment": "none"}))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values())
    )
    assert state_a == state_c  # the shifts come from a child stream: same pairs, same order


# ----------------------------------------------------------------------------- ensembles


@pytest.mark.parametrize("architecture", ["seed_cnn", "impala"])
def test_ensemble_vmapped_forward_equals_its_members(architecture):
    ens = _net(architecture, 3, ensemble=3, frame_stack=2)
    assert isinstance(ens, RewardEnsemble) and ens.ensemble_size == 3
    assert ens.state_dict()[next(iter(ens.state_dict()))].shape[0] == 3  # stacked, leading K
    x = torch.rand(6, 6, 64, 64) * 255
    with torch.no_grad():
        alone = torch.stack([ens.member(i)(x) for i in range(3)])
        ens.vmap = True
        vm = ens.forward_members(x)
        vm_cl = ens.forward_members(
            x.contiguous(memory_format=torch.channels_last)
        )  # fast path input
        with torch.autocast("cpu", dtype=torch.bfloat16):
            vm_bf = ens.forward_members(x.contiguous(memory_format=torch.channels_last))
        ens.vmap = False
        loop = ens.forward_members(x)
        mean = ens(x)
    torch.testing.assert_close(vm, alone, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(vm_cl, alone, rtol=1e-4, atol=1e-4)
    assert vm_bf.dtype == torch.float32 and np.corrcoef(vm_bf.ravel(), alone.ravel())[0, 1] > 0.98
    torch.testing.assert_close(loop, alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mean, alone.mean(0), rtol=1e-5, atol=1e-5)
    assert float(alone.std(0).mean()) > 0  # members differ by init


@pytest.mark.parametrize("vmap", [True, False])
def test_ensemble_members_get_their_own_loss_gradient(vmap):
    demos = synth_demos(3, 12, seed=2)
    pairs = sample_pairs(demos, np.arange(3), 5, 3, 8, np.random.default_rng(1))
    ens = _net("seed_cnn", 4, ensemble=2)
    ens.vmap = vmap
    ret, absr, _ = batch_returns(ens, demos, pairs, CPU, bf16=False, channels_last=False)
    assert ret.shape == (2, 5, 2)
    trex_loss(ret, absr, 0.01).backward()
    for i in range(2):
        member = ens.member(i)
        r, a, _ = batch_returns(member, demos, pairs, CPU, bf16=False, channels_last=False)
        torch.testing.assert_close(r, ret[i].detach(), rtol=1e-4, atol=1e-3)
        trex_loss(r, a, 0.01).backward()
        for (name, p), q in zip(ens.members.named_parameters(), member.parameters()):
            assert float((p.grad[i] - q.grad).norm() / q.grad.norm()) < 1e-4, name
    # the chunked exact-gradient step, with random shifts drawn once per step, equals one pass
    opt = torch.optim.SGD(ens.parameters(), lr=0.0)
    one = train_step(
        ens, opt, demos, pairs, 0.01, CPU, False, True, 10_000, "shift", np.random.default_rng(5)
    )
    g1 = [p.grad.clone() for p in ens.parameters()]
    # 9 frames: pairs in chunks or alone; 20: groups of pairs, one pass each
    for max_frames in (9, 20):
        two = train_step(
            ens,
            opt,
            demos,
            pairs,
            0.01,
            CPU,
            False,
            True,
            max_frames,
            "shift",
            np.random.default_rng(5),
        )
        assert two[0] == pytest.approx(one[0], rel=1e-5) and one[1].shape == (5, 2)
        torch.testing.assert_close(two[1], one[1], rtol=1e-5, atol=1e-4)
        for p, g in zip(ens.parameters(), g1):
            assert float((p.grad - g).norm() / g.norm()) < 1e-4


def test_ensemble_spread():
    same = np.tile([1.0, 2.0, 3.0], (3, 1))
    assert ensemble_spread(same) == (0.0, 0.0)
    spread, rel = ensemble_spread(np.array([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]]))
    assert spread == pytest.approx(1.0) and rel == pytest.approx(1.0 / np.std([2.0, 3.0, 4.0]))
    assert np.isnan(ensemble_spread(np.ones((1, 4)))[0])


# ----------------------------------------------------------------------------- fast path


@pytest.mark.parametrize(
    "architecture, cfg",
    [
        ("impala", {"frame_stack": 2}),
        ("seed_cnn", {"frame_stack": 4, "scale_frames": True}),
        ("seed_cnn", {"ensemble": 2, "frame_stack": 2}),
    ],
)
def test_channels_last_and_bf16_agree_with_fp32(architecture, cfg):
    demos = synth_demos(2, 10)
    net = _net(architecture, 2, **cfg)
    ref = frame_rewards(
        net, demos.frames, CPU, bf16=False, channels_last=False, offsets=demos.offsets
    )
    fast = prepare_net(net, CPU, True)
    cl = frame_rewards(
        fast, demos.frames, CPU, bf16=False, channels_last=True, offsets=demos.offsets
    )
    np.testing.assert_allclose(cl, ref, rtol=1e-4, atol=1e-3)
    bf = frame_rewards(
        fast, demos.frames, CPU, bf16=True, channels_last=True, offsets=demos.offsets
    )
    assert np.corrcoef(bf, ref)[0, 1] > 0.98


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    "cfg",
    [
        dict(frame_stack=3),
        dict(scale_frames=True, augment="shift"),
        dict(architecture="impala", scale_frames=True),
        dict(ensemble=2, frame_stack=2),
    ],
)
def test_trained_variant_round_trips(tmp_path, cfg):
    demos = synth_demos(6, 10, seed=7)
    tc = TrexConfig(
        num_snippets=48,
        min_snippet_length=3,
        max_snippet_length=6,
        epoch_size=32,
        max_num_epochs=1,
        patience=1,
        batch_size=16,
        num_val_snippets=16,
        num_train_eval_snippets=16,
        **cfg,
    )
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    net = prepare_net(tc.make_net(), CPU, True)
    train_trex(net, make_data(demos, None, tc, rng), tc, rng, CPU, bf16=False)
    path = tmp_path / "m.safetensors"
    save_reward_model(
        path,
        net,
        env_name="starpilot",
        mode="easy",
        num_dems=6,
        seed=1,
        rm_id="x",
        training={"frame_stack": tc.frame_stack},
        extra={"variant": tc.variant},
    )
    meta = read_metadata(path)
    assert meta["format_version"] == 2 and meta["variant"] == tc.variant != "seed"
    assert meta["architecture"] == tc.architecture
    assert meta["net_config"].get("frame_stack", 1) == tc.frame_stack
    assert meta["net_config"].get("ensemble", 1) == tc.ensemble
    fn = load_reward_function(path, env_name="starpilot", device="cpu", precision="fp32")
    assert fn.frame_stack == tc.frame_stack
    a, b = demos.offsets[2], demos.offsets[3]
    mine = frame_rewards(net, demos.frames[a:b], CPU, bf16=False, channels_last=True)
    np.testing.assert_allclose(fn(demos.frames[a:b]), mine, rtol=1e-5, atol=1e-5)
    assert fn.members(demos.frames[a:b]).shape == (tc.ensemble, b - a)


def test_format_versions_and_bad_settings(tmp_path):
    assert CnnRewardNet().format_version == 1 and CnnRewardNet(frame_stack=2).format_version == 2
    assert ImpalaRewardNet().format_version == 2
    path = tmp_path / "m.safetensors"
    save_reward_model(path, _net(), env_name="starpilot", mode="easy", num_dems=2, seed=1)
    net, meta = load_reward_model(path, CPU)
    assert meta["format_version"] == 1 and meta["net_config"] == {"output_abs": False}
    with pytest.raises(UserError, match="architecture"):
        build_net("resnet")
    with pytest.raises(UserError, match="frame_stack"):
        build_net("seed_cnn", {"frame_stack": 0})
    with pytest.raises(UserError, match="ensemble"):
        build_net("seed_cnn", {"ensemble": 0})
    with pytest.raises(UserError, match="setting"):
        build_net("seed_cnn", {"colour": 1})
    with pytest.raises(UserError, match="augment"):
        TrexConfig(augment="flip").make_net()


def test_variant_names():
    assert variant_name() == "seed" == TrexConfig().variant
    assert (
        variant_name(frame_stack=4, augment="shift", architecture="impala") == "stack4+shift+impala"
    )
    assert (
        TrexConfig(
            use_clip_heuristic=False, use_snippet_rewards=True, scale_frames=True, ensemble=5
        ).variant
        == "noclip+snippetrew+scaled+ens5"
    )


# ----------------------------------------------------------------------------- PPO's wrapper


def test_wrapper_stacks_like_a_demo():
    from trex.common.envs import make_procgen_env
    from trex.rl.reward_wrappers import LearnedRewardVecEnv

    net = _net("seed_cnn", 5, frame_stack=3, ensemble=2)
    fn = RewardFunction(net, {}, CPU, bf16=False, channels_last=False)
    env = LearnedRewardVecEnv(make_procgen_env("bigfish", 2, seed=3), fn)
    rng = np.random.default_rng(0)
    obs = env.reset()
    frames: list[list[np.ndarray]] = [[], []]
    rewards: list[list[float]] = [[], []]
    checked = 0
    for _ in range(150):  # bigfish, seed 3: episodes end at steps 34, 63 and 64
        acted_on = obs.copy()
        obs, rew, done, _ = env.step(rng.integers(0, 15, 2))
        for i in range(2):
            frames[i].append(acted_on[i])
            rewards[i].append(float(rew[i]))
            if done[i]:  # the episode as a demo: its frames in order
                np.testing.assert_allclose(
                    fn(np.stack(frames[i])), rewards[i], rtol=1e-5, atol=1e-5
                )
                frames[i], rewards[i] = [], []
                checked += 1
    for i in range(2):  # the running episodes too
        np.testing.assert_allclose(fn(np.stack(frames[i])), rewards[i], rtol=1e-5, atol=1e-5)
    assert checked >= 2


# ----------------------------------------------------------------------------- train_reward


def test_train_reward_flags_reach_the_model_and_rm_infos(tmp_path):
    from tests.test_train_reward import make_store, tiny_args
    from trex.reward.registry import lookup_rm
    from trex.train_reward import main

    csv = make_store(tmp_path / "d", n_train=10, n_test=4, length=10)
    flags = [
        "--frame_stack",
        "2",
        "--scale_frames",
        "--augment",
        "shift",
        "--architecture",
        "impala",
        "--ensemble",
        "2",
        "--select_by",
        "last",
        "--max_num_epochs",
        "1",
        "--num_bootstrap",
        "20",
        "--window",
        "5",
    ]
    assert main(tiny_args(tmp_path, csv, *flags, seed=7777777)) == 0
    rm_csv = tmp_path / "rm" / "rm_infos.csv"
    row, path = lookup_rm("777_7777", rm_csv)
    assert row["variant"] == "stack2+scaled+shift+impala+ens2+sel_last"
    assert np.isfinite(row["ensemble_spread"]) and row["ensemble_spread"] > 0
    assert list(pd.read_csv(rm_csv).columns)[-3:] == [
        "variant",
        "ensemble_spread",
        "ensemble_spread_rel",
    ]
    meta = read_metadata(path)
    assert meta["architecture"] == "impala" and meta["variant"] == row["variant"]
    assert meta["net_config"] == {
        "output_abs": False,
        "frame_stack": 2,
        "scale_frames": True,
        "ensemble": 2,
    }
    assert meta["training"]["augment"] == "shift" and meta["results"]["ensemble_spread"] > 0
    assert meta["training"]["select_by"] == "last"
    net, _ = load_reward_model(path, CPU)
    assert isinstance(net, RewardEnsemble) and net.frame_stack == 2


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--frame_stack", "0"], "--frame_stack must be"),
        (["--ensemble", "0"], "--ensemble must be"),
        (["--augment", "flip"], "--augment must be one of none, shift"),
        (["--architecture", "resnet"], "--architecture must be one of seed_cnn, impala"),
    ],
)
def test_train_reward_bad_variant_flags(tmp_path, capsys, extra, message):
    from tests.test_train_reward import tiny_args
    from trex.train_reward import main

    assert main(tiny_args(tmp_path, tmp_path / "unused.csv", *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "rm").exists() and not (tmp_path / "logs").exists()


def test_train_reward_refuses_an_old_rm_infos_before_training(tmp_path, capsys):
    from tests.test_train_reward import tiny_args
    from trex.train_reward import main

    (tmp_path / "rm").mkdir()
    (tmp_path / "rm" / "rm_infos.csv").write_text("rm_id,env_name,mode\n")
    assert main(tiny_args(tmp_path, tmp_path / "unused.csv")) == 2
    assert "older version" in capsys.readouterr().err
