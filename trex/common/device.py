"""Device and numeric precision: CUDA when present, and the fast path
(channels_last memory format + bf16 autocast) where the hardware has it."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator

import torch

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp32")


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matmul support (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        flags = ""
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        return True
    mkldnn = getattr(torch.ops, "mkldnn", None)
    check = getattr(mkldnn, "_is_mkldnn_bf16_supported", None) if mkldnn is not None else None
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


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
