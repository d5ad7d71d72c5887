"""Run bookkeeping shared by every stage: fault points for the kill-and-resume tests, seeding,
and the provenance every run writes to ``config.json`` (arguments, seed, package versions,
git commit)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import random
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from trex.common.files import write_json_atomic

log = logging.getLogger("trex")

# ----------------------------------------------------------------------------- fault injection

#: environment variable naming the fault point(s) at which a run kills itself (tests only)
FAULT_ENV = "TREX_FAULT"
#: environment variable with the signal to die of at a fault point: KILL (default) or INT
FAULT_SIGNAL_ENV = "TREX_FAULT_SIGNAL"


_FAULT_HITS: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Die here if ``$TREX_FAULT`` names this point (comma-separated names allowed;
    ``name@N`` dies at the N-th time the point is reached, default the first).

    The fault-injection tests stop a run at the exact step where a real kill (time limit,
    preemption, Ctrl-C) would hurt most, instead of hoping a sleep lands there. With
    ``$TREX_FAULT_SIGNAL=INT`` the process gets SIGINT (Ctrl-C), ``TERM`` SIGTERM (a time
    limit), otherwise SIGKILL.
    """
    points = os.environ.get(FAULT_ENV)
    if not points:
        return
    _FAULT_HITS[name] = _FAULT_HITS.get(name, 0) + 1
    wanted = {p.partition("@")[0]: int(p.partition("@")[2] or 1) for p in points.split(",")}
    if wanted.get(name) != _FAULT_HITS[name]:
        return
    import signal

    sig = {"INT": signal.SIGINT, "TERM": signal.SIGTERM}.get(
        os.environ.get(FAULT_SIGNAL_ENV, "KILL").upper(), signal.SIGKILL
    )
    log.warning("fault injection: %s at %s", sig.name, name)
    os.kill(os.getpid(), sig)
    time.sleep(1)  # SIGINT / SIGTERM are raised in the main thread at once


# ----------------------------------------------------------------------------- seeds & provenance


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (the environments take the seed separately)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def package_versions() -> dict[str, str]:
    """Versions of the packages a run's results depend on."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in (
        "trex-procgen",
        "torch",
        "stable-baselines3",
        "numpy",
        "gymnasium",
        "procgen",
        "procgen-mirror",
        "safetensors",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def git_commit() -> str | None:
    """The git commit of the toolkit's checkout, or None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def run_config(args: argparse.Namespace | Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """Everything needed to repeat a run: all arguments, versions, git commit, time, host."""
    values = dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args)
    return {
        "args": values,
        **extra,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "argv": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
    }


def write_run_config(
    path: str | os.PathLike, args: argparse.Namespace | Mapping[str, Any], **extra: Any
) -> dict[str, Any]:
    """Write ``config.json`` for a run (atomically) and return what was written.

    ``config.json['args']`` can be given back with ``-c`` (JSON is YAML) to repeat the run.
    """
    cfg = run_config(args, **extra)
    write_json_atomic(path, cfg)
    return cfg
