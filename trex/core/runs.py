"""Run bookkeeping shared by every stage: CLI errors, config files, atomic writes,
locked CSV appends, seeding and logging.

A stage module calls :func:`parse_args` and wraps its body with :func:`cli_entry`, so a
user mistake (:class:`UserError`) ends in one line on stderr and exit status 2, never a
traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import io
import json
import logging
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("trex")

USER_ERROR_EXIT = 2


class UserError(Exception):
    """A mistake in the user's input (flag, file, id): reported as one line, exit status 2."""


# ----------------------------------------------------------------------------- fault injection

#: environment variable naming the fault point(s) at which a run kills itself (tests only)
FAULT_ENV = "TREX_FAULT"
#: environment variable with the signal to die of at a fault point: KILL (default) or INT
FAULT_SIGNAL_ENV = "TREX_FAULT_SIGNAL"


_FAULT_HITS: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Die here if ``$TREX_FAULT`` names this point (comma-separated names allowed;
    ``name@N`` dies at the N-th time the point is reached, default the first).

    The fault-injection tests stop a run at the exact step where a real kill (time limit,
    preemption, Ctrl-C) would hurt most, instead of hoping a sleep lands there. With
    ``$TREX_FAULT_SIGNAL=INT`` the process gets SIGINT (Ctrl-C), ``TERM`` SIGTERM (a time
    limit), otherwise SIGKILL.
    """
    points = os.environ.get(FAULT_ENV)
    if not points:
        return
    _FAULT_HITS[name] = _FAULT_HITS.get(name, 0) + 1
    wanted = {p.partition("@")[0]: int(p.partition("@")[2] or 1) for p in points.split(",")}
    if wanted.get(name) != _FAULT_HITS[name]:
        return
    import signal

    sig = {"INT": signal.SIGINT, "TERM": signal.SIGTERM}.get(os.environ.get(FAULT_SIGNAL_ENV, "KILL").upper(),
                                                            signal.SIGKILL)
    log.warning("fault injection: %s at %s", sig.name, name)
    os.kill(os.getpid(), sig)
    time.sleep(1)  # SIGINT / SIGTERM are raised in the main thread at once


# ----------------------------------------------------------------------------- CLI plumbing


def cli_entry(main: Callable[..., int | None]) -> Callable[..., int]:
    """Decorate a stage's ``main(argv=None)``: UserError and Ctrl-C become clean exits.

    Returns the exit status (0 on success) instead of raising, so ``sys.exit(main())``
    works for scripts and console entry points alike.
    """

    @functools.wraps(main)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        try:
            with sigterm_as_interrupt():
                status = main(argv)
        except UserError as err:
            logging.shutdown()
            sys.stderr.write(f"error: {err}\n")
            sys.stderr.flush()
            return USER_ERROR_EXIT
        except Terminated:
            sys.stderr.write("terminated\n")
            return 143
        except KeyboardInterrupt:
            sys.stderr.write("interrupted\n")
            return 130
        return 0 if status is None else int(status)

    return wrapper


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a SLURM time limit or preemption, ``docker stop``), raised like
    Ctrl-C so that every clean-up path for an interrupt runs (train_policy saves a last
    checkpoint)."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (elsewhere,
    or where SIGTERM is not at its default, nothing changes). Note: a shell without job
    control starts ``cmd &`` with SIGINT ignored, so there only SIGTERM stops a run cleanly."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def raise_terminated(signum: int, frame: Any) -> None:
        raise Terminated

    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``-c/--config FILE.yaml``: a YAML mapping of flag names to values."""
    parser.add_argument(
        "-c", "--config", default=None, metavar="FILE.yaml",
        help="YAML file setting any flag (dest names, e.g. env_name: starpilot); "
        "flags given on the command line win",
    )


