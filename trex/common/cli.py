"""Command-line plumbing shared by every stage: the one-line `error:` for user mistakes,
SIGTERM as Ctrl-C, ``-c/--config FILE.yaml``, argument types and logging setup."""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from trex.common.errors import USER_ERROR_EXIT, UserError

log = logging.getLogger(__name__)

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

    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
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
        "-c",
        "--config",
        default=None,
        metavar="FILE.yaml",
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


def nonnegative_float(text: str) -> float:
    """argparse type: a float >= 0 (not nan)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def str2bool(text: str | bool) -> bool:
    """argparse type for the original project's ``--flag True/False`` style booleans."""
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
