"""One run of a sweep: a stage as a subprocess with its own log, status and result files;
finished runs are skipped when a sweep is started again."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import shlex
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from trex.common.files import write_json_atomic
from trex.sweeps.grid import RunSpec
from trex.sweeps.stages import RESULT_ENV

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- one run


_LIVE: dict[int, subprocess.Popen] = {}
_LIVE_LOCK = threading.Lock()


def read_status(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """A run's ``status.json`` (None if missing or unreadable)."""
    p = Path(run_dir) / "status.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def is_finished(spec: RunSpec) -> bool:
    """True if this exact run (same stage, arguments and seed) finished successfully before."""
    st = read_status(spec.run_dir)
    return bool(st) and st.get("status") == "done" and st.get("run_key") == spec.run_key


THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def set_thread_env(env: dict[str, str], threads: int | None) -> None:
    """Set a run's OMP_NUM_THREADS and MKL_NUM_THREADS in ``env`` (in place).

    A value the user set wins, and if they set only one of the two, the other gets the same
    value: torch takes MKL_NUM_THREADS over OMP_NUM_THREADS, so ``OMP_NUM_THREADS=1`` alone
    with the sweep's default in MKL_NUM_THREADS would run every job with the default's
    threads (measured: two single-job sweeps side by side on 2 cores then ran 4 threads and
    took ~4x longer per epoch). Neither set: both get ``threads`` (if given).
    """
    given = [env[v] for v in THREAD_VARS if env.get(v)]
    value = given[0] if given else (str(threads) if threads else None)
    if value is None:
        return
    for var in THREAD_VARS:
        if not env.get(var):
            env[var] = value


def execute_run(spec: RunSpec) -> dict[str, Any]:
    """Run one run to completion as a subprocess; write and return its status.

    Used by the local pool and, pickled by submitit, inside a SLURM array task. Never
    raises for a failing stage: the failure is the returned (and recorded) status.
    """
    from filelock import FileLock, Timeout

    run_dir = Path(spec.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(run_dir / ".lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return {"status": "skipped", "run_key": spec.run_key, "note": "running in another sweep"}
    try:
        result_path = run_dir / "result.json"
        log_path = run_dir / "log.txt"
        with contextlib.suppress(FileNotFoundError):
            result_path.unlink()
        env = dict(os.environ)
        env[RESULT_ENV] = str(result_path)
        env.setdefault("PYTHONUNBUFFERED", "1")
        set_thread_env(env, spec.threads)
        cmd = spec.command
        start = time.time()
        returncode: int
        error = ""
        header_end = 0
        with log_path.open("w") as logf:
            logf.write(f"# {shlex.join(cmd)}\n# cwd {spec.cwd}  host {platform.node()}\n")
            logf.flush()
            header_end = logf.tell()
            try:
                proc = subprocess.Popen(
                    cmd,
                    cwd=spec.cwd,
                    env=env,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            except OSError as err:
                returncode, error = -1, f"could not start: {err}"
            else:
                with _LIVE_LOCK:
                    _LIVE[proc.pid] = proc
                try:
                    returncode = proc.wait()
                finally:
                    with _LIVE_LOCK:
                        _LIVE.pop(proc.pid, None)
        wall = time.time() - start
        result: dict[str, Any] = {}
        if result_path.exists():
            try:
                result = json.loads(result_path.read_text())
            except ValueError:
                error = error or f"unreadable {result_path}"
        if returncode != 0 and not error:
            tail = last_line(log_path, header_end)
            error = f"exit status {returncode}" + (f": {tail}" if tail else "")
        status = {
            "status": "done" if returncode == 0 else "failed",
            "run_key": spec.run_key,
            "returncode": returncode,
            "wall_time_s": round(wall, 3),
            "result": result,
            "error": error,
            "log": str(log_path),
            "host": platform.node(),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": shlex.join(cmd),
            "slurm_job_id": _slurm_job_id(),
        }
        write_json_atomic(run_dir / "status.json", status)
        return status
    finally:
        lock.release()


def _slurm_job_id() -> str:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID", "")


def last_line(path: Path, start: int = 0) -> str:
    """The last non-empty line of a log after byte ``start`` (the error, usually), shortened."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(start, f.tell() - 4096))
            lines = [
                ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()
            ]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def terminate_live_runs() -> None:
    """Stop the subprocesses started by :func:`execute_run` in this process (Ctrl-C)."""
    with _LIVE_LOCK:
        procs = list(_LIVE.values())
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.time() + 10
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