def load_yaml_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping of flag values; a clear UserError for any problem."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"config file {p} is not valid YAML: {str(err).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {p} must hold a mapping of flag names to values")
    if isinstance(data.get("args"), dict) and "versions" in data:
        # a run's config.json: repeat that run with its recorded arguments
        data = {k: v for k, v in data["args"].items() if k != "config"}
    return {str(k).lstrip("-").replace("-", "_"): v for k, v in data.items()}


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv`` with values from ``-c/--config`` as defaults (command line wins).

    argparse's own usage errors exit with status 2 and a one-line message, as for any
    user mistake. Unknown keys in the config file are a UserError naming them.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("-c", "--config", default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config:
        values = load_yaml_config(known.config)
        dests = {a.dest for a in parser._actions}
        unknown = sorted(set(values) - dests)
        if unknown:
            raise UserError(f"config file {known.config}: unknown flag(s) {', '.join(unknown)}")
        for action in parser._actions:
            if action.dest in values:
                action.required = False
        parser.set_defaults(**values)
    return parser.parse_args(argv)


def positive_int(text: str) -> int:
    """argparse type: an integer > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a float > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def str2bool(text: str | bool) -> bool:
    """argparse type for the seed's ``--flag True/False`` style booleans."""
    if isinstance(text, bool):
        return text
    low = text.strip().lower()
    if low in {"1", "true", "t", "yes", "y"}:
        return True
    if low in {"0", "false", "f", "no", "n"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def check_positive(**values: float | int | None) -> None:
    """Raise UserError naming the first value that is set and not > 0 (for config files)."""
    for name, value in values.items():
        if value is not None and not value > 0:
            raise UserError(f"--{name} must be positive, got {value}")


# ----------------------------------------------------------------------------- logging


def setup_logging(log_file: str | os.PathLike | None = None, level: int = logging.INFO) -> None:
    """Log to stderr, and to ``log_file`` too when given (the run's ``log.txt``)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_trex", False):
            root.removeHandler(handler)
            handler.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(fmt)
    stream._trex = True  # type: ignore[attr-defined]
    root.addHandler(stream)
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_file)
        fh.setFormatter(fmt)
        fh._trex = True  # type: ignore[attr-defined]
        root.addHandler(fh)
    root.setLevel(level)


# ----------------------------------------------------------------------------- files


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` only on success.

    An exception (or Ctrl-C) removes the temporary file, so no half-written file is ever
    visible under the final name. ``suffix`` keeps an extension for writers that need one.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    sfx = final.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".tmp{sfx}", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600 files
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_csv_checked(path: str | os.PathLike, what: str, columns: Sequence[str] = ()):
    """``pandas.read_csv`` of a file the user pointed at; UserError (naming the file and
    ``what`` it should be) if it is missing, not a CSV, or lacks any of ``columns``."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise UserError(f"no {what} at {path}")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not a valid CSV ({type(err).__name__})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise UserError(f"{path} is not a {what} (missing {', '.join(missing)})")
    return df


def write_json_atomic(path: str | os.PathLike, data: Mapping[str, Any]) -> None:
    """Write a JSON object to ``path`` atomically (sorted keys, indented)."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)


def _lock_for(path: Path):
    from filelock import FileLock

    return FileLock(str(path) + ".lock", timeout=600)


def append_csv_rows(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]],
                    columns: Sequence[str] | None = None, unique: str | None = None) -> int:
    """Append whole rows to a CSV under a file lock, writing the header if the file is new;
    returns the number of rows written.

    Safe with many writers at once (processes on one machine or on a shared file system):
    the lock serialises appends and each row is written in one ``write`` call. The header
    of an existing file decides the column order; a row's missing keys are left empty;
    keys not in an existing header are an error (the file would become ragged). With
    ``unique`` (a column name), rows whose value there is already in the file are not
    written again (checked under the lock: a retried run never doubles its row).
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with _lock_for(p):
        header: list[str] | None = None
        if p.exists() and p.stat().st_size > 0:
            with p.open(newline="") as f:
                reader = csv.reader(f)
                header = next(reader, None)
                if unique is not None and header is not None and unique in header:
                    col = header.index(unique)
                    taken = {r[col] for r in reader if len(r) > col}
                    rows = [r for r in rows if str(_csv_value(r.get(unique))) not in taken]
        if unique is not None:
            seen: set[str] = set()
            rows = [r for r in rows if not (str(r.get(unique)) in seen or seen.add(str(r.get(unique))))]
        if not rows:
            return 0
        if header is None:
            header = list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))
            write_header = True
        else:
            write_header = False
        extra = sorted({k for r in rows for k in r} - set(header))
        if extra:
            raise UserError(f"{p}: rows have columns the file does not ({', '.join(extra)})")
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
        if write_header:
            writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(v) for k, v in row.items()})
        with p.open("a", newline="") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
    return len(rows)


def drop_csv_rows(path: str | os.PathLike, column: str, values: set[str]) -> int:
    """Remove the rows whose ``column`` is one of ``values`` (what a killed run left, or a row
    ``--overwrite`` replaces): the file is rewritten atomically under its lock. Returns how
    many rows went; a missing file or column removes nothing."""
    p = Path(path)
    if not p.is_file() or not values:
        return 0
    with _lock_for(p):
        with p.open(newline="") as f:
            rows = list(csv.reader(f))
        if not rows or column not in rows[0]:
            return 0
        col = rows[0].index(column)
        kept = [rows[0]] + [r for r in rows[1:] if len(r) <= col or r[col] not in values]
        if len(kept) == len(rows):
            return 0
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(kept)
        write_text_atomic(p, buf.getvalue())
        return len(rows) - len(kept)


def csv_column_values(path: str | os.PathLike, column: str) -> set[str] | None:
    """The values of ``column`` in a CSV (empty set for a missing or empty file; None when the
    file exists but has no such column: written by an older version)."""
    p = Path(path)
    if not p.is_file() or p.stat().st_size == 0:
        return set()
    with p.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        if column not in header:
            return None
        col = header.index(column)
        return {r[col] for r in reader if len(r) > col}


def _csv_value(v: Any) -> Any:
    if isinstance(v, float) and not np.isfinite(v):
        return "nan" if np.isnan(v) else v
    return v


# ----------------------------------------------------------------------------- seeds & provenance


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (the environments take the seed separately)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def package_versions() -> dict[str, str]:
    """Versions of the packages a run's results depend on."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("trex-procgen", "torch", "stable-baselines3", "numpy", "gymnasium",
                 "procgen", "procgen-mirror", "safetensors"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def git_commit() -> str | None:
    """The git commit of the toolkit's checkout, or None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def run_config(args: argparse.Namespace | Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """Everything needed to repeat a run: all arguments, versions, git commit, time, host."""
    values = dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args)
    return {
        "args": values,
        **extra,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "argv": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
    }


def write_run_config(path: str | os.PathLike, args: argparse.Namespace | Mapping[str, Any],
                     **extra: Any) -> dict[str, Any]:
    """Write ``config.json`` for a run (atomically) and return what was written.

    ``config.json['args']`` can be given back with ``-c`` (JSON is YAML) to repeat the run.
    """
    cfg = run_config(args, **extra)
    write_json_atomic(path, cfg)
    return cfg
