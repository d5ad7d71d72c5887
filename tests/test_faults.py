"""Fault injection: runs killed for real (SIGKILL / SIGINT to a child process) at named points
(``$TREX_FAULT``, trex.core.runs.fault_point), then retried: nothing lost, nothing doubled,
no row without its file and no file without its row."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_stage(module: str, argv: list[str], fault: str | None = None, sig: str = "KILL",
              timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python -m <module> argv`` in its own process group, dying at ``fault``."""
    env = {k: v for k, v in os.environ.items() if k not in ("TREX_FAULT", "TREX_FAULT_SIGNAL")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    if fault:
        env.update(TREX_FAULT=fault, TREX_FAULT_SIGNAL=sig)
    return subprocess.run([sys.executable, "-m", module, *argv], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT, start_new_session=True)


def _demo_store_consistent(log_dir: Path) -> pd.DataFrame:
    """Every index row has its file, every file its row, no id twice, no temp files left."""
    index = pd.read_csv(log_dir / "demo_infos.csv", dtype={"demo_id": str})
    files = {p.stem for p in (log_dir / "demo_files").glob("*.npz") if not p.name.startswith(".")}
    assert not index["demo_id"].duplicated().any()
    assert set(index["demo_id"]) == files
    assert not [p for p in (log_dir / "demo_files").iterdir() if p.name.startswith(".")]
    return index


@pytest.mark.parametrize("sig", ["KILL", "INT"])
def test_gen_demos_killed_between_file_and_row_then_retried(tmp_path, sig):
    argv = ["--policy", "random", "--env_name", "coinrun", "--num_dems", "4", "--num_envs", "2",
            "--max_ep_len", "15", "--log_dir", str(tmp_path / "d"), "--seed", "5", "--progress", "false"]
    first = run_stage("trex.gen_demos", argv, fault="demo_between_file_and_row", sig=sig)
    expected = -signal.SIGKILL if sig == "KILL" else None
    if expected is not None:
        assert first.returncode == expected, first.stderr[-2000:]
        # the kill left a demo file without its index row
        files = [p for p in (tmp_path / "d" / "demo_files").glob("*.npz") if not p.name.startswith(".")]
        rows = pd.read_csv(tmp_path / "d" / "demo_infos.csv") if (tmp_path / "d" / "demo_infos.csv").exists() \
            else pd.DataFrame(columns=["demo_id"])
        assert len(files) == len(rows) + 1
    again = run_stage("trex.gen_demos", argv)
    assert again.returncode == 0, again.stderr[-2000:]
    index = _demo_store_consistent(tmp_path / "d")
    assert len(index) >= 4


EIGHT_WRITERS = textwrap.dedent("""
    import sys
    from trex.core.runs import append_csv_rows
    path, writer = sys.argv[1], sys.argv[2]
    for i in range(60):
        # every writer also tries to add the shared rows: each must land exactly once
        rows = [{"rm_id": f"{writer}_{i}", "writer": writer}, {"rm_id": f"shared_{i}", "writer": writer}]
        append_csv_rows(path, rows, columns=["rm_id", "writer"], unique="rm_id")
""")


def test_eight_processes_append_to_one_csv_exactly_once(tmp_path):
    path = tmp_path / "rm_infos.csv"
    procs = [subprocess.Popen([sys.executable, "-c", EIGHT_WRITERS, str(path), f"w{k}"],
                              env={**os.environ, "PYTHONPATH": str(ROOT)}) for k in range(8)]
    assert [p.wait(timeout=240) for p in procs] == [0] * 8
    with path.open(newline="") as f:
        ids = [r["rm_id"] for r in csv.DictReader(f)]
    expected = {f"w{k}_{i}" for k in range(8) for i in range(60)} | {f"shared_{i}" for i in range(60)}
    assert len(ids) == len(expected) and set(ids) == expected


def test_reader_keeps_the_last_of_repeated_rm_ids(tmp_path, caplog):
    from trex.core.reward_model import read_rm_infos

    path = tmp_path / "rm_infos.csv"
    path.write_text("rm_id,env_name,mode,pearson\n123_4567,starpilot,easy,0.1\n"
                    "123_4567,starpilot,easy,0.2\n234_5678,starpilot,easy,0.3\n")
    df = read_rm_infos(path)
    assert list(df["rm_id"]) == ["123_4567", "234_5678"] and list(df["pearson"]) == [0.2, 0.3]
    assert "repeated rm_id" in caplog.text


def test_gen_demos_retry_finishes_the_killed_run_exactly(tmp_path):
    argv = ["--policy", "random", "--env_name", "coinrun", "--num_dems", "5", "--num_envs", "2",
            "--max_ep_len", "15", "--log_dir", str(tmp_path / "d"), "--seed", "9", "--progress", "false"]
    first = run_stage("trex.gen_demos", argv, fault="demo_between_file_and_row")
    assert first.returncode == -signal.SIGKILL
    for _ in range(2):  # the retry completes the run; a third call finds nothing to do
        again = run_stage("trex.gen_demos", argv)
        assert again.returncode == 0, again.stderr[-2000:]
        index = _demo_store_consistent(tmp_path / "d")
        assert len(index) == 5 and index["run_key"].nunique() == 1
    assert "nothing left to do" in again.stderr
