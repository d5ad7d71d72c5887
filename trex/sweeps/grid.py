"""The grid of a sweep: axes from a YAML file or the command line, one run per combination
and seed index, each with a deterministic seed hashed from its parameters."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import logging
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trex.common.errors import UserError
from trex.sweeps.config import SweepArgs, default_jobs
from trex.sweeps.stages import (
    load_stage,
    parse_stage_args,
    stage_actions,
    stage_module_name,
    stage_parser,
)

SEED_MIN, SEED_MAX = (
    1_000_000,
    10_000_000,
)  # the original project's 7-digit seeds (rm_id "123_4567")
RUNS_SUBDIR = "sweep_runs"

log = logging.getLogger("trex.sweeps")

# ----------------------------------------------------------------------------- grid


@dataclasses.dataclass
class RunSpec:
    """One run of a sweep: everything a worker (local thread or SLURM task) needs."""

    index: int  # place in the grid (execution order)
    stage: str
    module: str  # python module run with ``-m``
    params: dict[str, Any]  # the grid values of this run (axis name -> value)
    seed_index: int
    seed: int | None  # None when the stage has no --seed or seeds are explicit
    argv: list[str]  # full argument list given to the stage
    run_key: str
    run_dir: str  # absolute
    cwd: str  # absolute working directory of the run
    threads: int | None = None  # OMP/MKL threads for the run (unless already set)

    @property
    def command(self) -> list[str]:
        """The command line that runs this run (with the sweep's python)."""
        return [sys.executable, "-m", self.module, *self.argv]


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


def _hash(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(_canon(obj).encode()).hexdigest()[:n]


def derive_seed(
    stage: str, params: Mapping[str, Any], seed_index: int, base_seed: int = 0, salt: int = 0
) -> int:
    """Deterministic seed in [1e6, 1e7) from a run's parameters (:func:`seed_params`: where
    files live is left out) and its seed index.

    Adding values to other grid axes never changes the seeds of existing runs (the seed
    hashes this run's own parameters, not its position in the product), so a grown grid
    still skips what is done. ``base_seed`` gives a fresh, equally deterministic set.
    """
    blob = {
        "stage": stage,
        "params": {k: v for k, v in params.items() if k != "seed"},
        "seed_index": seed_index,
        "base_seed": base_seed,
        "salt": salt,
    }
    h = int(_hash(blob, 16), 16)
    return SEED_MIN + h % (SEED_MAX - SEED_MIN)


#: flags that say where files are, not what a run does: left out of a derived seed when they
#: are the same for the whole sweep, so a study run from another folder gets the same seeds
LOCATION_FLAG_SUFFIXES = ("_dir", "_csv", "_path")
LOCATION_FLAGS = frozenset({"config", "reward_model", "out"})


def seed_params(identity: Mapping[str, Any], axis_names: Sequence[str]) -> dict[str, Any]:
    """The parameters a derived seed hashes: a run's parsed flags without the file locations
    (:data:`LOCATION_FLAGS`, names ending in :data:`LOCATION_FLAG_SUFFIXES`) that are not grid
    axes; a location that is an axis (``--grid demo_csv a.csv b.csv``) stays in, so its runs
    get seeds of their own."""
    axes = set(axis_names)
    return {
        k: v
        for k, v in identity.items()
        if k in axes or not (k in LOCATION_FLAGS or k.endswith(LOCATION_FLAG_SUFFIXES))
    }


def flag_tokens(key: str, value: Any, actions: Mapping[str, argparse.Action]) -> list[str]:
    """Command-line tokens setting stage flag ``key`` (a dest name) to ``value``.

    Booleans of ``store_true``/``store_false`` flags become the bare flag or nothing; list
    values of ``nargs='+'`` flags become several tokens; None leaves the stage default.
    """
    action = actions.get(key)
    if action is None:
        opt = f"--{key}"
    else:
        longs = [o for o in action.option_strings if o.startswith("--")]
        opt = longs[0] if longs else action.option_strings[0]
    if value is None:
        return []
    if action is not None and action.nargs == 0:  # store_true / store_false / store_const
        from trex.common.cli import str2bool

        try:
            flag = str2bool(value) if not isinstance(value, bool) else value
        except argparse.ArgumentTypeError:
            raise UserError(f"flag --{key} takes true or false, got {value!r}") from None
        wanted = isinstance(action, argparse._StoreFalseAction)
        return [opt] if flag != wanted else []
    if isinstance(value, (list, tuple)):
        return [opt, *(str(v) for v in value)]
    return [f"{opt}={value}"]


def _is_multi(action: argparse.Action | None) -> bool:
    return action is not None and (
        action.nargs in ("+", "*") or (isinstance(action.nargs, int) and action.nargs > 1)
    )


def split_values(
    values: Mapping[str, Any], actions: Mapping[str, argparse.Action], source: str
) -> tuple[list[tuple[str, list[Any]]], dict[str, Any]]:
    """Split flag values into grid axes (lists) and fixed values.

    For a flag that itself takes a list (``nargs='+'``, e.g. ``demo_csv``) a list is one
    value and a list of lists is an axis.
    """
    axes: list[tuple[str, list[Any]]] = []
    fixed: dict[str, Any] = {}
    for key, value in values.items():
        if actions and key not in actions:
            raise UserError(f"{source}: the stage has no flag --{key}")
        multi = _is_multi(actions.get(key))
        is_axis = isinstance(value, list) and (
            not multi or (value and all(isinstance(v, list) for v in value))
        )
        if is_axis:
            if not value:
                raise UserError(f"{source}: {key} is an empty list (a grid axis needs values)")
            axes.append((key, list(value)))
        else:
            fixed[key] = value
    return axes, fixed


def grid_axes(
    actions: Mapping[str, argparse.Action],
    file_values: Mapping[str, Any],
    cli_axes: Sequence[tuple[str, Sequence[Any]]],
    stage: str,
    source: str,
) -> tuple[list[tuple[str, list[Any]]], dict[str, Any]]:
    """The grid from a sweep file's stage values and the command line's axes (which win).

    Repeated values on the command line count once. Returns (axes, fixed values).
    """
    axes, fixed = split_values(file_values, actions, source)
    for name, values in cli_axes:
        if actions and name not in actions:
            raise UserError(f"stage {stage} has no flag --{name}")
        axes = [(k, v) for k, v in axes if k != name]
        fixed.pop(name, None)
        axes.append((name, list(dict.fromkeys(values))))
    return axes, fixed


@dataclasses.dataclass
class SweepPlan:
    """The expanded grid of a sweep."""

    stage: str
    runs: list[RunSpec]
    axes: list[str]  # axis names, manifest columns
    sweep_dir: Path
    manifest: Path


def expand_grid(
    stage: str,
    axes: Sequence[tuple[str, Sequence[Any]]],
    fixed: Mapping[str, Any],
    extra_args: Sequence[str] = (),
    num_seeds: int = 1,
    base_seed: int = 0,
    sweep_dir: str | os.PathLike | None = None,
    save_name: str | None = None,
    threads: int | None = None,
) -> SweepPlan:
    """Expand a grid into runs, each checked with the stage's own parser.

    ``axes``: (flag, values) pairs; the product is taken with the seed index outermost (all
    settings for seed 0 first, as the original project did). ``fixed``: flag values shared by all
    runs; ``extra_args``: raw tokens appended to every run (``--pass_args``). If the stage has
    a ``--seed`` flag and it is not set by the user, each run gets :func:`derive_seed`.
    """
    module = load_stage(stage)
    parser = stage_parser(module)
    actions = stage_actions(parser)
    axis_names = [k for k, _ in axes]
    if len(set(axis_names)) != len(axis_names):
        raise UserError(f"grid axis given twice: {axis_names}")
    for key in list(axis_names) + list(fixed):
        if actions and key not in actions:
            raise UserError(f"stage {stage} has no flag --{key}")
    if save_name is not None and "save_name" in actions and "save_name" not in fixed:
        fixed = {**fixed, "save_name": save_name}
    user_seed = (
        "seed" in axis_names
        or "seed" in fixed
        or any(t == "--seed" or t.startswith("--seed=") for t in extra_args)
    )
    auto_seed = "seed" in actions and not user_seed
    if user_seed and num_seeds > 1:
        raise UserError(
            "--num_seeds > 1 with seeds given explicitly (seed: ...): use one or the other"
        )
    n_seeds = num_seeds if auto_seed else 1

    runs: list[RunSpec] = []
    used_seeds: set[int] = set()
    keys_seen: dict[str, int] = {}
    outputs_seen: dict[
        tuple[Any, ...], int
    ] = {}  # (save_dir, save_name, seed) -> run: one model each
    sweep_path: Path | None = Path(sweep_dir).resolve() if sweep_dir is not None else None
    cwd = os.getcwd()
    combos = list(itertools.product(*[list(v) for _, v in axes])) if axes else [()]
    for seed_index in range(n_seeds):
        for combo in combos:
            params = dict(zip(axis_names, combo))
            tokens: list[str] = []
            for key, value in {**fixed, **params}.items():
                tokens += flag_tokens(key, value, actions)
            tokens += list(extra_args)
            parsed = parse_stage_args(module, stage, tokens)
            identity = dict(parsed) if parsed is not None else {"argv": tokens}
            if auto_seed:
                identity.pop("seed", None)
            point = _hash({"stage": stage, "args": identity, "seed_index": seed_index})
            if point in keys_seen:
                raise UserError(
                    f"the grid holds the same run twice (runs {keys_seen[point]} and "
                    f"{len(runs)}: {shlex.join(tokens)}): check for repeated values"
                )
            keys_seen[point] = len(runs)
            seed = None
            if auto_seed:
                salt = 0
                hashed = seed_params(identity, axis_names)
                seed = derive_seed(stage, hashed, seed_index, base_seed)
                while seed in used_seeds:  # a hash collision inside this sweep: rm_ids must differ
                    salt += 1
                    seed = derive_seed(stage, hashed, seed_index, base_seed, salt)
                used_seeds.add(seed)
                tokens += flag_tokens("seed", seed, actions)
                identity["seed"] = seed
            if parsed is not None and "save_name" in actions and identity.get("seed") is not None:
                # a stage that names its output by seed (train_reward's rm_id) within a save_name
                out_key = (parsed.get("save_dir"), parsed.get("save_name"), identity["seed"])
                if out_key in outputs_seen:
                    raise UserError(
                        f"runs {outputs_seen[out_key]} and {len(runs)} would write the same "
                        f"output (seed {identity['seed']}, save_name {parsed.get('save_name')}): "
                        "with seeds given explicitly, run one sweep (its own --save_name) per "
                        "value of the other axes"
                    )
                outputs_seen[out_key] = len(runs)
            run_key = _hash({"stage": stage, "args": identity})
            fill_seed = seed if seed is not None else (parsed or {}).get("seed")
            tokens = [_fill(t, fill_seed, seed_index) for t in tokens]
            if sweep_path is None:
                sweep_path = _default_sweep_dir(parsed)
            runs.append(
                RunSpec(
                    index=len(runs),
                    stage=stage,
                    module=stage_module_name(stage),
                    params=params,
                    seed_index=seed_index,
                    seed=seed,
                    argv=tokens,
                    run_key=run_key,
                    run_dir=str(sweep_path / RUNS_SUBDIR / run_key),
                    cwd=cwd,
                    threads=threads,
                )
            )
    assert sweep_path is not None
    suffix = f"_{save_name}" if save_name else ""
    return SweepPlan(
        stage=stage,
        runs=runs,
        axes=axis_names,
        sweep_dir=sweep_path,
        manifest=sweep_path / f"sweep_manifest{suffix}.csv",
    )


def plan_sweep(args: SweepArgs) -> tuple[SweepPlan, int]:
    """The runs of run_experiments' sweep, and how many run at a time locally.

    The grid is the sweep file's stage values with the command line's axes (which win); the
    seeds per grid point are ``--num_seeds``, else 5 for a stage with ``--seed``, else 1
    (1 as well when the seed is given explicitly). Each local run gets an equal share of the
    cores as its threads, each SLURM task ``--cpus_per_job``. UserError for a stage or flag
    that does not exist, or any run its stage's parser refuses.
    """

    cfg, extra = args.cfg, args.stage_args
    actions = stage_actions(stage_parser(load_stage(cfg.stage)))
    axes, fixed = grid_axes(
        actions, args.file_values, cfg.cli_axes(), cfg.stage, f"config file {args.config_file}"
    )
    if cfg.save_name is not None and "save_name" not in actions and actions:
        log.info("stage %s has no --save_name: it only names the manifest", cfg.stage)
    num_seeds = cfg.num_seeds if cfg.num_seeds is not None else (5 if "seed" in actions else 1)
    if "seed" not in actions and actions and cfg.num_seeds and cfg.num_seeds > 1:
        raise UserError(f"--num_seeds: stage {cfg.stage} has no --seed flag")
    user_seed = (
        any(k == "seed" for k, _ in axes)
        or "seed" in fixed
        or any(t == "--seed" or t.startswith("--seed=") for t in extra)
    )
    if user_seed and cfg.num_seeds is None:
        num_seeds = 1
    jobs = cfg.jobs or default_jobs()
    threads = max(1, default_jobs() // jobs) if cfg.launcher == "local" else cfg.cpus_per_job
    plan = expand_grid(
        cfg.stage,
        axes,
        fixed,
        extra_args=extra,
        num_seeds=num_seeds,
        base_seed=cfg.base_seed,
        sweep_dir=cfg.sweep_dir,
        save_name=cfg.save_name,
        threads=threads,
    )
    return plan, jobs


def _fill(token: str, seed: int | None, seed_index: int) -> str:
    """Placeholders in string values: ``{seed}`` (the run's seed), ``{seed_index}``.

    E.g. ``--log_name s{seed}`` gives every train_policy run of a sweep its own directory.
    """
    if "{seed" not in token:
        return token
    token = token.replace("{seed_index}", str(seed_index))
    return token.replace("{seed}", str(seed)) if seed is not None else token


def _default_sweep_dir(parsed: Mapping[str, Any] | None) -> Path:
    """Next to the results: the stage's ``--save_dir`` (train_reward) or ``--log_dir``."""
    for key in ("save_dir", "log_dir"):
        if parsed and isinstance(parsed.get(key), str) and parsed[key]:
            return Path(parsed[key]).resolve()
    return Path("sweeps").resolve()
