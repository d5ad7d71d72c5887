"""Sweeps: a grid of runs of one stage, locally in parallel or as one SLURM job array.

A *run* is a stage module plus an argument list, executed as a subprocess
``sys.executable -m trex.<stage> ...`` (the same interpreter, so the same venv, locally and
on the cluster). Every run gets

* a deterministic seed, hashed from its parameters (not the folders and files shared by the
  whole sweep) and its seed index (its place in the grid),
  in the original project's 7-digit range [1e6, 1e7) (train_reward derives ``rm_id`` from it);
* a run key: a hash of the stage and every parsed argument including the seed. A run whose
  ``<sweep_dir>/sweep_runs/<run_key>/status.json`` says ``done`` is skipped when the sweep
  is started again, so a sweep killed halfway just continues;
* a directory ``sweep_runs/<run_key>/`` with ``log.txt`` (the run's stdout and stderr),
  ``result.json`` (what the stage reported, see :func:`write_stage_result`) and
  ``status.json`` (status, exit code, wall time, result).

The manifest ``<sweep_dir>/sweep_manifest[_<save_name>].csv`` has one row per run (its
parameters, status done/failed/skipped/pending, rm_id, wall time, log path) and is rewritten
atomically after every finished run. Rows of runs from earlier sweeps that are not in the
current grid are kept.

Stages report their result through the environment: the sweep sets ``TREX_RESULT_JSON`` to a
path and a stage calls ``write_stage_result(rm_id=..., ...)`` at its end (a no-op when the
variable is unset, i.e. outside a sweep).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trex.common.cli import parse_args
from trex.common.errors import UserError
from trex.common.files import write_json_atomic

log = logging.getLogger("trex.sweeps")

RESULT_ENV = "TREX_RESULT_JSON"
STATUSES = ("done", "failed", "skipped", "pending")


# ----------------------------------------------------------------------------- stage side


def write_stage_result(**fields: Any) -> Path | None:
    """Report a stage's result to the sweep that launched it (no-op outside a sweep).

    Writes ``fields`` as a JSON object, atomically, to the path in ``$TREX_RESULT_JSON``.
    train_reward calls ``write_stage_result(rm_id=rm_id, val_acc=..., pearson=...)``; the
    sweep copies ``rm_id`` into its manifest. Returns the path written, or None.
    """
    path = os.environ.get(RESULT_ENV)
    if not path:
        return None
    write_json_atomic(path, fields)
    return Path(path)


# ----------------------------------------------------------------------------- stage modules


def stage_module_name(stage: str) -> str:
    """``train_reward`` -> ``trex.train_reward``; a dotted name (or a top-level module that is
    not a trex stage, e.g. a test's) is taken as a module path. UserError if none exists."""
    import importlib.util

    if not stage or stage.startswith(".") or stage.endswith(".") or "/" in stage:
        raise UserError(f"--stage: not a stage or module name: {stage!r}")
    candidates = [stage] if "." in stage else [f"trex.{stage}", stage]
    for name in candidates:
        try:
            if importlib.util.find_spec(name) is not None:
                return name
        except (ModuleNotFoundError, ValueError):
            continue
    raise UserError(f"--stage {stage}: no module {candidates[0]}")


def load_stage(stage: str) -> Any:
    """Import a stage module (UserError if it does not exist)."""
    return importlib.import_module(stage_module_name(stage))


def stage_parser(module: Any) -> argparse.ArgumentParser | None:
    """The stage's ``build_parser()`` (None for a module without one: args are not checked)."""
    build = getattr(module, "build_parser", None)
    return build() if callable(build) else None


def stage_actions(parser: argparse.ArgumentParser | None) -> dict[str, argparse.Action]:
    if parser is None:
        return {}
    return {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}


def parse_stage_args(module: Any, stage: str, argv: Sequence[str]) -> dict[str, Any] | None:
    """Parse one run's arguments with the stage's own parser: UserError on any mistake.

    Returns the parsed values (None when the stage has no ``build_parser``), so typos are
    caught before anything is launched, not in 75 failed runs.
    """
    parser = stage_parser(module)
    if parser is None:
        return None

    def error(message: str) -> None:
        raise UserError(f"stage {stage}: {message} (run arguments: {shlex.join(argv)})")

    parser.error = error  # type: ignore[method-assign]
    return vars(parse_args(parser, list(argv)))
