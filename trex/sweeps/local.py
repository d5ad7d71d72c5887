"""Running a sweep on this machine, several runs in parallel."""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from trex.common.runs import fault_point
from trex.sweeps.grid import RunSpec, SweepPlan
from trex.sweeps.manifest import Manifest
from trex.sweeps.runner import execute_run, read_status, terminate_live_runs

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- launchers


@dataclasses.dataclass
class SweepOutcome:
    """What happened to each run of a sweep."""

    statuses: dict[str, str]  # run_key -> done | failed | skipped | pending
    manifest: Path

    def count(self, status: str) -> int:
        return sum(1 for s in self.statuses.values() if s == status)

    @property
    def ok(self) -> bool:
        return self.count("failed") == 0 and self.count("pending") == 0


def progress_bar(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(
        total=total, desc=desc, unit="run", file=sys.stderr, dynamic_ncols=True, disable=None
    )


def record_outcome(
    manifest: Manifest, spec: RunSpec, status: Mapping[str, Any], statuses: dict[str, str]
) -> None:
    word = status.get("status", "failed")
    manifest.update(spec, status)
    statuses[spec.run_key] = word
    rm = (status.get("result") or {}).get("rm_id")
    if word == "done":
        log.info(
            "run %d done in %.1fs%s",
            spec.index,
            status.get("wall_time_s", 0.0),
            f" (rm_id {rm})" if rm else "",
        )
    elif word == "failed":
        log.warning(
            "run %d failed: %s (log: %s)",
            spec.index,
            status.get("error", ""),
            status.get("log", ""),
        )
    else:
        log.info("run %d %s: %s", spec.index, word, status.get("note", ""))


def start_sweep(plan: SweepPlan) -> tuple[Manifest, list[RunSpec], dict[str, str]]:
    """Write the manifest with finished runs marked skipped; return the runs still to do."""
    manifest = Manifest(plan.manifest, plan)
    statuses: dict[str, str] = {}
    todo: list[RunSpec] = []
    for spec in plan.runs:
        st = read_status(spec.run_dir)
        if st and st.get("status") == "done" and st.get("run_key") == spec.run_key:
            manifest.update(spec, st, shown="skipped", write=False)
            statuses[spec.run_key] = "skipped"
        else:
            statuses[spec.run_key] = "pending"
            todo.append(spec)
    plan.sweep_dir.mkdir(parents=True, exist_ok=True)
    manifest.write()
    return manifest, todo, statuses


def run_local(
    plan: SweepPlan,
    jobs: int,
    on_status: Callable[[RunSpec, Mapping[str, Any]], None] | None = None,
) -> SweepOutcome:
    """Run the sweep's unfinished runs on this machine, ``jobs`` at a time.

    A failed run is recorded and the others go on; Ctrl-C stops the running subprocesses
    (they stay ``pending`` in the manifest and run on the next start).
    """
    manifest, todo, statuses = start_sweep(plan)
    if todo:
        log.info(
            "%d runs to do, %d already done; %d at a time",
            len(todo),
            len(plan.runs) - len(todo),
            jobs,
        )
    bar = progress_bar(len(todo), f"{plan.stage} sweep")
    restore = _sigterm_as_interrupt()
    pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="sweep")
    futures = {pool.submit(execute_run, spec): spec for spec in todo}
    try:
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            for fut in finished:
                spec = futures[fut]
                try:
                    status = fut.result()
                except Exception as err:  # an infrastructure error, not the stage's
                    status = {
                        "status": "failed",
                        "error": f"{type(err).__name__}: {err}",
                        "log": str(Path(spec.run_dir) / "log.txt"),
                    }
                record_outcome(manifest, spec, status, statuses)
                fault_point("sweep_after_record")
                if on_status is not None:
                    on_status(spec, status)
                bar.update(1)
    except KeyboardInterrupt:
        for fut in futures:
            fut.cancel()
        terminate_live_runs()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        restore()
    return SweepOutcome(statuses=statuses, manifest=plan.manifest)


def _sigterm_as_interrupt() -> Callable[[], None]:
    """Treat SIGTERM (kill, a scheduler's stop) like Ctrl-C while a sweep runs here, so the
    runs' subprocesses are stopped too; returns the function restoring the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, old)
