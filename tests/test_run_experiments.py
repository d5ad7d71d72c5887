"""run_experiments: grids, deterministic seeds, resume, failures, manifest, bad input."""

from __future__ import annotations

import csv
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import TINY_TRAIN_REWARD, make_tiny_demos

from trex import run_experiments, sweeps

# A test-only stage: same contract as train_reward (flags, rm_id from the seed, one row
# appended to <save_dir>/rm_infos[_<save_name>].csv, result reported via write_stage_result).
FAKE_STAGE = textwrap.dedent("""
    import argparse, os, sys
    from trex.common.errors import UserError
    from trex.common.cli import add_config_flag, cli_entry, parse_args
    from trex.common.files import append_csv_rows
    from trex.sweeps.stages import write_stage_result

    def build_parser():
        p = argparse.ArgumentParser(prog="fake")
        add_config_flag(p)
        p.add_argument("--env_name", default="starpilot")
        p.add_argument("--distribution_mode", default="easy")
        p.add_argument("--num_dems", type=int, default=12)
        p.add_argument("--max_return", type=float, default=1.0)
        p.add_argument("--sequential", type=int, default=0)
        p.add_argument("--weight_decay", type=float, default=0.01)
        p.add_argument("--max_num_epochs", type=int, default=50)
        p.add_argument("--seed", type=int, default=None)
        p.add_argument("--demo_csv", nargs="+", default=["demos/demo_infos.csv"])
        p.add_argument("--save_dir", default="reward_models")
        p.add_argument("--save_name", default=None)
        p.add_argument("--output_abs", action="store_true")
        return p

    @cli_entry
    def main(argv=None):
        a = parse_args(build_parser(), argv)
        if a.num_dems > 50:
            raise UserError(f"--num_dems {a.num_dems}: only 50 demos in {a.demo_csv[0]}")
        rm_id = f"{str(a.seed)[:3]}_{str(a.seed)[3:]}"
        name = "rm_infos" + (f"_{a.save_name}" if a.save_name else "") + ".csv"
        append_csv_rows(os.path.join(a.save_dir, name), [{
            "rm_id": rm_id, "env_name": a.env_name, "mode": a.distribution_mode,
            "num_dems": a.num_dems, "weight_decay": a.weight_decay, "output_abs": a.output_abs,
            "threads": os.environ.get("OMP_NUM_THREADS", ""),
            "mkl_threads": os.environ.get("MKL_NUM_THREADS", "")}])
        write_stage_result(rm_id=rm_id, val_acc=0.5)

    if __name__ == "__main__":
        sys.exit(main())
""")


@pytest.fixture
def fake_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Make the test stage importable here and in the sweep's subprocesses; cwd = tmp_path."""
    mod_dir = tmp_path / "mods"
    mod_dir.mkdir()
    (mod_dir / "fake_trex_stage.py").write_text(FAKE_STAGE)
    monkeypatch.syspath_prepend(str(mod_dir))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(mod_dir), os.environ.get("PYTHONPATH")]))
    )
    monkeypatch.chdir(tmp_path)
    return "fake_trex_stage"


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def sweep(stage: str, *args: str) -> int:
    return run_experiments.main(["--stage", stage, *args])


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def tiny_demos(tmp_path_factory) -> Path:
    return make_tiny_demos(tmp_path_factory.mktemp("demos"))


RESULT_HINT = (
    "train_reward must report its rm_id to the sweep: "
    "trex.sweeps.stages.write_stage_result(rm_id=args.rm_id, ...) at its end"
)


