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
status, rm_id, wall time and log. Exit status 1 if any run failed.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence
from typing import Any

from trex.common.cli import (
    add_config_flag,
    cli_entry,
    nonnegative_int,
    positive_float,
    positive_int,
    setup_logging,
)
from trex.common.errors import UserError

log = logging.getLogger("trex.run_experiments")

# the original project's grid flags: several values each, passed to the stage as one value per run
GRID_FLAGS = {
    "env_name": str,
    "distribution_mode": str,
    "num_dems": str,
    "max_return": str,
    "sequential": str,
    "weight_decay": str,
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trex-run-experiments",
        allow_abbrev=False,
        description="Run a grid of runs of a stage (default train_reward), locally in parallel "
        "or as one SLURM job array. Flags this command does not know are passed to every run.",
    )
    add_config_flag(p)
    p.add_argument(
        "--stage",
        default="train_reward",
        help="stage to run: train_reward, train_policy, ... (or a python module path)",
    )
    g = p.add_argument_group(
        "grid (the original project's flags; several values each; default: the stage's default)"
    )
    for name, typ in GRID_FLAGS.items():
        g.add_argument(f"--{name}", nargs="+", type=typ, default=None, metavar="V")
    g.add_argument(
        "--grid",
        nargs="+",
        action="append",
        default=None,
        metavar=("FLAG", "V"),
        help="one more grid axis over any stage flag, e.g. --grid rm_id 123_4567 234_5678 "
        "(repeatable)",
    )
    g.add_argument(
        "--num_seeds",
        type=positive_int,
        default=None,
        help="seeds per grid point (default 5 when the stage has --seed)",
    )
    g.add_argument(
        "--base_seed",
        type=nonnegative_int,
        default=0,
        help="changes every derived seed (deterministically); 0 = the standard set",
    )
    g.add_argument(
        "--save_name",
        default=None,
        help="passed to every run (train_reward: rm_infos_<save_name>.csv) and names the manifest",
    )
    g.add_argument(
        "--pass_args",
        default="",
        help='extra arguments for every run, one string: "--max_num_epochs 5 --patience 2"',
    )
    p.add_argument(
        "--sweep_dir",
        default=None,
        help="where the manifest and per-run logs go (default: the stage's --save_dir, "
        "else --log_dir, else ./sweeps)",
    )
    p.add_argument("--launcher", choices=("local", "slurm"), default="local")
    p.add_argument(
        "--jobs",
        type=positive_int,
        default=None,
        help="local: runs at a time (default: one per available core)",
    )
    s = p.add_argument_group("SLURM (--launcher slurm; one job array per sweep, through submitit)")
    s.add_argument("--partition", default=None, help="default: the cluster's default partition")
    s.add_argument("--gpus_per_job", type=nonnegative_int, default=0)
    s.add_argument("--cpus_per_job", type=positive_int, default=1)
    s.add_argument("--mem_gb", type=positive_float, default=4.0)
    s.add_argument("--timeout_min", type=positive_int, default=60)
    s.add_argument(
        "--max_parallel", type=positive_int, default=256, help="array tasks running at once"
    )
    s.add_argument(
        "--poll_s", type=positive_float, default=5.0, help="seconds between status checks"
    )
    p.add_argument("--dry_run", action="store_true", help="print the runs and exit")
    return p


