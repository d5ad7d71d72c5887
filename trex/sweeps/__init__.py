"""Sweeps: a grid of runs of one stage, executed locally in parallel or as a SLURM job array,
with a manifest that lets an interrupted sweep continue.

Public names are imported on first use (``from trex.sweeps import X``), so importing the
package stays cheap and the sub-packages import no more of each other than they use."""

from trex._lazy import lazy_exports

_EXPORTS = {
    "LOCATION_FLAGS": "trex.sweeps.grid",
    "LOCATION_FLAG_SUFFIXES": "trex.sweeps.grid",
    "RUNS_SUBDIR": "trex.sweeps.grid",
    "RunSpec": "trex.sweeps.grid",
    "SEED_MAX": "trex.sweeps.grid",
    "SEED_MIN": "trex.sweeps.grid",
    "SweepPlan": "trex.sweeps.grid",
    "derive_seed": "trex.sweeps.grid",
    "expand_grid": "trex.sweeps.grid",
    "flag_tokens": "trex.sweeps.grid",
    "grid_axes": "trex.sweeps.grid",
    "seed_params": "trex.sweeps.grid",
    "split_values": "trex.sweeps.grid",
    "SweepOutcome": "trex.sweeps.local",
    "progress_bar": "trex.sweeps.local",
    "record_outcome": "trex.sweeps.local",
    "run_local": "trex.sweeps.local",
    "start_sweep": "trex.sweeps.local",
    "Manifest": "trex.sweeps.manifest",
    "csv_cell": "trex.sweeps.manifest",
    "default_jobs": "trex.sweeps.report",
    "dry_run_table": "trex.sweeps.report",
    "load_sweep_yaml": "trex.sweeps.report",
    "summary_table": "trex.sweeps.report",
    "THREAD_VARS": "trex.sweeps.runner",
    "execute_run": "trex.sweeps.runner",
    "is_finished": "trex.sweeps.runner",
    "last_line": "trex.sweeps.runner",
    "read_status": "trex.sweeps.runner",
    "set_thread_env": "trex.sweeps.runner",
    "terminate_live_runs": "trex.sweeps.runner",
    "SlurmOptions": "trex.sweeps.slurm",
    "make_slurm_executor": "trex.sweeps.slurm",
    "run_slurm": "trex.sweeps.slurm",
    "sbatch_script": "trex.sweeps.slurm",
    "RESULT_ENV": "trex.sweeps.stages",
    "STATUSES": "trex.sweeps.stages",
    "load_stage": "trex.sweeps.stages",
    "parse_stage_args": "trex.sweeps.stages",
    "stage_actions": "trex.sweeps.stages",
    "stage_module_name": "trex.sweeps.stages",
    "stage_parser": "trex.sweeps.stages",
    "write_stage_result": "trex.sweeps.stages",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
