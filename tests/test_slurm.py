"""SLURM launcher: the sbatch file submitit would submit, and a real sweep on a real cluster.

The end-to-end test needs a reachable SLURM cluster (``scripts/start_local_slurm.sh`` starts a
single-node one as root). Without one it is skipped, except under CI (``CI=true``), where a
missing cluster is a failure: CI must show that the test ran.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import TINY_TRAIN_REWARD, make_tiny_demos

from trex import run_experiments, sweeps

STAGE = textwrap.dedent("""
    import argparse, os, socket, sys
    from trex.common.errors import UserError
    from trex.common.cli import add_config_flag, cli_entry, parse_args
    from trex.common.files import append_csv_rows
    from trex.sweeps.stages import write_stage_result

    def build_parser():
        p = argparse.ArgumentParser(prog="slurm_stage")
        add_config_flag(p)
        p.add_argument("--env_name", default="starpilot")
        p.add_argument("--num_dems", type=int, default=12)
        p.add_argument("--seed", type=int, default=None)
        p.add_argument("--save_dir", default="reward_models")
        return p

    @cli_entry
    def main(argv=None):
        a = parse_args(build_parser(), argv)
        if a.num_dems > 50:
            raise UserError(f"--num_dems {a.num_dems}: only 50 demos")
        rm_id = f"{str(a.seed)[:3]}_{str(a.seed)[3:]}"
        append_csv_rows(os.path.join(a.save_dir, "rm_infos.csv"), [{
            "rm_id": rm_id, "num_dems": a.num_dems, "python": sys.executable,
            "slurm_job": os.environ.get("SLURM_ARRAY_JOB_ID", ""),
            "threads": os.environ.get("OMP_NUM_THREADS", "")}])
        write_stage_result(rm_id=rm_id)

    if __name__ == "__main__":
        sys.exit(main())
""")


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def slurm_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    mod_dir = tmp_path / "mods"
    mod_dir.mkdir()
    (mod_dir / "slurm_trex_stage.py").write_text(STAGE)
    monkeypatch.syspath_prepend(str(mod_dir))
    # sbatch exports the submitting environment to the job: the stage is importable there too
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(mod_dir), os.environ.get("PYTHONPATH")]))
    )
    monkeypatch.chdir(tmp_path)
    return "slurm_trex_stage"


def test_sbatch_script_carries_requested_resources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # submitit refuses to build a SLURM executor without srun/sbatch: fake them if absent
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for tool in ("srun", "sbatch"):
        if shutil.which(tool) is None:
            (fake_bin / tool).write_text("#!/bin/sh\nexit 1\n")
            (fake_bin / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    args = run_experiments.build_parser().parse_args(
        [
            "--launcher",
            "slurm",
            "--partition",
            "gpu_long",
            "--gpus_per_job",
            "2",
            "--cpus_per_job",
            "6",
            "--mem_gb",
            "7.5",
            "--timeout_min",
            "90",
            "--max_parallel",
            "3",
            "--stage",
            "train_reward",
        ]
    )
    ex = sweeps.make_slurm_executor(tmp_path / "slurm", run_experiments.slurm_options(args))
    text = sweeps.sbatch_script(ex, num_tasks=10)
    flags = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)$", text, flags=re.M))
    assert flags["partition"] == "gpu_long"
    assert flags["gpus-per-node"] == "2"
    assert flags["cpus-per-task"] == "6"
    assert flags["mem"] == "7680M"
    assert flags["time"] == "90"
    assert flags["array"] == "0-9%3"  # one job array of 10 tasks, 3 at a time
    assert flags["job-name"] == "trex-train_reward"
    # the tasks run with this interpreter (the repo's venv)
    assert f"{sys.executable} -u -m submitit.core._submit" in text


def test_no_sbatch_is_a_clear_error(
    slurm_stage: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    assert (
        run_experiments.main(
            ["--stage", slurm_stage, "--num_dems", "3", "--num_seeds", "1", "--launcher", "slurm"]
        )
        == 2
    )
    assert "sbatch not found" in capsys.readouterr().err


def reachable_partition() -> str | None:
    """A partition of a running cluster with a node taking jobs, else None."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return None
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%P %a %T"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    for line in out.stdout.splitlines():
        parts = line.split()
        if (
            len(parts) == 3
            and parts[1] == "up"
            and parts[2].rstrip("*~#") in {"idle", "mixed", "allocated", "completing"}
        ):
            return parts[0].rstrip("*")
    return None


