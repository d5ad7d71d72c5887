"""One definition per flag for the demo and reward stages (gen_demos, train_reward,
eval_reward, plot_correlations, plot_reward_predictions, visualize_demo): each parser is
generated from the stage's config dataclass, its checks live in the config's check(), and the
library entry points do what the stages do."""

from __future__ import annotations

import dataclasses
import importlib
import math
import re

import numpy as np
import pandas as pd
import pytest

from tests.test_train_reward import TINY, make_store, tiny_args
from trex.common.config import config_fields, parse_config
from trex.common.errors import UserError
from trex.demos.config import GenDemosConfig
from trex.reward.config import EvalRewardConfig, TrainRewardConfig

#: each stage and where its config class lives
STAGES = {
    "train_reward": "trex.reward.config.TrainRewardConfig",
    "eval_reward": "trex.reward.config.EvalRewardConfig",
    "gen_demos": "trex.demos.config.GenDemosConfig",
    "plot_correlations": "trex.plot_correlations.PlotCorrelationsConfig",
    "plot_reward_predictions": "trex.plot_reward_predictions.PlotRewardPredictionsConfig",
    "visualize_demo": "trex.visualize_demo.VisualizeDemoConfig",
}
#: a command line of each stage that its config's check() refuses, and the message
#: (None: a value argparse would refuse, given in a config file, which argparse does not check)
BAD = {
    "train_reward": (
        ["--min_snippet_length", "8", "--max_snippet_length", "5"],
        "--min_snippet_length (8) must be smaller than --max_snippet_length (5)",
    ),
    "eval_reward": ([], "give reward models with --rm_id and/or --reward_model"),
    "gen_demos": (["--policy", "random", "--models_dir", "x"], "not both"),
    "plot_correlations": (["--where", "num_dems"], "expected COLUMN=VALUE"),
    "plot_reward_predictions": (["--rm_id", "1_2"], None),
    "visualize_demo": (["0_000_000_001", "--scale", "17"], "--scale 17 is too large"),
}


def config_class(name: str):
    """(the stage module, its config class)."""
    module_name, _, cls_name = STAGES[name].rpartition(".")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return importlib.import_module(f"trex.{name}"), cls


@pytest.mark.parametrize("name", sorted(STAGES))
def test_help_lists_the_config_fields(name, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "100")
    module, cls = config_class(name)
    with pytest.raises(SystemExit) as exc:
        module.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    listed = re.findall(r"^  (?:-\w(?: \S+)?, )?--(\w+)", text, flags=re.M)
    positional = [f.name for f in dataclasses.fields(cls) if f.metadata.get("positional")]
    assert listed == ["help", "config", *(n for n in config_fields(cls) if n not in positional)]
    for n in positional:
        assert re.search(rf"^  {n}\b", text, flags=re.M)
    parser = module.build_parser()  # what the sweep runner reads
    flags = [a for a in parser._actions if a.dest not in ("help", "config")]
    assert [a.dest for a in flags] == config_fields(cls)
    # every default of the parser is the dataclass default (a notebook gets the same run)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for action in flags:
        f = fields[action.dest]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if action.option_strings and not action.required:
            assert action.default == default, action.dest


@pytest.mark.parametrize("name", sorted(STAGES))
def test_a_bad_value_is_one_error_line_from_the_config_check(name, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written: any file would land here
    module, cls = config_class(name)
    argv, message = BAD[name]
    if message is None:
        bad = tmp_path / "bad.yaml"
        bad.write_text("num_demos: 0\n")
        argv = [*argv, "-c", str(bad)]
        message = "--num_demos: expected a positive integer, got 0"
    with pytest.raises(UserError, match=re.escape(message)):
        parse_config(cls, argv, module.build_parser())
    assert module.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert not [p for p in tmp_path.iterdir() if p.name != "bad.yaml"]


def test_train_reward_config_checks_in_python():
    cfg = TrainRewardConfig(env_name="starpilot")
    cfg.check()
    for changes, message in [
        ({"num_dems": 0}, "--num_dems: expected a positive integer, got 0"),
        ({"env_name": "pong"}, "unknown env_name 'pong'"),
        ({"save_name": "a/b"}, "--save_name must be a plain name"),
        ({"rank_by": "noise", "use_snippet_rewards": True}, "needs --rank_by return"),
        ({"lam_l1": -1.0}, "--lam_l1 and --weight_decay must be >= 0"),
        ({"lr_scaling": "cubic"}, "--lr_scaling must be one of sqrt, none"),
        ({"rank_by": "age"}, "--rank_by must be one of return, noise, checkpoint"),
        ({"architecture": "resnet"}, "--architecture must be one of"),
        ({"select_by": "test_acc"}, "--select_by must be one of"),
    ]:
        with pytest.raises(UserError, match=message):
            cfg.replace(**changes)
    # the library's settings are the fields of the same names
    tc, spec = cfg.trex_config(), cfg.demo_spec()
    assert (tc.lr, tc.batch_size, tc.select_by) == (cfg.lr, cfg.batch_size, cfg.select_by)
    assert spec.min_length == cfg.min_snippet_length + 1 and spec.demo_csv == cfg.demo_csv
    assert "save_dir" not in cfg.identity() and cfg.identity()["lr"] == cfg.lr


def test_gen_demos_config_checks_in_python():
    GenDemosConfig(policy="random").check()
    for changes, message in [
        ({}, "give --models_dir"),
        ({"policy": "random", "noise": [0.5]}, "--noise does not apply"),
        ({"models_dir": "x", "noise": [1.5]}, r"--noise values must be in \[0, 1\]"),
        ({"policy": "random", "num_levels": 0}, "num_levels 0"),
        ({"policy": "random", "num_envs": 0}, "--num_envs: expected a positive integer"),
        ({"policy": "random", "distribution_mode": "easyy"}, "unknown distribution_mode"),
        ({"policy": "random", "name": "a/b"}, "--name must be a plain name"),
    ]:
        with pytest.raises(UserError, match=message):
            GenDemosConfig(**changes).check()


# ----------------------------------------------------------------------------- the Python API


def _same(a, b) -> bool:
    """Equal values; floats nearly equal, NaN equal to NaN (and to None, as a finished run's
    row reports a missing value)."""
    a, b = (float("nan") if v is None else v for v in (a, b))
    if isinstance(a, float) or isinstance(b, float):
        a, b = float(a), float(b)
        return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-6, abs=1e-9)
    return a == b


