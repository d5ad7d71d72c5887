"""Reward model files: safetensors round trip of weights and metadata, the checks on load
(game, mode, missing/corrupt files), the rm_infos lookup, and the reward function for PPO."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from trex.common.errors import UserError
from trex.common.files import append_csv_rows
from trex.reward.model_file import (
    RewardFunction,
    load_reward_function,
    load_reward_model,
    read_metadata,
    save_reward_model,
)
from trex.reward.nets import (
    RM_COLUMNS,
    CnnRewardNet,
    MaxPool4x2,
    frames_to_input,
    predict_frame_rewards,
    prepare_net,
)
from trex.reward.registry import lookup_rm, resolve_reward_model, rm_id_from_seed

CPU = torch.device("cpu")


def _saved(tmp_path, env="starpilot", mode="easy", output_abs=False, name="123_4567"):
    torch.manual_seed(0)
    net = prepare_net(CnnRewardNet(output_abs=output_abs), CPU, channels_last=True)
    path = tmp_path / "model_files" / f"{name}.safetensors"
    save_reward_model(
        path,
        net,
        env_name=env,
        mode=mode,
        num_dems=12,
        seed=1234567,
        sequential=0,
        rm_id=name,
        training={"lr": 5e-5, "demo_csv": ["a.csv"]},
        results={"val_acc": 0.9},
    )
    return net, path


def test_round_trip_keeps_weights_and_metadata(tmp_path):
    net, path = _saved(tmp_path, output_abs=True)
    loaded, meta = load_reward_model(path, CPU, env_name="starpilot", mode="easy")
    for (k, a), (k2, b) in zip(net.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    assert loaded.output_abs is True
    assert meta["env_name"] == "starpilot" and meta["mode"] == "easy" and meta["num_dems"] == 12
    assert meta["seed"] == 1234567 and meta["rm_id"] == "123_4567" and meta["format_version"] == 1
    assert meta["architecture"] == "seed_cnn" and meta["net_config"] == {"output_abs": True}
    assert meta["training"] == {"lr": 5e-5, "demo_csv": ["a.csv"]} and meta["results"] == {
        "val_acc": 0.9
    }
    assert read_metadata(path)["env_name"] == "starpilot"
    assert not list(path.parent.glob(".*tmp*"))  # atomic write left no temp file


def test_load_checks(tmp_path):
    _, path = _saved(tmp_path)
    with pytest.raises(UserError, match="trained on starpilot, not coinrun"):
        load_reward_model(path, CPU, env_name="coinrun")
    with pytest.raises(UserError, match="hard"):
        load_reward_model(path, CPU, mode="hard")
    with pytest.raises(UserError, match="not found"):
        load_reward_model(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 7 + b"garbage")
    with pytest.raises(UserError, match="corrupt"):
        load_reward_model(bad)
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(UserError, match="corrupt"):
        load_reward_model(trunc)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(UserError, match="not a trex reward model"):
        load_reward_model(other)


def test_reward_function_accepts_hwc_and_chw(tmp_path):
    _, path = _saved(tmp_path)
    fn = load_reward_function(
        path, env_name="starpilot", mode="easy", device="cpu", precision="fp32"
    )
    assert isinstance(fn, RewardFunction) and fn.rm_id == "123_4567"
    frames = np.random.default_rng(0).integers(0, 256, size=(5, 64, 64, 3), dtype=np.uint8)
    r_hwc = fn(frames)
    r_chw = fn(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)))
    r_torch = fn(torch.from_numpy(frames))
    assert r_hwc.shape == (5,) and r_hwc.dtype == np.float32
    np.testing.assert_allclose(r_hwc, r_chw, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(r_hwc, r_torch, rtol=1e-5, atol=1e-5)
    # per frame: a frame's reward does not depend on its batch
    np.testing.assert_allclose(fn(frames[2:3]), r_hwc[2:3], rtol=1e-4, atol=1e-4)
    with pytest.raises(UserError, match="coinrun"):
        load_reward_function(path, env_name="coinrun")


def test_predict_matches_seed_style_forward():
    torch.manual_seed(1)
    net = CnnRewardNet()
    frames = np.random.default_rng(1).integers(0, 256, size=(9, 64, 64, 3), dtype=np.uint8)
    with torch.no_grad():
        seed_way = (
            net.model(torch.tensor(frames, dtype=torch.float32).permute(0, 3, 1, 2)).numpy().ravel()
        )
    ours = predict_frame_rewards(prepare_net(net, CPU, True), frames, CPU, bf16=False, batch_size=4)
    np.testing.assert_allclose(ours, seed_way, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("hw", [(62, 62), (28, 29), (5, 4), (13, 8)])
def test_pooling_without_autograd_equals_max_pool2d(dtype, hw):
    pool = MaxPool4x2()
    x = torch.randn(3, 5, *hw).to(dtype)
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = x.contiguous(memory_format=fmt)
        want = torch.nn.functional.max_pool2d(x, 4, 2)
        with torch.no_grad():
            got = pool(x)
        assert got.shape == want.shape and torch.equal(got, want)
    # with autograd it is nn.MaxPool2d's own pass: the gradient reaches each window's maximum
    a = x.detach().requires_grad_(True)
    b = x.detach().requires_grad_(True)
    pool(a).sum().backward()
    torch.nn.functional.max_pool2d(b, 4, 2).sum().backward()
    assert torch.equal(a.grad, b.grad)


def test_frames_to_input_shapes():
    x = frames_to_input(np.zeros((2, 64, 64, 3), np.uint8), CPU)
    assert x.shape == (2, 3, 64, 64) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError):
        frames_to_input(np.zeros((2, 32, 32, 3), np.uint8), CPU)
    with pytest.raises(ValueError):
        frames_to_input(np.zeros((64, 64, 3), np.uint8), CPU)


def test_rm_id_and_lookup(tmp_path):
    assert rm_id_from_seed(1234567) == "123_4567"
    assert rm_id_from_seed(5) == "000_0005"
    csv = tmp_path / "rm_infos.csv"
    append_csv_rows(
        csv,
        [
            {
                "rm_id": "012_345",
                "env_name": "starpilot",
                "mode": "easy",
                "num_dems": 3,
                "model_file": "model_files/012_345.safetensors",
            }
        ],
        columns=RM_COLUMNS,
    )
    append_csv_rows(
        csv,
        [
            {
                "rm_id": "123_4567",
                "env_name": "starpilot",
                "mode": "easy",
                "num_dems": 12,
                "model_file": "model_files/123_4567.safetensors",
            }
        ],
    )
    append_csv_rows(
        csv,
        [
            {
                "rm_id": "123_4567",
                "env_name": "starpilot",
                "mode": "easy",
                "num_dems": 15,
                "model_file": "model_files/123_4567.safetensors",
            }
        ],
    )
    row, path = lookup_rm("012_345", csv)  # ids stay text (no int parsing of "012_345")
    assert row["num_dems"] == 3 and path == tmp_path / "model_files" / "012_345.safetensors"
    row, _ = lookup_rm("123_4567", csv)
    assert row["num_dems"] == 15  # the last row wins
    with pytest.raises(UserError, match="not in"):
        lookup_rm("999_9999", csv)
    with pytest.raises(UserError, match="not found"):
        lookup_rm("123_4567", tmp_path / "missing.csv")
    assert (
        resolve_reward_model("123_4567", csv) == tmp_path / "model_files" / "123_4567.safetensors"
    )
    assert resolve_reward_model("x/y.safetensors") == type(path)("x/y.safetensors")
    assert list(pd.read_csv(csv).columns) == RM_COLUMNS


def test_padded_batches_give_the_unpadded_rewards_and_few_shapes():
    import torch

    from trex.reward.nets import build_net, pad_rows, padded_size

    sizes = [padded_size(n) for n in range(1, 1025)]
    assert all(n <= s <= max(n + 7, n * 9 / 8) for n, s in zip(range(1, 1025), sizes))
    assert len(set(sizes)) <= 40 and padded_size(256) == 256 and padded_size(0) == 0
    torch.manual_seed(0)
    net = build_net().eval()
    x = torch.randn(13, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    padded = pad_rows(x)
    assert padded.shape[0] == 16 and padded.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(padded[13:], x[-1:].expand(3, -1, -1, -1))
    with torch.no_grad():
        torch.testing.assert_close(net(padded)[:13], net(x), rtol=1e-5, atol=1e-5)
