"""Demonstrations: the demo store (``demo_infos.csv`` + one ``.npz`` per demo) and demo
generation from policy checkpoints (a whole run: :func:`collect_demos`, taking a
:class:`GenDemosConfig`).

Public names are imported on first use (``from trex.demos import X``), so importing the
package stays cheap and the sub-packages import no more of each other than they use."""

from trex._lazy import lazy_exports

_EXPORTS = {
    "GenDemosConfig": "trex.demos.config",
    "RANDOM_POLICY": "trex.demos.config",
    "CollectConfig": "trex.demos.generation",
    "CollectStats": "trex.demos.generation",
    "DemoWriter": "trex.demos.generation",
    "EpisodeRecord": "trex.demos.generation",
    "GenDemosResult": "trex.demos.generation",
    "check_existing_index": "trex.demos.generation",
    "collect_demos": "trex.demos.generation",
    "collect_episodes": "trex.demos.generation",
    "demo_id_for": "trex.demos.generation",
    "demos_of_run": "trex.demos.generation",
    "generate_demos": "trex.demos.generation",
    "index_paths": "trex.demos.generation",
    "policy_sources": "trex.demos.generation",
    "summarize_rows": "trex.demos.generation",
    "DemoJob": "trex.demos.planning",
    "PolicySource": "trex.demos.planning",
    "RANDOM_POLICY_NOISE": "trex.demos.planning",
    "check_noise": "trex.demos.planning",
    "checkpoint_source": "trex.demos.planning",
    "manifest_sources": "trex.demos.planning",
    "plan_jobs": "trex.demos.planning",
    "random_policy": "trex.demos.planning",
    "remaining_jobs": "trex.demos.planning",
    "skill_pool": "trex.demos.planning",
    "split_evenly": "trex.demos.planning",
    "spread_over_skill": "trex.demos.planning",
    "CSV_COLUMN": "trex.demos.store",
    "DEFAULT_FILES_DIR": "trex.demos.store",
    "DEFAULT_INDEX_NAME": "trex.demos.store",
    "DEMO_COLUMNS": "trex.demos.store",
    "Demo": "trex.demos.store",
    "DemoIndex": "trex.demos.store",
    "EXTRA_COLUMNS": "trex.demos.store",
    "NPZ_COMPRESSLEVEL": "trex.demos.store",
    "OBS_SHAPE": "trex.demos.store",
    "PATH_COLUMN": "trex.demos.store",
    "POOL_COLUMNS": "trex.demos.store",
    "REQUIRED_COLUMNS": "trex.demos.store",
    "append_index": "trex.demos.store",
    "check_demo_arrays": "trex.demos.store",
    "check_demo_id": "trex.demos.store",
    "claim_demo_file": "trex.demos.store",
    "commit_demo": "trex.demos.store",
    "compress_demo": "trex.demos.store",
    "demo_file_path": "trex.demos.store",
    "load_npz": "trex.demos.store",
    "read_index_ids": "trex.demos.store",
    "remove_orphans": "trex.demos.store",
    "savez_compressed": "trex.demos.store",
    "write_demo": "trex.demos.store",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
