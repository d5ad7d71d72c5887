"""The machine record every benchmark writes beside its numbers: CPU model, the CPU flags that
decide the fast path (``avx2``, ``avx512f``, ``avx512_bf16``, ``amx_bf16``), what
``--precision auto`` runs on it, cores, load, torch version, and any oneDNN ISA cap or
``$TREX_CPU_FLAGS`` override in force (the way an AVX2-only CPU is emulated on another)."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402  (after the path: benchmarks run as scripts)

from trex.common.device import (  # noqa: E402
    CPU_FLAGS_ENV,
    cpu_flags,
    hardware_cpu_flags,
    use_bf16,
)

#: the CPU flags that decide which path is fastest
DECIDING_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_bf16")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_record(threads: int | None = None) -> dict:
    """What the numbers were measured on (JSON-ready)."""
    flags = cpu_flags()
    return {
        "cpu": cpu_model(),
        "cpu_flags": [f for f in DECIDING_FLAGS if f in flags],
        # the hardware's own, where $TREX_CPU_FLAGS stands in for another CPU kind
        "cpu_flags_hardware": [f for f in DECIDING_FLAGS if f in hardware_cpu_flags()],
        "auto_runs_bf16": use_bf16("auto", torch.device("cpu")),
        "cores": os.cpu_count(),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "load_avg": [round(v, 2) for v in os.getloadavg()],
        "torch": torch.__version__,
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "aten_cpu_capability": os.environ.get("ATEN_CPU_CAPABILITY"),
        "mkl_enable_instructions": os.environ.get("MKL_ENABLE_INSTRUCTIONS"),
        "trex_cpu_flags_override": os.environ.get(CPU_FLAGS_ENV),
    }