@pytest.fixture
def partition() -> str:
    part = reachable_partition()
    if part is None:
        reason = (
            "no SLURM cluster reachable (sinfo/sbatch missing, or no partition with a node up); "
            "as root, scripts/start_local_slurm.sh starts a single-node one"
        )
        if os.environ.get("CI", "").lower() in {"true", "1"}:
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    return part


def test_real_slurm_sweep_end_to_end(partition: str, tmp_path: Path, monkeypatch, capsys) -> None:
    """train_reward on tiny demos through --launcher slurm: one job array, the venv's python."""
    demo_csv = make_tiny_demos(tmp_path / "demos")
    monkeypatch.chdir(tmp_path)
    argv = [
        "--env_name",
        "starpilot",
        "--num_dems",
        "10",
        "99",
        "12",
        "--num_seeds",
        "1",
        "--demo_csv",
        str(demo_csv),
        *TINY_TRAIN_REWARD,
        "--launcher",
        "slurm",
        "--partition",
        partition,
        "--cpus_per_job",
        "1",
        "--mem_gb",
        "2",
        "--timeout_min",
        "10",
        "--poll_s",
        "1",
    ]
    assert run_experiments.main(argv) == 1  # the num_dems=99 run fails, the others finish
    manifest = read_csv(tmp_path / "reward_models" / "sweep_manifest.csv")
    by_n = {r["num_dems"]: r for r in manifest}
    assert by_n["10"]["status"] == by_n["12"]["status"] == "done"
    assert by_n["99"]["status"] == "failed" and "99 training demos requested" in by_n["99"]["error"]
    # one job array for the sweep: task ids <array>_<i>
    assert len({r["slurm_job_id"].split("_")[0] for r in manifest}) == 1
    assert all(re.fullmatch(r"\d+_\d+", r["slurm_job_id"]) for r in manifest)
    rows = read_csv(tmp_path / "reward_models" / "rm_infos.csv")
    assert sorted(r["num_dems"] for r in rows) == ["10", "12"]
    assert sorted(r["rm_id"] for r in rows) == sorted([by_n["10"]["rm_id"], by_n["12"]["rm_id"]]), (
        "train_reward must report its rm_id: trex.sweeps.stages.write_stage_result(rm_id=...)"
    )
    for n in ("10", "12"):  # ran as a SLURM task, with the repo's python, 1 thread per CPU asked
        status = json.loads((Path(by_n[n]["log"]).parent / "status.json").read_text())
        assert status["command"].startswith(f"{sys.executable} -m trex.train_reward")
        assert status["slurm_job_id"] == by_n[n]["slurm_job_id"]
    submitted = list(
        (tmp_path / "reward_models" / "sweep_runs" / "_slurm").glob("*/*_submission.sh")
    )
    assert len(submitted) == 1
    script = submitted[0].read_text()
    assert f"--partition={partition}" in script and "--array=0-2%" in script
    assert f"{sys.executable} -u -m submitit" in script
    assert "2 done" in capsys.readouterr().out

    # started again: the two done runs are skipped, only the failed one is resubmitted
    assert run_experiments.main(argv) == 1
    manifest = read_csv(tmp_path / "reward_models" / "sweep_manifest.csv")
    assert [r["status"] for r in manifest] == ["skipped", "failed", "skipped"]
    assert len(read_csv(tmp_path / "reward_models" / "rm_infos.csv")) == 2


def test_real_slurm_generic_stage(slurm_stage: str, partition: str, tmp_path: Path) -> None:
    """Any stage goes through the same machinery; the task sees SLURM's environment."""
    argv = [
        "--stage",
        slurm_stage,
        "--num_dems",
        "3",
        "--num_seeds",
        "2",
        "--launcher",
        "slurm",
        "--partition",
        partition,
        "--cpus_per_job",
        "1",
        "--mem_gb",
        "1",
        "--poll_s",
        "1",
    ]
    assert run_experiments.main(argv) == 0
    manifest = read_csv(tmp_path / "reward_models" / "sweep_manifest.csv")
    rows = read_csv(tmp_path / "reward_models" / "rm_infos.csv")
    array = manifest[0]["slurm_job_id"].split("_")[0]
    assert {r["slurm_job"] for r in rows} == {array}
    assert {r["python"] for r in rows} == {sys.executable} and {r["threads"] for r in rows} == {"1"}
    assert sorted(r["rm_id"] for r in rows) == sorted(r["rm_id"] for r in manifest)
