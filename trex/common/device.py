"""Device and numeric precision: CUDA when present, and the fast path
(channels_last memory format + bf16 autocast) where the hardware has it."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Iterator

import torch

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp32")


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


#: environment variable that replaces the CPU flags read from /proc/cpuinfo (space or comma
#: separated), for tests and for emulating another CPU kind in benchmarks
CPU_FLAGS_ENV = "TREX_CPU_FLAGS"


@functools.cache
def hardware_cpu_flags() -> frozenset[str]:
    """The flags /proc/cpuinfo lists for this CPU, whatever ``$TREX_CPU_FLAGS`` says (empty
    where there is no /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``avx2``, ``avx512_bf16``, ...): ``$TREX_CPU_FLAGS`` when set,
    else /proc/cpuinfo's (empty where there is none)."""
    override = os.environ.get(CPU_FLAGS_ENV)
    if override is not None:
        return frozenset(override.replace(",", " ").split())
    return hardware_cpu_flags()


def cpu_has_fast_bf16(flags: frozenset[str] | None = None) -> bool:
    """True when the CPU has native bf16 matmul support (AVX512-BF16 or AMX). Elsewhere bf16
    is emulated and slower than fp32. Where no flags can be read, oneDNN is asked."""
    flags = cpu_flags() if flags is None else flags
    if flags:
        return "avx512_bf16" in flags or "amx_bf16" in flags
    mkldnn = getattr(torch.ops, "mkldnn", None)
    check = getattr(mkldnn, "_is_mkldnn_bf16_supported", None) if mkldnn is not None else None
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


#: frames per network call on a CPU, per hot path, reward architecture and whether the call
#: runs in bf16 (None: the whole batch at once). A batch of a few hundred frames runs slower
#: per frame than the same frames in smaller calls, whose activations stay in cache; the sizes
#: are the best or near-best on both CPU kinds (benchmarks/bench_reward_chunks.py, recorded
#: in benchmarks/README.md). IMPALA's bf16 training pass alone is fastest unchunked.
CPU_CHUNKS: dict[tuple[str, str, bool], int | None] = {
    ("trex_step", "seed_cnn", True): 48,
    ("trex_step", "seed_cnn", False): 32,
    ("trex_step", "impala", True): None,
    ("trex_step", "impala", False): 64,
    ("reward_forward", "seed_cnn", True): 48,
    ("reward_forward", "seed_cnn", False): 48,
    ("reward_forward", "impala", True): 64,
    ("reward_forward", "impala", False): 64,
    # PPO's training pass: the IMPALA policy on a minibatch (2048 samples at train-procgen's
    # settings); the rollout forward (one row per environment, 64) stays one call
    ("ppo_train", "impala", True): 128,
    ("ppo_train", "impala", False): 128,
}


def network_chunk(
    path: str, device: torch.device, bf16: bool, architecture: str = "seed_cnn"
) -> int | None:
    """Rows per network call for ``path`` (``trex_step``: a T-REX training pass;
    ``reward_forward``: scoring frames without gradients; ``ppo_train``: the policy's
    features in a PPO minibatch) of a network of ``architecture`` on ``device``: None (the
    whole batch at once) on a GPU, else :data:`CPU_CHUNKS` (a pair it does not list: the
    whole batch)."""
    if device.type != "cpu":
        return None
    return CPU_CHUNKS.get((path, architecture, bool(bf16)))


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether bf16 autocast is used for ``precision`` (auto/bf16/fp32) on ``device``."""
    if precision == "fp32":
        return False
    if precision == "bf16":
        return True
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_fast_bf16()


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool) -> Iterator[None]:
    """bf16 autocast on ``device`` when ``enabled``; a no-op context otherwise."""
    if enabled:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    else:
        yield
