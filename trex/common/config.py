"""One definition per flag: a stage's options are the fields of one dataclass.

Each field is declared with :func:`flag` (its default and help text, optionally its argparse
type, choices, nargs, metavar and group); :func:`config_parser` generates the argparse parser
from the fields (``--<field name>``, so the original project's flag names are the field
names), and :func:`parse_config` parses a command line (with ``-c/--config FILE.yaml`` or a
run's ``config.json`` as defaults, see :func:`trex.common.cli.parse_args`) into the dataclass
and runs its :meth:`Config.check`, which raises :class:`~trex.common.errors.UserError` for
bad values. The same object is what the library takes, so a notebook builds it directly::

    cfg = TrainRewardConfig(env_name="starpilot", num_dems=12)
    cfg.check()
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from trex.common.cli import add_config_flag, parse_args, str2bool
from trex.common.errors import UserError

C = TypeVar("C", bound="Config")

#: argparse options a field may carry in its metadata
_ARGPARSE_KEYS = ("type", "choices", "nargs", "metavar", "action")


def flag(
    default: Any = dataclasses.MISSING,
    *,
    help: str | None,
    type: Callable[[str], Any] | None = None,
    choices: Sequence[Any] | None = None,
    nargs: str | int | None = None,
    metavar: str | None = None,
    action: str | None = None,
    group: str | None = None,
    required: bool = False,
    positional: bool = False,
) -> Any:
    """A config field that is also a command-line flag ``--<name>``.

    Args:
        default: the default value (a list default is copied per instance); omit it together
            with ``required=True`` for a flag that must be given.
        help: the ``--help`` text (None: listed without one).
        type: the argparse type (default: from the annotation: int, float, str; a bool field
            with default False and no ``type`` is a ``store_true`` switch, else
            ``true/false``).
        choices, nargs, metavar, action: as in :meth:`argparse.ArgumentParser.add_argument`
            (``nargs`` defaults to ``"+"`` for list fields).
        group: the heading the flag is listed under in ``--help``.
        required: the flag must be given (on the command line or in ``-c FILE``).
        positional: a positional argument ``<name>`` instead of ``--<name>`` (required
            unless it has a default and ``nargs="?"``).
    """
    meta = {
        "help": help,
        "group": group,
        "required": required,
        "type": type,
        "choices": choices,
        "nargs": nargs,
        "metavar": metavar,
        "action": action,
        "positional": positional,
    }
    if isinstance(default, list):
        value = list(default)
        return dataclasses.field(default_factory=lambda: list(value), metadata=meta)
    if default is dataclasses.MISSING and not (required or positional):
        raise TypeError("flag() needs a default unless required=True")
    return dataclasses.field(
        default=None if default is dataclasses.MISSING else default, metadata=meta
    )


@dataclasses.dataclass
class Config:
    """Base of the stage configs: a dataclass whose fields are all :func:`flag` fields."""

    def check(self) -> None:
        """Validate the values together; raise UserError with a one-line message. Subclasses
        extend it (call ``super().check()``)."""

    def to_dict(self) -> dict[str, Any]:
        """The values as a plain mapping (what ``config.json`` records as ``args``)."""
        return dataclasses.asdict(self)

    def replace(self: C, **changes: Any) -> C:
        """A copy with some values changed, checked again."""
        new = dataclasses.replace(self, **changes)
        new.check()
        return new

    def check_flags(self) -> None:
        """UserError unless every value is one its flag accepts on the command line: a
        required flag is set, a value is among the flag's ``choices`` and passes its argparse
        type (``positive_int``, ``float``, ...; each element of a list). A config built in
        Python, or from ``-c FILE.yaml`` (whose values argparse does not convert), is held to
        the same rules as the command line. Subclasses call it from :meth:`check`."""
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            meta, value = field.metadata, getattr(self, field.name)
            if "help" not in meta:
                continue
            if value is None:
                if meta.get("positional"):
                    raise UserError(f"{field.name} is required")
                if meta.get("required"):
                    raise UserError(f"--{field.name} is required")
                continue
            convert = _value_type(field, hints[field.name])
            for v in value if isinstance(value, (list, tuple)) else [value]:
                if convert is not None:
                    try:
                        convert(v if isinstance(v, str) else str(v))
                    except argparse.ArgumentTypeError as err:
                        raise UserError(f"--{field.name}: {err}") from None
                    except (TypeError, ValueError):
                        name = getattr(convert, "__name__", "")
                        raise UserError(f"--{field.name}: invalid {name} value: {v!r}") from None
                choices = meta.get("choices")
                if choices is not None and v not in choices:
                    raise UserError(
                        f"--{field.name} must be one of {', '.join(map(str, choices))}, got {v!r}"
                    )


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(the non-None type of an annotation, whether it is a list)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0]) if len(args) == 1 else (str, False)
    if origin in (list, Sequence, tuple):
        args = typing.get_args(annotation)
        return (args[0] if args else str), True
    return annotation, False


def _value_type(field: dataclasses.Field, annotation: Any) -> Callable[[str], Any] | None:
    """The converter a field's command-line text goes through (None for a switch)."""
    if field.metadata.get("type") is not None:
        return field.metadata["type"]
    if field.metadata.get("action") is not None:
        return None
    base, _ = _base_type(annotation)
    if base is bool:
        return None if field.default is False else str2bool
    return base if base in (int, float, str) else None


