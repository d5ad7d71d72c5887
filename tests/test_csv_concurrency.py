"""Concurrent appends to one results CSV (rm_infos.csv) never interleave or lose a row."""

from __future__ import annotations

import csv
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from trex.common.errors import UserError
from trex.common.files import append_csv_rows

COLUMNS = ["rm_id", "writer", "i", "note"]

HAMMER = textwrap.dedent("""
    import sys
    from trex.common.files import append_csv_rows
    path, writer, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    columns = ["rm_id", "writer", "i", "note"]
    # long rows (several KB): a torn write would show as a broken row
    note = ("x" * 50 + ",\\"quoted\\" " + writer) * 40
    for i in range(n):
        rows = [{"rm_id": f"{writer}_{i}_{k}", "writer": writer, "i": i, "note": note}
                for k in range(2)]
        append_csv_rows(path, rows, columns=columns)
""")


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def test_two_processes_hammering_one_csv(tmp_path: Path) -> None:
    path = tmp_path / "reward_models" / "rm_infos.csv"
    n = 150
    procs = [
        subprocess.Popen([sys.executable, "-c", HAMMER, str(path), w, str(n)]) for w in ("A", "B")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]

    header, rows = _read(path)
    assert header == COLUMNS  # exactly one header, first
    ids = [r["rm_id"] for r in rows]
    expected = {f"{w}_{i}_{k}" for w in "AB" for i in range(n) for k in range(2)}
    assert len(ids) == len(expected) and set(ids) == expected  # none missing, none twice
    for r in rows:  # every row whole: all fields, none spilled into another row
        assert set(r) == set(COLUMNS) and None not in r
        assert r["note"].endswith(r["writer"]) and r["rm_id"].startswith(r["writer"])
    # a writer's own rows stay in its order (each append is one locked write)
    for w in "AB":
        mine = [int(r["i"]) for r in rows if r["writer"] == w]
        assert mine == sorted(mine)
    assert path.read_text().count("rm_id,writer,i,note") == 1


def test_rows_with_unknown_columns_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "rm_infos.csv"
    append_csv_rows(path, [{"rm_id": "1", "val_acc": 0.5}])
    with pytest.raises(UserError, match="columns the file does not"):
        append_csv_rows(path, [{"rm_id": "2", "surprise": 1}])
    header, rows = _read(path)
    assert header == ["rm_id", "val_acc"] and [r["rm_id"] for r in rows] == ["1"]
