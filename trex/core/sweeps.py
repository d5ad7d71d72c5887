"""Sweeps: a grid of runs of one stage, locally in parallel or as one SLURM job array.

A *run* is a stage module plus an argument list, executed as a subprocess
``sys.executable -m trex.<stage> ...`` (the same interpreter, so the same venv, locally and
on the cluster). Every run gets

* a deterministic seed, hashed from its parameters (not the folders and files shared by the
  whole sweep) and its seed index (its place in the grid),
  in the seed project's 7-digit range [1e6, 1e7) (train_reward derives ``rm_id`` from it);
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
import contextlib
import csv
import dataclasses
import hashlib
import importlib
import itertools
import json
import logging
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from trex.core.runs import (
    UserError, fault_point, load_yaml_config, parse_args, write_json_atomic, write_text_atomic,
)

log = logging.getLogger("trex.sweeps")

RESULT_ENV = "TREX_RESULT_JSON"
SEED_MIN, SEED_MAX = 1_000_000, 10_000_000  # the seed project's 7-digit seeds (rm_id "123_4567")
STATUSES = ("done", "failed", "skipped", "pending")
RUNS_SUBDIR = "sweep_runs"


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


def _actions(parser: argparse.ArgumentParser | None) -> dict[str, argparse.Action]:
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


# ----------------------------------------------------------------------------- grid


@dataclasses.dataclass
class RunSpec:
    """One run of a sweep: everything a worker (local thread or SLURM task) needs."""

    index: int                     # place in the grid (execution order)
    stage: str
    module: str                    # python module run with ``-m``
    params: dict[str, Any]         # the grid values of this run (axis name -> value)
    seed_index: int
    seed: int | None               # None when the stage has no --seed or seeds are explicit
    argv: list[str]                # full argument list given to the stage
    run_key: str
    run_dir: str                   # absolute
    cwd: str                       # absolute working directory of the run
    threads: int | None = None     # OMP/MKL threads for the run (unless already set)

    @property
    def command(self) -> list[str]:
        """The command line that runs this run (with the sweep's python)."""
        return [sys.executable, "-m", self.module, *self.argv]


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


def _hash(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(_canon(obj).encode()).hexdigest()[:n]


def derive_seed(stage: str, params: Mapping[str, Any], seed_index: int, base_seed: int = 0,
                salt: int = 0) -> int:
    """Deterministic seed in [1e6, 1e7) from a run's parameters (:func:`seed_params`: where
    files live is left out) and its seed index.

    Adding values to other grid axes never changes the seeds of existing runs (the seed
    hashes this run's own parameters, not its position in the product), so a grown grid
    still skips what is done. ``base_seed`` gives a fresh, equally deterministic set.
    """
    blob = {"stage": stage, "params": {k: v for k, v in params.items() if k != "seed"},
            "seed_index": seed_index, "base_seed": base_seed, "salt": salt}
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
    return {k: v for k, v in identity.items()
            if k in axes or not (k in LOCATION_FLAGS or k.endswith(LOCATION_FLAG_SUFFIXES))}


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
        from trex.core.runs import str2bool
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
    return action is not None and (action.nargs in ("+", "*") or (isinstance(action.nargs, int)
                                                                    and action.nargs > 1))


def split_values(values: Mapping[str, Any], actions: Mapping[str, argparse.Action],
                 source: str) -> tuple[list[tuple[str, list[Any]]], dict[str, Any]]:
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
        is_axis = isinstance(value, list) and (not multi or (value and all(isinstance(v, list) for v in value)))
        if is_axis:
            if not value:
                raise UserError(f"{source}: {key} is an empty list (a grid axis needs values)")
            axes.append((key, list(value)))
        else:
            fixed[key] = value
    return axes, fixed


def grid_axes(actions: Mapping[str, argparse.Action], file_values: Mapping[str, Any],
              cli_axes: Sequence[tuple[str, Sequence[Any]]], stage: str,
              source: str) -> tuple[list[tuple[str, list[Any]]], dict[str, Any]]:
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
    axes: list[str]                # axis names, manifest columns
    sweep_dir: Path
    manifest: Path


def expand_grid(stage: str, axes: Sequence[tuple[str, Sequence[Any]]], fixed: Mapping[str, Any],
                extra_args: Sequence[str] = (), num_seeds: int = 1, base_seed: int = 0,
                sweep_dir: str | os.PathLike | None = None, save_name: str | None = None,
                threads: int | None = None) -> SweepPlan:
    """Expand a grid into runs, each checked with the stage's own parser.

    ``axes``: (flag, values) pairs; the product is taken with the seed index outermost (all
    settings for seed 0 first, as the seed project did). ``fixed``: flag values shared by all
    runs; ``extra_args``: raw tokens appended to every run (``--pass_args``). If the stage has
    a ``--seed`` flag and it is not set by the user, each run gets :func:`derive_seed`.
    """
    module = load_stage(stage)
    parser = stage_parser(module)
    actions = _actions(parser)
    axis_names = [k for k, _ in axes]
    if len(set(axis_names)) != len(axis_names):
        raise UserError(f"grid axis given twice: {axis_names}")
    for key in list(axis_names) + list(fixed):
        if actions and key not in actions:
            raise UserError(f"stage {stage} has no flag --{key}")
    if save_name is not None and "save_name" in actions and "save_name" not in fixed:
        fixed = {**fixed, "save_name": save_name}
    user_seed = "seed" in axis_names or "seed" in fixed or any(
        t == "--seed" or t.startswith("--seed=") for t in extra_args)
    auto_seed = "seed" in actions and not user_seed
    if user_seed and num_seeds > 1:
        raise UserError("--num_seeds > 1 with seeds given explicitly (seed: ...): use one or the other")
    n_seeds = num_seeds if auto_seed else 1

    runs: list[RunSpec] = []
    used_seeds: set[int] = set()
    keys_seen: dict[str, int] = {}
    outputs_seen: dict[tuple[Any, ...], int] = {}  # (save_dir, save_name, seed) -> run: one model each
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
                raise UserError(f"the grid holds the same run twice (runs {keys_seen[point]} and "
                                f"{len(runs)}: {shlex.join(tokens)}): check for repeated values")
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
                        f"runs {outputs_seen[out_key]} and {len(runs)} would write the same output (seed "
                        f"{identity['seed']}, save_name {parsed.get('save_name')}): with seeds given "
                        f"explicitly, run one sweep (its own --save_name) per value of the other axes")
                outputs_seen[out_key] = len(runs)
            run_key = _hash({"stage": stage, "args": identity})
            fill_seed = seed if seed is not None else (parsed or {}).get("seed")
            tokens = [_fill(t, fill_seed, seed_index) for t in tokens]
            if sweep_path is None:
                sweep_path = _default_sweep_dir(parsed)
            runs.append(RunSpec(
                index=len(runs), stage=stage, module=stage_module_name(stage), params=params,
                seed_index=seed_index, seed=seed, argv=tokens, run_key=run_key,
                run_dir=str(sweep_path / RUNS_SUBDIR / run_key), cwd=cwd, threads=threads))
    assert sweep_path is not None
    suffix = f"_{save_name}" if save_name else ""
    return SweepPlan(stage=stage, runs=runs, axes=axis_names, sweep_dir=sweep_path,
                     manifest=sweep_path / f"sweep_manifest{suffix}.csv")


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


# ----------------------------------------------------------------------------- one run


_LIVE: dict[int, subprocess.Popen] = {}
_LIVE_LOCK = threading.Lock()


def read_status(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """A run's ``status.json`` (None if missing or unreadable)."""
    p = Path(run_dir) / "status.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def is_finished(spec: RunSpec) -> bool:
    """True if this exact run (same stage, arguments and seed) finished successfully before."""
    st = read_status(spec.run_dir)
    return bool(st) and st.get("status") == "done" and st.get("run_key") == spec.run_key


THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def set_thread_env(env: dict[str, str], threads: int | None) -> None:
    """Set a run's OMP_NUM_THREADS and MKL_NUM_THREADS in ``env`` (in place).

    A value the user set wins, and if they set only one of the two, the other gets the same
    value: torch takes MKL_NUM_THREADS over OMP_NUM_THREADS, so ``OMP_NUM_THREADS=1`` alone
    with the sweep's default in MKL_NUM_THREADS would run every job with the default's
    threads (measured: two single-job sweeps side by side on 2 cores then ran 4 threads and
    took ~4x longer per epoch). Neither set: both get ``threads`` (if given).
    """
    given = [env[v] for v in THREAD_VARS if env.get(v)]
    value = given[0] if given else (str(threads) if threads else None)
    if value is None:
        return
    for var in THREAD_VARS:
        if not env.get(var):
            env[var] = value


def execute_run(spec: RunSpec) -> dict[str, Any]:
    """Run one run to completion as a subprocess; write and return its status.

    Used by the local pool and, pickled by submitit, inside a SLURM array task. Never
    raises for a failing stage: the failure is the returned (and recorded) status.
    """
    from filelock import FileLock, Timeout

    run_dir = Path(spec.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(run_dir / ".lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return {"status": "skipped", "run_key": spec.run_key, "note": "running in another sweep"}
    try:
        result_path = run_dir / "result.json"
        log_path = run_dir / "log.txt"
        with contextlib.suppress(FileNotFoundError):
            result_path.unlink()
        env = dict(os.environ)
        env[RESULT_ENV] = str(result_path)
        env.setdefault("PYTHONUNBUFFERED", "1")
        set_thread_env(env, spec.threads)
        cmd = spec.command
        start = time.time()
        returncode: int
        error = ""
        header_end = 0
        with log_path.open("w") as logf:
            logf.write(f"# {shlex.join(cmd)}\n# cwd {spec.cwd}  host {platform.node()}\n")
            logf.flush()
            header_end = logf.tell()
            try:
                proc = subprocess.Popen(cmd, cwd=spec.cwd, env=env, stdout=logf,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
            except OSError as err:
                returncode, error = -1, f"could not start: {err}"
            else:
                with _LIVE_LOCK:
                    _LIVE[proc.pid] = proc
                try:
                    returncode = proc.wait()
                finally:
                    with _LIVE_LOCK:
                        _LIVE.pop(proc.pid, None)
        wall = time.time() - start
        result: dict[str, Any] = {}
        if result_path.exists():
            try:
                result = json.loads(result_path.read_text())
            except ValueError:
                error = error or f"unreadable {result_path}"
        if returncode != 0 and not error:
            tail = _last_line(log_path, header_end)
            error = f"exit status {returncode}" + (f": {tail}" if tail else "")
        status = {
            "status": "done" if returncode == 0 else "failed",
            "run_key": spec.run_key, "returncode": returncode, "wall_time_s": round(wall, 3),
            "result": result, "error": error, "log": str(log_path), "host": platform.node(),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": shlex.join(cmd),
            "slurm_job_id": _slurm_job_id(),
        }
        write_json_atomic(run_dir / "status.json", status)
        return status
    finally:
        lock.release()


def _slurm_job_id() -> str:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID", "")


def _last_line(path: Path, start: int = 0) -> str:
    """The last non-empty line of a log after byte ``start`` (the error, usually), shortened."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(start, f.tell() - 4096))
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def terminate_live_runs() -> None:
    """Stop the subprocesses started by :func:`execute_run` in this process (Ctrl-C)."""
    with _LIVE_LOCK:
        procs = list(_LIVE.values())
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.time() + 10
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)


# ----------------------------------------------------------------------------- manifest


class Manifest:
    """The sweep's manifest CSV: one row per run, rewritten atomically on every change."""

    BASE = ["index", "run_key", "stage", "status", "rm_id", "seed_index", "seed"]
    TAIL = ["wall_time_s", "returncode", "error", "log", "slurm_job_id", "host", "finished", "command"]

    def __init__(self, path: Path, plan: SweepPlan) -> None:
        self.path = path
        self.plan = plan
        self._lock = threading.Lock()
        self.rows: dict[str, dict[str, Any]] = {}
        self.old_rows: list[dict[str, str]] = []
        # a grid over seeds (--grid seed ...) fills the seed column instead of repeating it
        self.columns = list(self.BASE) + [a for a in plan.axes if a not in self.BASE] + list(self.TAIL)
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
                "index": spec.index, "run_key": spec.run_key, "stage": spec.stage,
                "status": "pending", "seed_index": spec.seed_index,
                "seed": "" if spec.seed is None else spec.seed,
                **{k: _cell(v) for k, v in spec.params.items()},
                "log": str(Path(spec.run_dir) / "log.txt"), "command": shlex.join(spec.command),
            }

    def update(self, spec: RunSpec, status: Mapping[str, Any], shown: str | None = None,
               write: bool = True) -> None:
        """Record a run's status (``shown`` overrides the status word, e.g. 'skipped')."""
        result = status.get("result") or {}
        with self._lock:
            row = self.rows[spec.run_key]
            row.update({
                "status": shown or status.get("status", ""), "rm_id": result.get("rm_id", ""),
                "wall_time_s": status.get("wall_time_s", ""),
                "returncode": status.get("returncode", ""), "error": status.get("error", ""),
                "log": status.get("log", row["log"]),
                "slurm_job_id": status.get("slurm_job_id", "") or row.get("slurm_job_id", ""),
                "host": status.get("host", ""), "finished": status.get("finished", ""),
            })
            if write:
                self.write()

    def write(self) -> None:
        """Rewrite the whole file atomically (old sweeps' rows first, then this grid)."""
        import io

        from filelock import FileLock

        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        for row in self.old_rows:
            writer.writerow(row)
        for spec in self.plan.runs:
            writer.writerow(self.rows[spec.run_key])
        with FileLock(str(self.path) + ".lock", timeout=600):
            write_text_atomic(self.path, buf.getvalue())


def _cell(v: Any) -> Any:
    return " ".join(map(str, v)) if isinstance(v, (list, tuple)) else v


# ----------------------------------------------------------------------------- launchers


@dataclasses.dataclass
class SweepOutcome:
    """What happened to each run of a sweep."""

    statuses: dict[str, str]       # run_key -> done | failed | skipped | pending
    manifest: Path

    def count(self, status: str) -> int:
        return sum(1 for s in self.statuses.values() if s == status)

    @property
    def ok(self) -> bool:
        return self.count("failed") == 0 and self.count("pending") == 0


def _progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="run", file=sys.stderr, dynamic_ncols=True,
                disable=None)


def _record(manifest: Manifest, spec: RunSpec, status: Mapping[str, Any],
            statuses: dict[str, str]) -> None:
    word = status.get("status", "failed")
    manifest.update(spec, status)
    statuses[spec.run_key] = word
    rm = (status.get("result") or {}).get("rm_id")
    if word == "done":
        log.info("run %d done in %.1fs%s", spec.index, status.get("wall_time_s", 0.0),
                 f" (rm_id {rm})" if rm else "")
    elif word == "failed":
        log.warning("run %d failed: %s (log: %s)", spec.index, status.get("error", ""), status.get("log", ""))
    else:
        log.info("run %d %s: %s", spec.index, word, status.get("note", ""))


def start_sweep(plan: SweepPlan) -> tuple[Manifest, list[RunSpec], dict[str, str]]:
    """Write the manifest with finished runs marked skipped; return the runs still to do."""
    manifest = Manifest(plan.manifest, plan)
    statuses: dict[str, str] = {}
    todo: list[RunSpec] = []
    for spec in plan.runs:
        st = read_status(spec.run_dir)
        if st and st.get("status") == "done" and st.get("run_key") == spec.run_key:
            manifest.update(spec, st, shown="skipped", write=False)
            statuses[spec.run_key] = "skipped"
        else:
            statuses[spec.run_key] = "pending"
            todo.append(spec)
    plan.sweep_dir.mkdir(parents=True, exist_ok=True)
    manifest.write()
    return manifest, todo, statuses


def run_local(plan: SweepPlan, jobs: int,
              on_status: Callable[[RunSpec, Mapping[str, Any]], None] | None = None) -> SweepOutcome:
    """Run the sweep's unfinished runs on this machine, ``jobs`` at a time.

    A failed run is recorded and the others go on; Ctrl-C stops the running subprocesses
    (they stay ``pending`` in the manifest and run on the next start).
    """
    manifest, todo, statuses = start_sweep(plan)
    if todo:
        log.info("%d runs to do, %d already done; %d at a time", len(todo),
                 len(plan.runs) - len(todo), jobs)
    bar = _progress(len(todo), f"{plan.stage} sweep")
    restore = _sigterm_as_interrupt()
    pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="sweep")
    futures = {pool.submit(execute_run, spec): spec for spec in todo}
    try:
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            for fut in finished:
                spec = futures[fut]
                try:
                    status = fut.result()
                except Exception as err:  # an infrastructure error, not the stage's
                    status = {"status": "failed", "error": f"{type(err).__name__}: {err}",
                              "log": str(Path(spec.run_dir) / "log.txt")}
                _record(manifest, spec, status, statuses)
                fault_point("sweep_after_record")
                if on_status is not None:
                    on_status(spec, status)
                bar.update(1)
    except KeyboardInterrupt:
        for fut in futures:
            fut.cancel()
        terminate_live_runs()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        restore()
    return SweepOutcome(statuses=statuses, manifest=plan.manifest)


def _sigterm_as_interrupt() -> Callable[[], None]:
    """Treat SIGTERM (kill, a scheduler's stop) like Ctrl-C while a sweep runs here, so the
    runs' subprocesses are stopped too; returns the function restoring the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, old)


@dataclasses.dataclass
class SlurmOptions:
    """Resources of each task of the sweep's job array (submitit's names in brackets)."""

    partition: str | None = None   # slurm_partition
    gpus_per_job: int = 0          # gpus_per_node
    cpus_per_job: int = 1          # cpus_per_task
    mem_gb: float = 4.0            # mem_gb
    timeout_min: int = 60          # timeout_min
    max_parallel: int = 256        # slurm_array_parallelism
    job_name: str = "trex-sweep"
    poll_s: float = 5.0


def make_slurm_executor(folder: str | os.PathLike, opts: SlurmOptions) -> Any:
    """A submitit SLURM executor running tasks with this interpreter (``sys.executable``)."""
    import submitit

    if shutil.which("sbatch") is None:
        raise UserError("--launcher slurm: sbatch not found (no SLURM client on this machine); "
                        "use --launcher local, or scripts/start_local_slurm.sh for a test cluster")
    ex = submitit.SlurmExecutor(folder=str(folder), python=shlex.quote(sys.executable))
    params: dict[str, Any] = {
        "job_name": opts.job_name, "time": int(opts.timeout_min), "cpus_per_task": int(opts.cpus_per_job),
        "mem": f"{int(round(opts.mem_gb * 1024))}M", "array_parallelism": int(opts.max_parallel), "stderr_to_stdout": True,
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
    return sslurm._make_sbatch_string(command=executor._submitit_command_str, folder=executor.folder,
                                      **params)


def _squeue_alive(array_ids: Iterable[str]) -> set[str] | None:
    """Task ids ("123_4") still queued or running; None when squeue cannot answer."""
    ids = sorted(set(array_ids))
    if not ids:
        return set()
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-j", ",".join(ids)],
                             capture_output=True, text=True, timeout=60, check=False)
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
        raise UserError(f"sbatch refused the job array: {str(err).strip().splitlines()[-1]}") from None
    array_id = jobs[0].job_id.split("_")[0]
    log.info("submitted %d runs as SLURM job array %s (%s)", len(todo), array_id,
             opts.partition or "default partition")
    by_key = {}
    for spec, job in zip(todo, jobs):
        by_key[spec.run_key] = job
        manifest.rows[spec.run_key]["slurm_job_id"] = job.job_id
    manifest.write()

    bar = _progress(len(todo), f"{plan.stage} sweep (slurm {array_id})")
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
                _record(manifest, spec, st, statuses)
                del waiting[key]
                bar.update(1)
    except KeyboardInterrupt:
        log.warning("stopped waiting; the job array %s keeps running (scancel %s to stop it). "
                    "Start the sweep again later: finished runs are skipped.", array_id, array_id)
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
    tail = _last_line(Path(job.paths.stdout))
    return {**base, "status": "failed",
            "error": f"SLURM task {job.job_id} ended without a result (time limit, memory, node?): {tail}"}


# ----------------------------------------------------------------------------- reporting


def summary_table(plan: SweepPlan, outcome: SweepOutcome) -> str:
    """A short plain-text summary: counts, then one line per failed run with its log."""
    lines = [f"sweep of {len(plan.runs)} {plan.stage} runs: {outcome.count('done')} done, "
             f"{outcome.count('skipped')} skipped (done before), {outcome.count('failed')} failed"
             + (f", {outcome.count('pending')} not run" if outcome.count("pending") else ""),
             f"manifest: {outcome.manifest}"]
    failed = [s for s in plan.runs if outcome.statuses.get(s.run_key) == "failed"]
    for spec in failed:
        params = " ".join(f"{k}={_cell(v)}" for k, v in spec.params.items())
        lines.append(f"  FAILED run {spec.index} ({params} seed={spec.seed}): "
                     f"{Path(spec.run_dir) / 'log.txt'}")
    return "\n".join(lines)


def dry_run_table(plan: SweepPlan) -> str:
    """The runs of a plan, one per line, marked 'skip' if already done."""
    lines = [f"# {len(plan.runs)} runs of {plan.stage}; manifest {plan.manifest}"]
    for spec in plan.runs:
        mark = "skip" if is_finished(spec) else "run "
        lines.append(f"{spec.index:4d} {mark} {shlex.join(['python', '-m', spec.module, *spec.argv])}")
    return "\n".join(lines)


def default_jobs() -> int:
    """What the cores allow: one run per core available to this process."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def load_sweep_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """The sweep file: run_experiments flags and stage flags (a list = a grid axis)."""
    return load_yaml_config(path)