def config_fields(cls: type[Config]) -> list[str]:
    """The flag names of a config class, in order (``--<name>``; a positional ``<name>``)."""
    return [f.name for f in dataclasses.fields(cls) if "help" in f.metadata]


def config_parser(
    cls: type[Config], *, prog: str | None = None, description: str | None = None
) -> argparse.ArgumentParser:
    """The argparse parser of a config class: ``-c/--config`` and one ``--<name>`` per field."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_config_flag(parser)
    hints = typing.get_type_hints(cls)
    groups: dict[str | None, Any] = {None: parser}
    for field in dataclasses.fields(cls):
        meta = field.metadata
        if "help" not in meta:
            raise TypeError(f"{cls.__name__}.{field.name} is not declared with flag()")
        base, is_list = _base_type(hints[field.name])
        kwargs: dict[str, Any] = {k: meta[k] for k in _ARGPARSE_KEYS if meta.get(k) is not None}
        if "action" not in kwargs:
            if base is bool and field.default is False and "type" not in kwargs:
                kwargs["action"] = "store_true"
            else:
                kwargs.setdefault("type", str2bool if base is bool else base)
                if is_list:
                    kwargs.setdefault("nargs", "+")
        if field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = field.default
        positional = meta.get("positional", False)
        if meta.get("required"):
            if not positional:
                kwargs["required"] = True
        elif not positional or kwargs.get("nargs") == "?":
            kwargs["default"] = default
        group = meta.get("group")
        if group not in groups:
            groups[group] = parser.add_argument_group(group)
        name = field.name if positional else f"--{field.name}"
        groups[group].add_argument(name, help=meta["help"], **kwargs)
    return parser


def config_from_namespace(cls: type[C], ns: argparse.Namespace | dict[str, Any]) -> C:
    """Build and check a config from parsed arguments (extra keys such as ``config`` dropped)."""
    values = vars(ns) if isinstance(ns, argparse.Namespace) else dict(ns)
    names = {f.name for f in dataclasses.fields(cls)}
    cfg = cls(**{k: v for k, v in values.items() if k in names})
    cfg.check()
    return cfg


def parse_config(
    cls: type[C], argv: Sequence[str] | None, parser: argparse.ArgumentParser | None = None
) -> C:
    """Parse a command line into a checked config (UserError on bad values)."""
    parser = parser if parser is not None else config_parser(cls)
    return config_from_namespace(cls, parse_args(parser, argv))


def require(condition: bool, message: str) -> None:
    """Raise UserError(message) unless ``condition``: the one-liner of :meth:`Config.check`."""
    if not condition:
        raise UserError(message)
