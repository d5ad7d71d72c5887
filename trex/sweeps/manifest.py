"""The sweep manifest: one row per run (parameters, status, rm_id, wall time, log path),
rewritten atomically after every finished run."""

from __future__ import annotations

import csv
import logging
import shlex
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trex.common.files import write_text_atomic
from trex.sweeps.grid import RunSpec, SweepPlan

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- manifest


class Manifest:
    """The sweep's manifest CSV: one row per run, rewritten atomically on every change."""

    BASE = ["index", "run_key", "stage", "status", "rm_id", "seed_index", "seed"]
    TAIL = [
        "wall_time_s",
        "returncode",
        "error",
        "log",
        "slurm_job_id",
        "host",
        "finished",
        "command",
    ]

    def __init__(self, path: Path, plan: SweepPlan) -> None:
        self.path = path
        self.plan = plan
        self._lock = threading.Lock()
        self.rows: dict[str, dict[str, Any]] = {}
        self.old_rows: list[dict[str, str]] = []
        # a grid over seeds (--grid seed ...) fills the seed column instead of repeating it
        self.columns = (
            list(self.BASE) + [a for a in plan.axes if a not in self.BASE] + list(self.TAIL)
        )
        if path.exists():
            with path.open(newline="") as f:
                reader = csv.DictReader(f)
                keys = {r.run_key for r in plan.runs}
                for row in reader:
                    if row.get("run_key") not in keys:
                        self.old_rows.append(row)
                for col in reader.fieldnames or []:
                    if col not in self.columns:
                        self.columns.insert(len(self.columns) - len(self.TAIL), col)
        for spec in plan.runs:
            self.rows[spec.run_key] = {
                "index": spec.index,
                "run_key": spec.run_key,
                "stage": spec.stage,
                "status": "pending",
                "seed_index": spec.seed_index,
                "seed": "" if spec.seed is None else spec.seed,
                **{k: csv_cell(v) for k, v in spec.params.items()},
                "log": str(Path(spec.run_dir) / "log.txt"),
                "command": shlex.join(spec.command),
            }

    def update(
        self, spec: RunSpec, status: Mapping[str, Any], shown: str | None = None, write: bool = True
    ) -> None:
        """Record a run's status (``shown`` overrides the status word, e.g. 'skipped')."""
        result = status.get("result") or {}
        with self._lock:
            row = self.rows[spec.run_key]
            row.update(
                {
                    "status": shown or status.get("status", ""),
                    "rm_id": result.get("rm_id", ""),
                    "wall_time_s": status.get("wall_time_s", ""),
                    "returncode": status.get("returncode", ""),
                    "error": status.get("error", ""),
                    "log": status.get("log", row["log"]),
                    "slurm_job_id": status.get("slurm_job_id", "") or row.get("slurm_job_id", ""),
                    "host": status.get("host", ""),
                    "finished": status.get("finished", ""),
                }
            )
            if write:
                self.write()

    def write(self) -> None:
        """Rewrite the whole file atomically (old sweeps' rows first, then this grid)."""
        import io

        from filelock import FileLock

        buf = io.StringIO()
        writer = csv.DictWriter(
            buf, fieldnames=self.columns, lineterminator="\n", extrasaction="ignore"
        )
        writer.writeheader()
        for row in self.old_rows:
            writer.writerow(row)
        for spec in self.plan.runs:
            writer.writerow(self.rows[spec.run_key])
        with FileLock(str(self.path) + ".lock", timeout=600):
            write_text_atomic(self.path, buf.getvalue())


def csv_cell(v: Any) -> Any:
    return " ".join(map(str, v)) if isinstance(v, (list, tuple)) else v
