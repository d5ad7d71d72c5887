"""Running a sweep as one SLURM job array (submitit)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from trex.common.errors import UserError
from trex.sweeps.config import SlurmConfig
from trex.sweeps.grid import RUNS_SUBDIR, SweepPlan
from trex.sweeps.local import SweepOutcome, progress_bar, record_outcome, start_sweep
from trex.sweeps.runner import execute_run, last_line, read_status

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SlurmOptions(SlurmConfig):
    """Resources of each task of the sweep's job array (the flags of :class:`SlurmConfig`;
    submitit's names: slurm_partition, gpus_per_node, cpus_per_task, mem_gb, timeout_min,
    slurm_array_parallelism), and the array's job name."""

    job_name: str = "trex-sweep"


def slurm_options(cfg: Any) -> SlurmOptions:
    """The SLURM resources of a run_experiments config (or parsed flags) for its stage."""
    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(SlurmConfig)}
    return SlurmOptions(**values, job_name=f"trex-{cfg.stage.rsplit('.', 1)[-1]}")


def make_slurm_executor(folder: str | os.PathLike, opts: SlurmOptions) -> Any:
    """A submitit SLURM executor running tasks with this interpreter (``sys.executable``)."""
    import submitit

    if shutil.which("sbatch") is None:
        raise UserError(
            "--launcher slurm: sbatch not found (no SLURM client on this machine); "
            "use --launcher local, or scripts/start_local_slurm.sh for a test cluster"
        )
    ex = submitit.SlurmExecutor(folder=str(folder), python=shlex.quote(sys.executable))
    params: dict[str, Any] = {
        "job_name": opts.job_name,
        "time": int(opts.timeout_min),
        "cpus_per_task": int(opts.cpus_per_job),
        "mem": f"{int(round(opts.mem_gb * 1024))}M",
        "array_parallelism": int(opts.max_parallel),
        "stderr_to_stdout": True,
    }
    if opts.partition:
        params["partition"] = opts.partition
    if opts.gpus_per_job:
        params["gpus_per_node"] = int(opts.gpus_per_job)
    ex.update_parameters(**params)
    return ex


def sbatch_script(executor: Any, num_tasks: int) -> str:
    """The sbatch file submitit submits for a job array of ``num_tasks`` tasks (for checks)."""
    from submitit.slurm import slurm as sslurm

    params = dict(executor.parameters)
    params["map_count"] = num_tasks
    return sslurm._make_sbatch_string(
        command=executor._submitit_command_str, folder=executor.folder, **params
    )


def _squeue_alive(array_ids: Iterable[str]) -> set[str] | None:
    """Task ids ("123_4") still queued or running; None when squeue cannot answer."""
    ids = sorted(set(array_ids))
    if not ids:
        return set()
    try:
        out = subprocess.run(
            ["squeue", "-h", "-r", "-o", "%i", "-j", ",".join(ids)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        if "Invalid job id" in out.stderr:  # all of them have left the queue
            return set()
        return None
    return {ln.strip() for ln in out.stdout.splitlines() if ln.strip()}


def run_slurm(plan: SweepPlan, opts: SlurmOptions) -> SweepOutcome:
    """Submit the sweep's unfinished runs as ONE SLURM job array and wait for them.

    Each array task runs :func:`execute_run` (the stage as a subprocess of this same
    interpreter) and writes the run's ``status.json`` on the shared file system; that file,
    not ``sacct`` (often unavailable), tells when a task is done. A task that leaves the
    queue without a status (time limit, out of memory, node failure) is recorded failed.
    """
    manifest, todo, statuses = start_sweep(plan)
    if not todo:
        return SweepOutcome(statuses=statuses, manifest=plan.manifest)
    for spec in todo:  # a stale status from an earlier failed attempt must not count
        with contextlib.suppress(FileNotFoundError):
            (Path(spec.run_dir) / "status.json").unlink()
        if spec.threads is None:
            spec.threads = max(1, int(opts.cpus_per_job))
    folder = plan.sweep_dir / RUNS_SUBDIR / "_slurm" / "%j"
    executor = make_slurm_executor(folder, opts)
    try:
        jobs = executor.map_array(execute_run, todo)
    except Exception as err:  # sbatch refused: bad partition, resources, ...
        raise UserError(
            f"sbatch refused the job array: {str(err).strip().splitlines()[-1]}"
        ) from None
    array_id = jobs[0].job_id.split("_")[0]
    log.info(
        "submitted %d runs as SLURM job array %s (%s)",
        len(todo),
        array_id,
        opts.partition or "default partition",
    )
    by_key = {}
    for spec, job in zip(todo, jobs):
        by_key[spec.run_key] = job
        manifest.rows[spec.run_key]["slurm_job_id"] = job.job_id
    manifest.write()

    bar = progress_bar(len(todo), f"{plan.stage} sweep (slurm {array_id})")
    waiting = {spec.run_key: spec for spec in todo}
    gone_since: dict[str, float] = {}
    try:
        while waiting:
            time.sleep(opts.poll_s)
            alive = _squeue_alive([array_id])
            now = time.time()
            for key, spec in list(waiting.items()):
                st = read_status(spec.run_dir)
                job = by_key[key]
                if st is None and alive is not None and job.job_id not in alive:
                    # left the queue: give the shared file system a moment, then ask submitit
                    first = gone_since.setdefault(key, now)
                    if now - first < max(3 * opts.poll_s, 15):
                        continue
                    st = _job_outcome(job)
                if st is None:
                    continue
                st.setdefault("slurm_job_id", job.job_id)
                record_outcome(manifest, spec, st, statuses)
                del waiting[key]
                bar.update(1)
    except KeyboardInterrupt:
        log.warning(
            "stopped waiting; the job array %s keeps running (scancel %s to stop it). "
            "Start the sweep again later: finished runs are skipped.",
            array_id,
            array_id,
        )
        raise
    finally:
        bar.close()
    return SweepOutcome(statuses=statuses, manifest=plan.manifest)


def _job_outcome(job: Any) -> dict[str, Any]:
    """The status of a SLURM task that left the queue without writing ``status.json``:
    what the task returned (e.g. skipped: running in another sweep), else a failure naming
    submitit's error or the last line of the task's log."""
    base = {"slurm_job_id": job.job_id, "log": str(job.paths.stdout)}
    try:
        if job.paths.result_pickle.exists():
            result = job.result()
            if isinstance(result, dict) and result.get("status"):
                return {**base, **result}
    except Exception as err:  # submitit re-raises the task's exception
        lines = str(err).strip().splitlines() or [type(err).__name__]
        return {**base, "status": "failed", "error": f"SLURM task {job.job_id}: {lines[-1][:300]}"}
    tail = last_line(Path(job.paths.stdout))
    return {
        **base,
        "status": "failed",
        "error": f"SLURM task {job.job_id} ended without a result (time limit, memory, "
        f"node?): {tail}",
    }