def _device_of(net):
    return next(net.parameters()).device


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("demos"))


def test_train_reward_model_returns_the_net_the_row_and_the_file(tmp_path, store):
    from trex.reward import RewardTrainingResult, train_reward_model
    from trex.reward.evaluation import evaluate_reward_files
    from trex.reward.model_file import load_reward_model, read_metadata
    from trex.reward.nets import RM_COLUMNS, RewardNet
    from trex.reward.passes import frame_rewards
    from trex.reward.registry import lookup_rm
    from trex.reward.training import MODEL_EXTRA_KEYS, RESULT_KEYS

    argv = tiny_args(tmp_path, store, "--precision", "fp32")
    cfg = TrainRewardConfig(**parse_config(TrainRewardConfig, argv).to_dict())
    assert cfg.num_snippets == int(TINY[TINY.index("--num_snippets") + 1])
    result = train_reward_model(cfg)
    assert isinstance(result, RewardTrainingResult) and not result.already_done
    assert isinstance(result.net, RewardNet)
    row = result.row
    assert set(row) == set(RM_COLUMNS) and row["rm_id"] == "123_4567" == result.rm_id
    assert result.model_path == tmp_path / "rm" / "model_files" / "123_4567.safetensors"
    assert result.model_path.is_file()
    assert (result.run_dir / "config.json").is_file() and (result.run_dir / "log.txt").is_file()
    assert len(pd.read_csv(result.run_dir / "train_log.csv")) == row["epochs"]
    # the CSV row is the returned row
    csv_row, path = lookup_rm(row["rm_id"], tmp_path / "rm" / "rm_infos.csv")
    assert path == result.model_path
    assert all(_same(csv_row[k], row[k]) for k in RM_COLUMNS)
    # the file's metadata agrees with the row
    meta = read_metadata(result.model_path)
    for k in ("env_name", "mode", "num_dems", "seed", "sequential", "rm_id"):
        assert meta[k] == row[k], k
    assert set(meta["results"]) == set(RESULT_KEYS)
    assert all(_same(meta["results"][k], row[k]) for k in RESULT_KEYS)
    assert all(_same(meta[k], row[k]) for k in MODEL_EXTRA_KEYS)
    assert meta["training"] == cfg.to_dict()
    # the file holds the returned net
    loaded, _ = load_reward_model(result.model_path, "cpu", channels_last=False)
    x = np.random.default_rng(0).integers(0, 255, size=(4, 64, 64, 3), dtype=np.uint8)
    a = frame_rewards(result.net, x, _device_of(result.net), False, channels_last=False)
    b = frame_rewards(loaded, x, _device_of(loaded), False, channels_last=False)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # the same run again: already done, the same row, nothing rewritten
    mtime = result.model_path.stat().st_mtime_ns
    again = train_reward_model(cfg)
    assert again.already_done and again.model_path == result.model_path
    assert again.model_path.stat().st_mtime_ns == mtime
    assert all(_same(again.row[k], row[k]) for k in RM_COLUMNS)
    # eval_reward's library function measures the same point estimates on the same test demos
    ev = evaluate_reward_files(
        EvalRewardConfig(
            reward_model=[str(result.model_path)],
            demo_csv=[str(store)],
            precision="fp32",
            device="cpu",
        )
    )
    (erow,) = ev.rows
    assert erow["rm_id"] == row["rm_id"] and erow["n_demos"] == row["n_test_demos"]
    assert erow["pearson"] == pytest.approx(row["pearson"], abs=1e-4)
    assert erow["baseline_pearson"] == pytest.approx(row["baseline_pearson"], abs=1e-9)


def test_collect_demos_library_run(tmp_path):
    from trex.demos import collect_demos
    from trex.demos.store import DemoIndex

    cfg = GenDemosConfig(
        policy="random",
        num_dems=2,
        num_envs=2,
        max_ep_len=10,
        seed=5,
        progress=False,
        log_dir=str(tmp_path / "demos"),
    )
    result = collect_demos(cfg)
    assert len(result.rows) == 2 and result.csv_path == tmp_path / "demos" / "demo_infos.csv"
    df = DemoIndex.read(result.csv_path).df
    assert sorted(df["demo_id"]) == sorted(r["demo_id"] for r in result.rows)
    assert result.run_key == cfg.run_key() and set(df["run_key"].astype(str)) == {cfg.run_key()}
    assert (result.run_dir / "config.json").is_file()
    again = collect_demos(cfg)  # the same run: every demo is there, nothing to do
    assert again.rows == [] and again.resumed == 2 and again.run_dir is None
