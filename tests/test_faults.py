"""Fault injection: runs killed for real (SIGKILL / SIGINT / SIGTERM to a child process) at
named points (``$TREX_FAULT``, trex.common.runs.fault_point), then retried: nothing lost,
nothing doubled, no row without its file and no file without its row. The killed runs are
child processes; the retries, which nothing kills, run the stage's ``main`` in this process
(the same code ``python -m`` runs, without a new interpreter's imports)."""

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


def _ctrl_c_as_in_a_terminal() -> None:
    """Runs in the child before exec. A process started in the background by a
    non-interactive shell (``cmd &``, as some CI runners do) inherits SIGINT ignored, and
    Python then installs no KeyboardInterrupt handler: give the stage a terminal's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_stage(
    module: str,
    argv: list[str],
    fault: str | None = None,
    sig: str = "KILL",
    timeout: int = 300,
    in_process: bool | None = None,
) -> subprocess.CompletedProcess:
    """Run ``python -m <module> argv`` in its own process group, dying at ``fault``; without
    a fault (unless ``in_process=False``), ``<module>.main(argv)`` in this process from the
    repository root, its stdout and stderr captured the same way."""
    if in_process is None:
        in_process = fault is None
    if in_process:
        assert fault is None, "a fault kills its process: run it in a child"
        from tests.conftest import run_main

        return run_main(module, argv, ROOT)
    env = {k: v for k, v in os.environ.items() if k not in ("TREX_FAULT", "TREX_FAULT_SIGNAL")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    if fault:
        env.update(TREX_FAULT=fault, TREX_FAULT_SIGNAL=sig)
    return subprocess.run(
        [sys.executable, "-m", module, *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=ROOT,
        start_new_session=True,
        preexec_fn=_ctrl_c_as_in_a_terminal,
    )


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
    argv = [
        "--policy",
        "random",
        "--env_name",
        "coinrun",
        "--num_dems",
        "4",
        "--num_envs",
        "2",
        "--max_ep_len",
        "15",
        "--log_dir",
        str(tmp_path / "d"),
        "--seed",
        "5",
        "--progress",
        "false",
    ]
    first = run_stage("trex.gen_demos", argv, fault="demo_between_file_and_row", sig=sig)
    expected = -signal.SIGKILL if sig == "KILL" else None
    if expected is not None:
        assert first.returncode == expected, first.stderr[-2000:]
        # the kill left a demo file without its index row
        files = [
            p for p in (tmp_path / "d" / "demo_files").glob("*.npz") if not p.name.startswith(".")
        ]
        rows = (
            pd.read_csv(tmp_path / "d" / "demo_infos.csv")
            if (tmp_path / "d" / "demo_infos.csv").exists()
            else pd.DataFrame(columns=["demo_id"])
        )
        assert len(files) == len(rows) + 1
    again = run_stage("trex.gen_demos", argv)
    assert again.returncode == 0, again.stderr[-2000:]
    index = _demo_store_consistent(tmp_path / "d")
    assert len(index) >= 4


EIGHT_WRITERS = textwrap.dedent("""
    import sys
    from trex.common.files import append_csv_rows
    path, writer = sys.argv[1], sys.argv[2]
    for i in range(60):
        # every writer also tries to add the shared rows: each must land exactly once
        rows = [{"rm_id": f"{writer}_{i}", "writer": writer},
                {"rm_id": f"shared_{i}", "writer": writer}]
        append_csv_rows(path, rows, columns=["rm_id", "writer"], unique="rm_id")