def _parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str], dict[str, Any]]:
    """Our flags, the unknown tokens (for the stage), and the stage values from ``-c``."""
    from trex.sweeps.report import load_sweep_yaml

    parser = build_parser()

    def error(message: str) -> None:
        raise UserError(message)

    parser.error = error  # type: ignore[method-assign]
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("-c", "--config", default=None)
    known, _ = pre.parse_known_args(argv)
    stage_values: dict[str, Any] = {}
    if known.config:
        values = load_sweep_yaml(known.config)
        own = {a.dest for a in parser._actions} - set(GRID_FLAGS) - {"help", "config"}
        control = {k: v for k, v in values.items() if k in own}
        stage_values = {k: v for k, v in values.items() if k not in own}
        for key, value in control.items():
            if isinstance(value, list):
                raise UserError(f"config file {known.config}: {key} takes one value, got a list")
        tokens: list[str] = []
        for key, value in control.items():
            action = next(a for a in parser._actions if a.dest == key)
            if action.nargs == 0:
                if value:
                    tokens.append(f"--{key}")
            elif value is not None:
                tokens.append(f"--{key}={value}")
        try:
            base = parser.parse_args(tokens)  # the flag's type check, as on the command line
        except UserError as err:
            raise UserError(f"config file {known.config}: {err}") from None
        parser.set_defaults(**{k: getattr(base, k) for k in control})
    args, unknown = parser.parse_known_args(argv)
    if unknown and not unknown[0].startswith("-"):
        raise UserError(f"unexpected argument {unknown[0]!r} (stage flags start with --)")
    return args, unknown, stage_values


def slurm_options(args: argparse.Namespace) -> Any:
    """The SLURM resources of each array task, from the parsed flags."""
    from trex.sweeps.slurm import SlurmOptions

    return SlurmOptions(
        partition=args.partition,
        gpus_per_job=args.gpus_per_job,
        cpus_per_job=args.cpus_per_job,
        mem_gb=args.mem_gb,
        timeout_min=args.timeout_min,
        max_parallel=args.max_parallel,
        job_name=f"trex-{args.stage.rsplit('.', 1)[-1]}",
        poll_s=args.poll_s,
    )


@cli_entry
def main(argv: Sequence[str] | None = None) -> int | None:
    from trex import sweeps

    argv = list(sys.argv[1:] if argv is None else argv)
    setup_logging()
    args, passthrough, file_values = _parse(argv)

    module = sweeps.load_stage(args.stage)
    actions = sweeps.stage_actions(sweeps.stage_parser(module))
    cli_axes = [
        (name, getattr(args, name)) for name in GRID_FLAGS if getattr(args, name) is not None
    ]
    for item in args.grid or []:
        if len(item) < 2:
            raise UserError(f"--grid {item[0]}: give the flag and at least one value")
        cli_axes.append((item[0].lstrip("-"), item[1:]))
    axes, fixed = sweeps.grid_axes(
        actions, file_values, cli_axes, args.stage, f"config file {args.config}"
    )
    try:
        extra = passthrough + shlex.split(args.pass_args or "")
    except ValueError as err:
        raise UserError(f"--pass_args: {err}") from None
    if args.save_name is not None and "save_name" not in actions and actions:
        log.info("stage %s has no --save_name: it only names the manifest", args.stage)
    num_seeds = args.num_seeds if args.num_seeds is not None else (5 if "seed" in actions else 1)
    if "seed" not in actions and actions and args.num_seeds and args.num_seeds > 1:
        raise UserError(f"--num_seeds: stage {args.stage} has no --seed flag")
    user_seed = (
        any(k == "seed" for k, _ in axes)
        or "seed" in fixed
        or any(t == "--seed" or t.startswith("--seed=") for t in extra)
    )
    if user_seed and args.num_seeds is None:
        num_seeds = 1
    jobs = args.jobs or sweeps.default_jobs()
    threads = (
        max(1, sweeps.default_jobs() // jobs) if args.launcher == "local" else args.cpus_per_job
    )
    plan = sweeps.expand_grid(
        args.stage,
        axes,
        fixed,
        extra_args=extra,
        num_seeds=num_seeds,
        base_seed=args.base_seed,
        sweep_dir=args.sweep_dir,
        save_name=args.save_name,
        threads=threads,
    )
    if args.dry_run:
        print(sweeps.dry_run_table(plan))
        return 0
    plan.sweep_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(plan.sweep_dir / "sweep_log.txt")
    log.info(
        "sweep: %d runs of %s, launcher %s, manifest %s",
        len(plan.runs),
        args.stage,
        args.launcher,
        plan.manifest,
    )
    if args.launcher == "local":
        outcome = sweeps.run_local(plan, jobs=jobs)
    else:
        outcome = sweeps.run_slurm(plan, slurm_options(args))
    print(sweeps.summary_table(plan, outcome))
    return 0 if outcome.ok else 1


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
