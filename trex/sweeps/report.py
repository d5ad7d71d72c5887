"""What a sweep prints: its summary and dry-run tables, default job count, YAML loading."""

from __future__ import annotations

import logging
import shlex
from pathlib import Path

from trex.sweeps.grid import SweepPlan
from trex.sweeps.local import SweepOutcome
from trex.sweeps.manifest import csv_cell
from trex.sweeps.runner import is_finished

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- reporting


def summary_table(plan: SweepPlan, outcome: SweepOutcome) -> str:
    """A short plain-text summary: counts, then one line per failed run with its log."""
    lines = [
        f"sweep of {len(plan.runs)} {plan.stage} runs: {outcome.count('done')} done, "
        f"{outcome.count('skipped')} skipped (done before), {outcome.count('failed')} failed"
        + (f", {outcome.count('pending')} not run" if outcome.count("pending") else ""),
        f"manifest: {outcome.manifest}",
    ]
    failed = [s for s in plan.runs if outcome.statuses.get(s.run_key) == "failed"]
    for spec in failed:
        params = " ".join(f"{k}={csv_cell(v)}" for k, v in spec.params.items())
        lines.append(
            f"  FAILED run {spec.index} ({params} seed={spec.seed}): "
            f"{Path(spec.run_dir) / 'log.txt'}"
        )
    return "\n".join(lines)


def dry_run_table(plan: SweepPlan) -> str:
    """The runs of a plan, one per line, marked 'skip' if already done."""
    lines = [f"# {len(plan.runs)} runs of {plan.stage}; manifest {plan.manifest}"]
    for spec in plan.runs:
        mark = "skip" if is_finished(spec) else "run "
        lines.append(
            f"{spec.index:4d} {mark} {shlex.join(['python', '-m', spec.module, *spec.argv])}"
        )
    return "\n".join(lines)