""")


def test_eight_processes_append_to_one_csv_exactly_once(tmp_path):
    path = tmp_path / "rm_infos.csv"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", EIGHT_WRITERS, str(path), f"w{k}"],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for k in range(8)
    ]
    assert [p.wait(timeout=240) for p in procs] == [0] * 8
    with path.open(newline="") as f:
        ids = [r["rm_id"] for r in csv.DictReader(f)]
    expected = {f"w{k}_{i}" for k in range(8) for i in range(60)} | {
        f"shared_{i}" for i in range(60)
    }
    assert len(ids) == len(expected) and set(ids) == expected


def test_reader_keeps_the_last_of_repeated_rm_ids(tmp_path, caplog):
    from trex.reward.registry import read_rm_infos

    path = tmp_path / "rm_infos.csv"
    path.write_text(
        "rm_id,env_name,mode,pearson\n123_4567,starpilot,easy,0.1\n"
        "123_4567,starpilot,easy,0.2\n234_5678,starpilot,easy,0.3\n"
    )
    df = read_rm_infos(path)
    assert list(df["rm_id"]) == ["123_4567", "234_5678"] and list(df["pearson"]) == [0.2, 0.3]
    assert "repeated rm_id" in caplog.text


def test_gen_demos_retry_finishes_the_killed_run_exactly(tmp_path):
    argv = [
        "--policy",
        "random",
        "--env_name",
        "coinrun",
        "--num_dems",
        "5",
        "--num_envs",
        "2",
        "--max_ep_len",
        "15",
        "--log_dir",
        str(tmp_path / "d"),
        "--seed",
        "9",
        "--progress",
        "false",
    ]
    first = run_stage("trex.gen_demos", argv, fault="demo_between_file_and_row")
    assert first.returncode == -signal.SIGKILL
    for _ in range(2):  # the retry completes the run; a third call finds nothing to do
        again = run_stage("trex.gen_demos", argv)
        assert again.returncode == 0, again.stderr[-2000:]
        index = _demo_store_consistent(tmp_path / "d")
        assert len(index) == 5 and index["run_key"].nunique() == 1
    assert "nothing left to do" in again.stderr


# ------------------------------------------------------------------------ train_reward and sweeps


def _tiny_reward_args(tmp: Path, csv: Path) -> list[str]:
    from tests.test_train_reward import TINY

    return [
        *TINY,
        "--demo_csv",
        str(csv),
        "--save_dir",
        str(tmp / "rm"),
        "--log_dir",
        str(tmp / "logs"),
        "--num_bootstrap",
        "20",
        "--window",
        "5",
    ]


def _rm_store_consistent(tmp: Path) -> pd.DataFrame:
    """Exactly one row per model file and one model file per row."""
    rows = pd.read_csv(tmp / "rm" / "rm_infos.csv", dtype={"rm_id": str})
    models = {p.stem for p in (tmp / "rm" / "model_files").glob("*.safetensors")}
    assert not rows["rm_id"].duplicated().any()
    assert set(rows["rm_id"]) == models
    return rows


@pytest.mark.parametrize("sig", ["KILL", "INT", "TERM"])
def test_train_reward_killed_between_model_and_row_then_retried(tmp_path, sig):
    from tests.test_protocol import make_pool_store

    csv = make_pool_store(tmp_path / "d")
    argv = [*_tiny_reward_args(tmp_path, csv), "--seed", "1234567"]
    first = run_stage("trex.train_reward", argv, fault="reward_between_model_and_row", sig=sig)
    assert first.returncode == {"KILL": -9, "INT": 130, "TERM": 143}[sig], first.stderr[-2000:]
    assert not (tmp_path / "rm" / "rm_infos.csv").exists()
    if sig == "KILL":  # the model was written, its row not: not a finished run
        assert (tmp_path / "rm" / "model_files" / "123_4567.safetensors").exists()
    for _ in range(2):  # the retry trains it; the next call finds it complete
        again = run_stage("trex.train_reward", argv)
        assert again.returncode == 0, again.stderr[-2000:]
        assert len(_rm_store_consistent(tmp_path)) == 1
    assert "already complete" in again.stderr


def test_sweep_killed_with_its_runs_then_restarted_finishes_each_run_once(tmp_path):
    from tests.test_protocol import make_pool_store

    csv = make_pool_store(tmp_path / "d")
    argv = [
        "--num_dems",
        "8",
        "--num_seeds",
        "3",
        "--env_name",
        "starpilot",
        "--pass_args",
        " ".join(_tiny_reward_args(tmp_path, csv)[2:]),
    ]
    # 1. every run killed between its model and its row: the sweep records 3 failures
    first = run_stage(
        "trex.run_experiments", [*argv, "--jobs", "2"], fault="reward_between_model_and_row"
    )
    assert first.returncode == 1, first.stderr[-2000:]
    assert len(list((tmp_path / "rm" / "model_files").glob("*.safetensors"))) == 3
    assert not (tmp_path / "rm" / "rm_infos.csv").exists()
    # 2. the sweep itself killed (SIGKILL) right after its first finished run
    # (one run at a time, so no run is left running when the sweep dies)
    second = run_stage("trex.run_experiments", [*argv, "--jobs", "1"], fault="sweep_after_record")
    assert second.returncode == -signal.SIGKILL
    assert len(pd.read_csv(tmp_path / "rm" / "rm_infos.csv")) == 1
    # 3. restarted: the rest run, each exactly once; the manifest agrees with the files
    third = run_stage("trex.run_experiments", [*argv, "--jobs", "2"])
    assert third.returncode == 0, third.stderr[-2000:]
    rows = _rm_store_consistent(tmp_path)
    manifest = pd.read_csv(tmp_path / "rm" / "sweep_manifest.csv", dtype={"rm_id": str})
    # "skipped": finished by an earlier start of the sweep (its status.json says done)
    assert len(rows) == 3 and manifest["status"].isin(["done", "skipped"]).all()
    assert (manifest["status"] == "done").sum() == 2
    assert set(manifest["rm_id"]) == set(rows["rm_id"])
    # 4. once more: nothing to do, nothing doubled
    fourth = run_stage("trex.run_experiments", [*argv, "--jobs", "2"])
    assert fourth.returncode == 0 and len(_rm_store_consistent(tmp_path)) == 3


# ----------------------------------------------------------------------------- train_policy


@pytest.mark.parametrize("sig", ["KILL", "INT", "TERM"])
def test_train_policy_killed_while_checkpointing_then_resumed(tmp_path, sig):
    from tests.conftest import TINY_PPO_FLAGS
    from trex.rl.checkpoints import load_policy, read_manifest

    tmpdir = tmp_path / "tmp"  # the run's TMPDIR: nothing may be left in it
    tmpdir.mkdir()
    base = ["--env_name", "coinrun", *TINY_PPO_FLAGS, "--num_levels", "10", "--seed", "1"]
    run = tmp_path / "coinrun" / "easy"
    argv = [*base, "--timesteps_per_proc", "128", "--log_dir", str(tmp_path)]
    # killed after writing its 2nd checkpoint file, before listing it in checkpoints.csv
    env_tmp = {"TMPDIR": str(tmpdir)}
    os.environ.update(env_tmp)
    try:
        first = run_stage(
            "trex.train_policy", argv, fault="checkpoint_between_file_and_row@2", sig=sig
        )
        assert first.returncode != 0 or sig in ("INT", "TERM"), first.stderr[-2000:]
        manifest = read_manifest(run)
        on_disk = {p.name for p in run.glob("checkpoint_*.zip")}
        assert set(manifest["file"]) <= on_disk
        if sig == "KILL":  # the 2nd checkpoint's file is there, its manifest row is not
            assert len(on_disk) == len(manifest) + 1
        again = run_stage(
            "trex.train_policy",
            [
                *base,
                "--timesteps_per_proc",
                "128",
                "--load_path",
                str(run),
                "--log_dir",
                str(tmp_path),
            ],
            in_process=False,  # its TMPDIR is read once per process
        )
        assert again.returncode == 0, again.stderr[-2000:]
    finally:
        os.environ.pop("TMPDIR")
    manifest = read_manifest(run)
    files = {p.name for p in run.glob("checkpoint_*.zip")}
    assert set(manifest["file"]) == files and not manifest["file"].duplicated().any()
    assert manifest["timesteps"].max() == 128
    for f in files:  # every checkpoint loads
        load_policy(run / f, device="cpu")
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no temporary files
    # no /tmp/SB3-* litter (torch's own compile cache directory, made by Adam.step in torch
    # 2.13 whatever the caller does, is torch's, not ours)
    assert not [p for p in tmpdir.iterdir() if not p.name.startswith("torchinductor")]


# ----------------------------------------------------------------------------- test_policy


def test_test_policy_killed_between_episodes_and_summary_then_retried(tmp_path):
    out = tmp_path / "results" / "t.csv"
    argv = [
        "--load_path",
        "random",
        "--env_name",
        "coinrun",
        "--num_runs",
        "3",
        "--num_envs",
        "2",
        "--max_steps",
        "20",
        "--out_csv",
        str(out),
    ]
    first = run_stage("trex.test_policy", argv, fault="test_policy_between_episodes_and_summary")
    assert first.returncode == -signal.SIGKILL
    assert not out.exists() and len(pd.read_csv(tmp_path / "results" / "t_episodes.csv")) == 6
    for _ in range(2):  # the retry redoes it (dropping the orphan episodes); then nothing to do
        again = run_stage("trex.test_policy", argv)
        assert again.returncode == 0, again.stderr[-2000:]
        summary = pd.read_csv(out)
        episodes = pd.read_csv(tmp_path / "results" / "t_episodes.csv")
        assert len(summary) == 2 and len(episodes) == 6
        assert set(episodes["run_key"]) == set(summary["run_key"])
    assert "already complete" in again.stderr


def test_test_policy_refuses_a_results_csv_of_an_older_version(tmp_path, capsys):
    from trex.test_policy import main

    out = tmp_path / "old.csv"
    out.write_text("time,load_path,level_set,return_mean\nx,random,test,1.0\n")
    assert (
        main(
            [
                "--load_path",
                "random",
                "--env_name",
                "coinrun",
                "--num_runs",
                "1",
                "--out_csv",
                str(out),
            ]
        )
        == 2
    )
    assert "older version" in capsys.readouterr().err
