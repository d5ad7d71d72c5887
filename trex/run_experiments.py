"""Run a grid of train_reward runs (or of any stage), locally in parallel or on SLURM.

The original project's flags keep their meaning: ``--env_name --distribution_mode --num_dems
--max_return --sequential --weight_decay`` take several values each and the grid is their
product, times ``--num_seeds`` seeds. Any other stage flag can be given once for all runs
(``--max_num_epochs 5`` or ``--pass_args "--max_num_epochs 5"``), or as a list in the sweep
file (``-c sweep.yaml``), where every list is one more grid axis.

    trex-run-experiments --env_name starpilot fruitbot --num_dems 12 25 50 --num_seeds 3 \\
        --demo_csv demos/demo_infos.csv --jobs 2
    trex-run-experiments -c sweep.yaml --launcher slurm --partition gpu --gpus_per_job 1

Each run gets a deterministic seed from its parameters and seed index; a run already done
(same parameters and seed) is skipped when the sweep is started again. A manifest CSV next to
the results (``<save_dir>/sweep_manifest[_<save_name>].csv``) lists every run with its
status, rm_id, wall time and log. Exit status 1 if any run failed. The flags are the fields
of :class:`trex.sweeps.config.RunExperimentsConfig`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from trex.common.cli import cli_entry, setup_logging
from trex.sweeps.config import build_sweep_parser
from trex.sweeps.slurm import slurm_options

log = logging.getLogger("trex.run_experiments")


def build_parser() -> argparse.ArgumentParser:
    return build_sweep_parser()


@cli_entry
def main(argv: Sequence[str] | None = None) -> int | None:
    from trex import sweeps
    from trex.sweeps.config import parse_sweep_args
    from trex.sweeps.grid import plan_sweep

    setup_logging()
    args = parse_sweep_args(list(sys.argv[1:] if argv is None else argv))
    cfg = args.cfg
    plan, jobs = plan_sweep(args)
    if cfg.dry_run:
        print(sweeps.dry_run_table(plan))
        return 0
    plan.sweep_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(plan.sweep_dir / "sweep_log.txt")
    log.info(
        "sweep: %d runs of %s, launcher %s, manifest %s",
        len(plan.runs),
        cfg.stage,
        cfg.launcher,
        plan.manifest,
    )
    if cfg.launcher == "local":
        outcome = sweeps.run_local(plan, jobs=jobs)
    else:
        outcome = sweeps.run_slurm(plan, slurm_options(cfg))
    print(sweeps.summary_table(plan, outcome))
    return 0 if outcome.ok else 1


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
