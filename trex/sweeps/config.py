"""run_experiments' options, one dataclass field per flag (:mod:`trex.common.config`), and
the parsing of its command line, which passes the flags it does not know to the stage.

* :class:`SlurmConfig`: the resources of each SLURM array task (also the defaults of
  :class:`trex.sweeps.slurm.SlurmOptions`);
* :class:`RunExperimentsConfig`: the whole sweep: the stage, the original project's grid
  flags (several values each), ``--grid`` axes, seeds, where the sweep goes and how it runs.

:func:`parse_sweep_args` splits a command line into the config, the stage's own flags, and
the stage values of a sweep file (``-c sweep.yaml``, where every list is one grid axis).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
from collections.abc import Sequence
from typing import Any

from trex.common.cli import load_yaml_config, nonnegative_int, positive_float, positive_int
from trex.common.config import Config, config_from_namespace, config_parser, flag, require
from trex.common.errors import UserError

GRID_GROUP = (
    "grid (the original project's flags; several values each; default: the stage's default)"
)
SLURM_GROUP = "SLURM (--launcher slurm; one job array per sweep, through submitit)"

#: the original project's grid flags: several values each, passed to the stage as one value
#: per run
GRID_FLAGS = (
    "env_name",
    "distribution_mode",
    "num_dems",
    "max_return",
    "sequential",
    "weight_decay",
)


def _grid_flag() -> Any:
    return flag(None, metavar="V", group=GRID_GROUP, help=None)


@dataclasses.dataclass
class SweepConfig(Config):
    """The stage, its grid and seeds, and where and how the runs go."""

    stage: str = flag(
        "train_reward",
        help="stage to run: train_reward, train_policy, ... (or a python module path)",
    )
    env_name: list[str] | None = _grid_flag()
    distribution_mode: list[str] | None = _grid_flag()
    num_dems: list[str] | None = _grid_flag()
    max_return: list[str] | None = _grid_flag()
    sequential: list[str] | None = _grid_flag()
    weight_decay: list[str] | None = _grid_flag()
    grid: list[list[str]] | None = flag(
        None,
        nargs="+",
        action="append",
        metavar=("FLAG", "V"),
        group=GRID_GROUP,
        help="one more grid axis over any stage flag, e.g. --grid rm_id 123_4567 234_5678 "
        "(repeatable)",
    )
    num_seeds: int | None = flag(
        None,
        type=positive_int,
        group=GRID_GROUP,
        help="seeds per grid point (default 5 when the stage has --seed)",
    )
    base_seed: int = flag(
        0,
        type=nonnegative_int,
        group=GRID_GROUP,
        help="changes every derived seed (deterministically); 0 = the standard set",
    )
    save_name: str | None = flag(
        None,
        group=GRID_GROUP,
        help="passed to every run (train_reward: rm_infos_<save_name>.csv) and names the manifest",
    )
    pass_args: str = flag(
        "",
        group=GRID_GROUP,
        help='extra arguments for every run, one string: "--max_num_epochs 5 --patience 2"',
    )
    sweep_dir: str | None = flag(
        None,
        help="where the manifest and per-run logs go (default: the stage's --save_dir, "
        "else --log_dir, else ./sweeps)",
    )
    launcher: str = flag("local", choices=("local", "slurm"), help=None)
    jobs: int | None = flag(
        None,
        type=positive_int,
        help="local: runs at a time (default: one per available core)",
    )


@dataclasses.dataclass
class SlurmConfig(Config):
    """The resources of each task of a sweep's SLURM job array."""

    partition: str | None = flag(
        None, group=SLURM_GROUP, help="default: the cluster's default partition"
    )
    gpus_per_job: int = flag(0, type=nonnegative_int, group=SLURM_GROUP, help=None)
    cpus_per_job: int = flag(1, type=positive_int, group=SLURM_GROUP, help=None)
    mem_gb: float = flag(4.0, type=positive_float, group=SLURM_GROUP, help=None)
    timeout_min: int = flag(60, type=positive_int, group=SLURM_GROUP, help=None)
    max_parallel: int = flag(
        256, type=positive_int, group=SLURM_GROUP, help="array tasks running at once"
    )
    poll_s: float = flag(
        5.0, type=positive_float, group=SLURM_GROUP, help="seconds between status checks"
    )


@dataclasses.dataclass
class RunExperimentsConfig(SlurmConfig, SweepConfig):
    """run_experiments: a grid of runs of one stage, locally in parallel or on SLURM."""

    dry_run: bool = flag(False, help="print the runs and exit")

    def check(self) -> None:
        super().check()
        self.check_flags()
        for item in self.grid or []:
            require(len(item) >= 2, f"--grid {item[0]}: give the flag and at least one value")
        self.pass_through()

    def pass_through(self) -> list[str]:
        """``--pass_args`` as tokens (UserError if it does not split like a shell line)."""
        try:
            return shlex.split(self.pass_args or "")
        except ValueError as err:
            raise UserError(f"--pass_args: {err}") from None

    def cli_axes(self) -> list[tuple[str, list[str]]]:
        """The grid axes of the command line: the grid flags given, then the ``--grid``
        axes, as (stage flag, values)."""
        axes = [(k, getattr(self, k)) for k in GRID_FLAGS if getattr(self, k) is not None]
        axes += [(item[0].lstrip("-"), item[1:]) for item in self.grid or []]
        return axes


def build_sweep_parser() -> argparse.ArgumentParser:
    """run_experiments' parser, generated from :class:`RunExperimentsConfig`; no
    abbreviations, since every flag it does not know goes to the stage."""
    parser = config_parser(
        RunExperimentsConfig,
        prog="trex-run-experiments",
        description="Run a grid of runs of a stage (default train_reward), locally in parallel "
        "or as one SLURM job array. Flags this command does not know are passed to every run.",
    )
    parser.allow_abbrev = False
    return parser


@dataclasses.dataclass
class SweepArgs:
    """run_experiments' command line, parsed."""

    cfg: RunExperimentsConfig
    stage_args: list[str]  # stage flags from the command line and --pass_args, for every run
    file_values: dict[str, Any]  # stage flags from the sweep file (a list: a grid axis)
    config_file: str | None  # the sweep file (-c)


def parse_sweep_args(argv: Sequence[str]) -> SweepArgs:
    """Our flags (from the command line and the sweep file), the tokens for the stage, and
    the stage values of the sweep file; UserError (one line) for any mistake."""

    parser = build_sweep_parser()

    def error(message: str) -> None:
        raise UserError(message)

    parser.error = error  # type: ignore[method-assign]
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("-c", "--config", default=None)
    known, _ = pre.parse_known_args(argv)
    stage_values: dict[str, Any] = {}
    if known.config:
        values = load_sweep_yaml(known.config)
        own = {f.name for f in dataclasses.fields(RunExperimentsConfig)} - set(GRID_FLAGS)
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
    cfg = config_from_namespace(RunExperimentsConfig, args)
    return SweepArgs(cfg, unknown + cfg.pass_through(), stage_values, known.config)


def default_jobs() -> int:
    """What the cores allow: one run per core available to this process."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def load_sweep_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """The sweep file: run_experiments flags and stage flags (a list = a grid axis)."""
    return load_yaml_config(path)
