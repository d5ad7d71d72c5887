"""Files written atomically (temp file + rename) and CSV indexes appended under a lock,
so an interrupted run never leaves a half file that a later stage would read."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trex.common.errors import UserError

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


def read_csv_checked(
    path: str | os.PathLike, what: str, columns: Sequence[str] = (), text: Sequence[str] = ()
):
    """``pandas.read_csv`` of a file the user pointed at; UserError (naming the file and
    ``what`` it should be) if it is missing, not a CSV, or lacks any of ``columns``. Columns
    named in ``text`` stay strings (a column of only ``true`` would otherwise read as bool)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise UserError(f"no {what} at {path}")
    try:
        df = pd.read_csv(path, dtype={c: str for c in text})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not a valid CSV ({type(err).__name__})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise UserError(f"{path} is not a {what} (missing {', '.join(missing)})")
    return df


def write_json_atomic(path: str | os.PathLike, data: Mapping[str, Any]) -> None:
    """Write a JSON object to ``path`` atomically (sorted keys, indented)."""
    write_text_atomic(
        path, json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n"
    )


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


def append_csv_rows(
    path: str | os.PathLike,
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    unique: str | None = None,
) -> int:
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
            rows = [
                r for r in rows if not (str(r.get(unique)) in seen or seen.add(str(r.get(unique))))
            ]
        if not rows:
            return 0
        if header is None:
            header = (
                list(columns)
                if columns is not None
                else list(dict.fromkeys(k for r in rows for k in r))
            )
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