def test_train_reward_grid_runs_once_then_skips(
    tiny_demos: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    args = [
        "--env_name",
        "starpilot",
        "--num_dems",
        "10",
        "12",
        "--weight_decay",
        "0.0",
        "0.01",
        "--num_seeds",
        "1",
        "--jobs",
        "2",
        "--demo_csv",
        str(tiny_demos),
        *TINY_TRAIN_REWARD,
    ]
    assert run_experiments.main(args) == 0
    rm_rows = read_csv(tmp_path / "reward_models" / "rm_infos.csv")
    manifest = read_csv(tmp_path / "reward_models" / "sweep_manifest.csv")
    assert len(rm_rows) == 4 and len(manifest) == 4
    assert {(r["num_dems"], r["weight_decay"]) for r in manifest} == {
        (n, w) for n in ("10", "12") for w in ("0.0", "0.01")
    }
    assert all(r["status"] == "done" for r in manifest)
    assert all(r["rm_id"] for r in manifest), RESULT_HINT
    assert sorted(r["rm_id"] for r in manifest) == sorted(r["rm_id"] for r in rm_rows)
    for r in (
        manifest
    ):  # the original project's rm_id is the original project's digits, split after the third
        assert r["rm_id"] == f"{r['seed'][:3]}_{r['seed'][3:]}"
        assert Path(r["log"]).is_file() and float(r["wall_time_s"]) > 0
        assert r["command"].startswith(sys.executable)
        assert (tmp_path / "reward_models" / "model_files" / f"{r['rm_id']}.safetensors").is_file()
    out = capsys.readouterr().out
    assert "4 done" in out and "0 failed" in out

    # started again: all 4 skipped, nothing appended
    assert run_experiments.main(args) == 0
    manifest2 = read_csv(tmp_path / "reward_models" / "sweep_manifest.csv")
    assert [r["status"] for r in manifest2] == ["skipped"] * 4
    assert [r["rm_id"] for r in manifest2] == [r["rm_id"] for r in manifest]
    assert len(read_csv(tmp_path / "reward_models" / "rm_infos.csv")) == 4
    assert "4 skipped" in capsys.readouterr().out


def test_train_reward_failed_run_is_recorded_others_finish(
    tiny_demos: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    args = [
        "--env_name",
        "starpilot",
        "--num_dems",
        "99",
        "10",
        "--num_seeds",
        "1",
        "--jobs",
        "2",
        "--save_name",
        "exp",
        "--demo_csv",
        str(tiny_demos),
        *TINY_TRAIN_REWARD,
    ]
    assert run_experiments.main(args) == 1
    manifest = read_csv(tmp_path / "reward_models" / "sweep_manifest_exp.csv")
    by_n = {r["num_dems"]: r for r in manifest}
    assert by_n["99"]["status"] == "failed" and by_n["99"]["rm_id"] == ""
    assert "99 training demos requested" in by_n["99"]["error"]
    assert "99 training demos requested" in Path(by_n["99"]["log"]).read_text()
    assert by_n["10"]["status"] == "done"
    assert [r["num_dems"] for r in read_csv(tmp_path / "reward_models" / "rm_infos_exp.csv")] == [
        "10"
    ]
    out = capsys.readouterr().out
    assert "1 done" in out and "1 failed" in out and by_n["99"]["log"] in out


def test_fake_stage_failure_then_retry(fake_stage: str, tmp_path: Path) -> None:
    assert sweep(fake_stage, "--num_dems", "3", "99", "5", "--num_seeds", "1", "--jobs", "2") == 1
    manifest = read_csv(tmp_path / "reward_models" / "sweep_manifest.csv")
    assert [r["status"] for r in manifest] == ["done", "failed", "done"]
    # the next start retries only the failed run
    assert sweep(fake_stage, "--num_dems", "3", "99", "5", "--num_seeds", "1") == 1
    manifest = read_csv(tmp_path / "reward_models" / "sweep_manifest.csv")
    assert [r["status"] for r in manifest] == ["skipped", "failed", "skipped"]
    assert len(read_csv(tmp_path / "reward_models" / "rm_infos.csv")) == 2


def test_grid_over_seeds_fills_the_seed_column(fake_stage: str, tmp_path: Path) -> None:
    assert (
        sweep(fake_stage, "--num_dems", "3", "--grid", "seed", "1234567", "2345678", "--jobs", "1")
        == 0
    )
    with (tmp_path / "reward_models" / "sweep_manifest.csv").open() as f:
        header = f.readline().strip().split(",")
    assert header.count("seed") == 1
    manifest = read_csv(tmp_path / "reward_models" / "sweep_manifest.csv")
    assert [r["seed"] for r in manifest] == ["1234567", "2345678"]
    assert [r["rm_id"] for r in manifest] == ["123_4567", "234_5678"]


def test_threads_per_run(fake_stage: str, tmp_path: Path) -> None:
    assert sweep(fake_stage, "--num_dems", "3", "4", "--num_seeds", "1", "--jobs", "1") == 0
    rows = read_csv(tmp_path / "reward_models" / "rm_infos.csv")
    if "OMP_NUM_THREADS" not in os.environ:  # one run at a time: it gets every core
        assert {r["threads"] for r in rows} == {str(sweeps.default_jobs())}


def test_user_thread_setting_reaches_both_thread_variables(
    fake_stage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # torch takes MKL_NUM_THREADS over OMP_NUM_THREADS: the user's OMP_NUM_THREADS must not
    # be overridden by the sweep's default (cores / jobs) in MKL_NUM_THREADS; a value other
    # than that default, so the test fails with the old behaviour on any machine
    user = str(sweeps.default_jobs() + 1)
    monkeypatch.setenv("OMP_NUM_THREADS", user)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    assert sweep(fake_stage, "--num_dems", "3", "--num_seeds", "1", "--jobs", "1") == 0
    rows = read_csv(tmp_path / "reward_models" / "rm_infos.csv")
    assert [(r["threads"], r["mkl_threads"]) for r in rows] == [(user, user)]


def test_set_thread_env() -> None:
    env: dict[str, str] = {}
    sweeps.set_thread_env(env, 2)
    assert env == {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    env = {"MKL_NUM_THREADS": "3"}
    sweeps.set_thread_env(env, 2)
    assert env == {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3"}
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "4"}  # both given: the user's choice
    sweeps.set_thread_env(env, 2)
    assert env == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "4"}
    env = {}
    sweeps.set_thread_env(env, None)
    assert env == {}


def test_grown_grid_keeps_seeds_and_skips_done_runs(fake_stage: str, tmp_path: Path) -> None:
    assert sweep(fake_stage, "--num_dems", "3", "--num_seeds", "2", "--jobs", "1") == 0
    first = read_csv(tmp_path / "reward_models" / "sweep_manifest.csv")
    assert sweep(fake_stage, "--num_dems", "3", "4", "--num_seeds", "3", "--jobs", "2") == 0
    grown = read_csv(tmp_path / "reward_models" / "sweep_manifest.csv")
    assert len(grown) == 6
    old = {(r["num_dems"], r["seed_index"]): r["seed"] for r in first}
    for r in grown:
        key = (r["num_dems"], r["seed_index"])
        if key in old:
            assert r["seed"] == old[key] and r["status"] == "skipped"
        else:
            assert r["status"] == "done"
    assert len(read_csv(tmp_path / "reward_models" / "rm_infos.csv")) == 6


def test_sweep_yaml_grid_and_pass_args(fake_stage: str, tmp_path: Path) -> None:
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(
        textwrap.dedent("""
        jobs: 2
        num_seeds: 1
        save_name: yml
        env_name: [coinrun, bigfish]
        weight_decay: [0.0, 0.01]
        demo_csv: [a.csv, b.csv]        # a list flag: one value, not an axis
        max_num_epochs: 2
        output_abs: true
    """)
    )
    assert sweep(fake_stage, "-c", str(cfg), "--pass_args", "--sequential 0") == 0
    manifest = read_csv(tmp_path / "reward_models" / "sweep_manifest_yml.csv")
    assert len(manifest) == 4
    assert {(r["env_name"], r["weight_decay"]) for r in manifest} == {
        (e, w) for e in ("coinrun", "bigfish") for w in ("0.0", "0.01")
    }
    assert all(
        "--demo_csv a.csv b.csv" in r["command"]
        and "--output_abs" in r["command"]
        and "--max_num_epochs=2" in r["command"]
        and "--sequential 0" in r["command"]
        for r in manifest
    )
    rows = read_csv(tmp_path / "reward_models" / "rm_infos_yml.csv")
    assert len(rows) == 4 and {r["output_abs"] for r in rows} == {"True"}


def test_dry_run_prints_and_writes_nothing(fake_stage: str, tmp_path: Path, capsys) -> None:
    assert sweep(fake_stage, "--num_dems", "3", "4", "--num_seeds", "2", "--dry_run") == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("# 4 runs")
    assert len(out) == 5 and all("--seed=" in line and " run " in line for line in out[1:])
    assert not (tmp_path / "reward_models").exists()


# ----------------------------------------------------------------------------- seeds & grid


def test_seeds_are_deterministic_distinct_and_in_range(fake_stage: str) -> None:
    axes = [("env_name", ["starpilot", "fruitbot", "coinrun"]), ("num_dems", [12, 25, 50])]
    a = sweeps.expand_grid(fake_stage, axes, {}, num_seeds=5)
    b = sweeps.expand_grid(fake_stage, axes, {}, num_seeds=5)
    seeds = [r.seed for r in a.runs]
    assert seeds == [r.seed for r in b.runs] and len(set(seeds)) == 45
    assert all(sweeps.SEED_MIN <= s < sweeps.SEED_MAX for s in seeds)
    assert [r.run_key for r in a.runs] == [r.run_key for r in b.runs]
    assert [r.seed_index for r in a.runs[:9]] == [0] * 9  # seed index outermost
    fresh = sweeps.expand_grid(fake_stage, axes, {}, num_seeds=5, base_seed=1)
    assert not set(seeds) & {r.seed for r in fresh.runs}
    # equal values written differently are the same run ("12" on the command line, 12 in YAML)
    c = sweeps.expand_grid(fake_stage, [("num_dems", ["12"])], {}, num_seeds=1)
    d = sweeps.expand_grid(fake_stage, [("num_dems", [12])], {}, num_seeds=1)
    assert c.runs[0].run_key == d.runs[0].run_key and c.runs[0].seed == d.runs[0].seed


def test_seeds_do_not_depend_on_where_the_files_are(fake_stage: str) -> None:
    """The same study from another folder gets the same seeds (and other run keys); folders
    that are a grid axis still tell runs apart."""
    axes = [("num_dems", [12, 50])]
    here = sweeps.expand_grid(
        fake_stage,
        axes,
        {"demo_csv": ["study/demos/demo_infos.csv"], "save_dir": "study/rm"},
        num_seeds=2,
    )
    there = sweeps.expand_grid(
        fake_stage,
        axes,
        {"demo_csv": ["/work/runs/study/demos/demo_infos.csv"], "save_dir": "/work/runs/study/rm"},
        num_seeds=2,
    )
    assert [r.seed for r in here.runs] == [r.seed for r in there.runs]
    assert not {r.run_key for r in here.runs} & {r.run_key for r in there.runs}
    other_settings = sweeps.expand_grid(fake_stage, axes, {"max_num_epochs": 5}, num_seeds=2)
    assert not {r.seed for r in here.runs} & {r.seed for r in other_settings.runs}
    by_folder = sweeps.expand_grid(fake_stage, [("save_dir", ["a", "b"])], {}, num_seeds=1)
    assert by_folder.runs[0].seed != by_folder.runs[1].seed


def test_explicit_seeds(fake_stage: str) -> None:
    plan = sweeps.expand_grid(fake_stage, [("seed", [1234567, 7654321])], {})
    assert [r.seed for r in plan.runs] == [None, None]
    assert [r.argv for r in plan.runs] == [["--seed=1234567"], ["--seed=7654321"]]


def test_write_stage_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(sweeps.RESULT_ENV, raising=False)
    assert sweeps.write_stage_result(rm_id="123_4567") is None
    target = tmp_path / "r" / "result.json"
    monkeypatch.setenv(sweeps.RESULT_ENV, str(target))
    assert sweeps.write_stage_result(rm_id="123_4567", val_acc=0.75) == target
    assert json.loads(target.read_text()) == {"rm_id": "123_4567", "val_acc": 0.75}


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "args, message",
    [
        (["--num_dems", "3", "--no_such_flag", "1"], "unrecognized arguments: --no_such_flag"),
        (["--num_dems", "three"], "invalid int value"),
        (["--stage", "no_such_stage_xyz"], "no module"),
        (["--jobs", "0"], "positive integer"),
        (["--launcher", "cloud"], "invalid choice"),
        (["--seed", "5", "--num_seeds", "3"], "--num_seeds"),
        (["stray"], "unexpected argument"),
        (["-c", "missing.yaml"], "config file not found"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    fake_stage: str, tmp_path: Path, capsys, args, message
) -> None:
    argv = args if "--stage" in args else ["--stage", fake_stage, *args]
    assert run_experiments.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and message in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert not (tmp_path / "reward_models").exists()


def test_bad_sweep_yaml(fake_stage: str, tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("env_name: [a, b]\nnot_a_flag: [1, 2]\n")
    assert sweep(fake_stage, "-c", str(cfg)) == 2
    assert "no flag --not_a_flag" in capsys.readouterr().err
    cfg.write_text("jobs: [1, 2]\n")
    assert sweep(fake_stage, "-c", str(cfg)) == 2
    assert "jobs takes one value" in capsys.readouterr().err
    cfg.write_text("env_name: []\n")
    assert sweep(fake_stage, "-c", str(cfg)) == 2
    assert "empty list" in capsys.readouterr().err


def test_same_run_twice_in_grid(fake_stage: str, capsys) -> None:
    assert sweep(fake_stage, "--max_return", "1", "1.0", "--dry_run") == 2
    assert "same run twice" in capsys.readouterr().err


def test_explicit_seeds_across_another_axis_are_refused(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """train_reward names its model by seed: one save_name cannot hold a seed twice."""
    monkeypatch.chdir(tmp_path)
    base = [
        "--env_name",
        "starpilot",
        "--num_dems",
        "50",
        "--grid",
        "seed",
        "1",
        "2",
        "--save_name",
        "pool",
    ]
    assert run_experiments.main([*base, "--grid", "num_levels", "10", "50", "--dry_run"]) == 2
    assert "would write the same output (seed 1, save_name pool)" in capsys.readouterr().err
    assert run_experiments.main([*base, "--dry_run"]) == 0  # one run per seed: fine
    assert (
        run_experiments.main(
            ["--env_name", "starpilot", "--num_dems", "12", "50", "--num_seeds", "2", "--dry_run"]
        )
        == 0
    )  # derived seeds differ per run
    assert not (tmp_path / "reward_models").exists()


def test_train_policy_sweep_plan(tmp_path: Path, monkeypatch, capsys) -> None:
    """--stage train_policy goes through the same machinery (flags checked by its parser)."""
    monkeypatch.chdir(tmp_path)
    assert (
        run_experiments.main(
            [
                "--stage",
                "train_policy",
                "--env_name",
                "coinrun",
                "--grid",
                "rm_id",
                "123_4567",
                "234_5678",
                "--num_seeds",
                "2",
                "--log_name",
                "rm_{seed_index}_{seed}",
                "--timesteps_per_proc",
                "1000",
                "--dry_run",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.strip().splitlines()
    assert (
        out[0]
        == f"# 4 runs of train_policy; manifest {tmp_path / 'experts' / 'sweep_manifest.csv'}"
    )
    seeds = [line.split("--seed=")[1] for line in out[1:]]
    assert len(set(seeds)) == 4
    for line, seed in zip(out[1:], seeds):
        assert (
            "-m trex.train_policy" in line
            and "--rm_id=" in line
            and "--timesteps_per_proc 1000" in line
        )
        assert "--log_name rm_" in line and f"_{seed} " in line  # placeholders filled per run
    assert run_experiments.main(["--stage", "train_policy", "--num_dems", "3", "--dry_run"]) == 2
    assert "has no flag --num_dems" in capsys.readouterr().err
