"""The precision and chunking choices of ``--precision auto``: deterministic given the CPU
flags, faked here through $TREX_CPU_FLAGS; and chunked network calls change no output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trex.common.device import (
    CPU_CHUNKS,
    CPU_FLAGS_ENV,
    cpu_flags,
    cpu_has_fast_bf16,
    hardware_cpu_flags,
    network_chunk,
    use_bf16,
)
from trex.reward.nets import CnnRewardNet, forward_in_chunks, predict_frame_rewards

AVX2_ONLY = "fpu sse2 avx avx2 fma"
AVX512_BF16 = "fpu sse2 avx avx2 fma avx512f avx512bw avx512_bf16"
AMX = "avx2 avx512f amx_bf16 amx_tile"

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("flags", "fast_bf16"), [(AVX2_ONLY, False), (AVX512_BF16, True), (AMX, True)]
)
def test_auto_choice_follows_the_cpu_flags(monkeypatch, flags, fast_bf16):
    monkeypatch.setenv(CPU_FLAGS_ENV, flags)
    assert cpu_flags() == frozenset(flags.split())
    assert cpu_has_fast_bf16() is fast_bf16
    assert use_bf16("auto", CPU) is fast_bf16
    assert use_bf16("fp32", CPU) is False and use_bf16("bf16", CPU) is True
    for path in ("trex_step", "reward_forward"):
        for arch in ("seed_cnn", "impala"):
            chunk = network_chunk(path, CPU, use_bf16("auto", CPU), arch)
            assert chunk == CPU_CHUNKS[(path, arch, fast_bf16)]
            # the same flags give the same choice every time
            assert chunk == network_chunk(path, CPU, use_bf16("auto", CPU), arch)


def test_flag_override_accepts_commas(monkeypatch):
    monkeypatch.setenv(CPU_FLAGS_ENV, "avx2,avx512_bf16")
    assert cpu_flags() == {"avx2", "avx512_bf16"}


def test_hardware_flags_ignore_the_override(monkeypatch):
    monkeypatch.delenv(CPU_FLAGS_ENV, raising=False)
    real = cpu_flags()
    assert hardware_cpu_flags() == real
    monkeypatch.setenv(CPU_FLAGS_ENV, "made_up_flag")
    assert cpu_flags() == {"made_up_flag"}
    assert hardware_cpu_flags() == real


def test_gpu_runs_whole_batches():
    assert network_chunk("trex_step", torch.device("cuda"), True) is None
    assert network_chunk("reward_forward", torch.device("cuda"), False) is None


def test_every_path_and_architecture_has_a_cpu_choice():
    for path in ("trex_step", "reward_forward"):
        for arch in ("seed_cnn", "impala"):
            for bf16 in (True, False):
                assert (path, arch, bf16) in CPU_CHUNKS


def test_chunked_forward_and_gradients_match_one_call():
    torch.manual_seed(0)
    net = CnnRewardNet()
    x = torch.rand(37, 3, 64, 64) * 255

    def run(chunk):
        net.zero_grad()
        r = forward_in_chunks(net.forward_members, x, chunk)
        r.sum().backward()
        return r.detach(), [p.grad.clone() for p in net.parameters()]

    whole, g_whole = run(None)
    for chunk in (8, 16, 36):
        r, g = run(chunk)
        assert r.shape == (1, 37)
        torch.testing.assert_close(r, whole, rtol=1e-4, atol=1e-4)
        for a, b in zip(g, g_whole, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


def test_predicted_rewards_equal_one_unchunked_call(monkeypatch):
    """fp32 on either CPU kind: the chunked scoring gives the rewards of one plain call."""
    torch.manual_seed(0)
    net = CnnRewardNet().eval()
    frames = np.random.default_rng(0).integers(0, 256, (150, 64, 64, 3), dtype=np.uint8)
    with torch.no_grad():
        plain = net(torch.from_numpy(frames).permute(0, 3, 1, 2).float().contiguous()).numpy()
    for flags in (AVX2_ONLY, AVX512_BF16):
        monkeypatch.setenv(CPU_FLAGS_ENV, flags)
        got = predict_frame_rewards(net, frames, CPU, bf16=False, batch_size=100)
        np.testing.assert_allclose(got, plain, rtol=1e-4, atol=1e-3)
