"""The RL, plotting and sweep stages: each flag is one config field, checked once."""

from __future__ import annotations

import dataclasses
import importlib
import re

import pytest

from trex.common.config import config_parser
from trex.common.errors import UserError
from trex.plotting.policy_returns import PlotPolicyReturnsConfig
from trex.plotting.saliency import PlotRewardSaliencyConfig
from trex.preferences.config import TrainPreferencesConfig
from trex.rl.config import (
    ExportPolicyConfig,
    PPOConfig,
    TestPolicyConfig,
    TrainPolicyConfig,
    VisualizePolicyConfig,
)
from trex.sweeps.config import RunExperimentsConfig

STAGES = {
    "train_policy": TrainPolicyConfig,
    "test_policy": TestPolicyConfig,
    "export_policy": ExportPolicyConfig,
    "visualize_policy": VisualizePolicyConfig,
    "plot_policy_returns": PlotPolicyReturnsConfig,
    "run_experiments": RunExperimentsConfig,
    "train_preferences": TrainPreferencesConfig,
    "plot_reward_saliency": PlotRewardSaliencyConfig,
}


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_help_lists_exactly_the_config_fields(stage, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "100")
    module = importlib.import_module(f"trex.{stage}")
    with pytest.raises(SystemExit) as exc:
        module.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    # option lines start with two spaces; wrapped help text is indented further
    listed = re.findall(r"^  (?:-\w(?: \S+)?, )?--(\w+)", text, flags=re.M)
    assert sorted(listed) == sorted(_fields(STAGES[stage]) | {"help", "config"})
    dests = {a.dest for a in module.build_parser()._actions}
    assert dests == _fields(STAGES[stage]) | {"help", "config"}


BAD = [
    # (stage, argv, YAML config or None, the check's message)
    ("train_policy", ["--nminibatches", "7"], None, "must be divisible by nminibatches (7)"),
    ("train_policy", [], "num_envs: 0\n", "--num_envs: expected a positive integer, got 0"),
    ("train_policy", ["--use_sigmoid"], None, "--use_sigmoid needs a learned reward"),
    ("train_policy", ["--num_levels", "0"], None, "num_levels 0 is procgen's unbounded range"),
    (
        "test_policy",
        ["--load_path", "random", "--env_name", "coinrun", "--distribution_mode", "medium"],
        None,
        "unknown distribution_mode 'medium'",
    ),
    ("test_policy", ["--load_path", "random"], "num_runs: 0\n", "--num_runs"),
    (
        "export_policy",
        ["--models_dir", "m", "--out_dir", "o", "--timesteps", "10", "--pick", "2"],
        None,
        "give --timesteps or --pick, not both",
    ),
    ("export_policy", ["--models_dir", "m", "--out_dir", "o"], None, "or --test_csv"),
    ("visualize_policy", ["--load_path", "random", "--env_name", "pong"], None, "'pong'"),
    ("visualize_policy", ["--load_path", "random"], "fps: 0\n", "--fps"),
    ("plot_policy_returns", ["--runs", "a", "b", "--labels", "x"], None, "--labels has 1"),
    ("plot_policy_returns", ["--runs", "a"], "set_name: validation\n", "--set_name"),
    ("run_experiments", ["--grid", "rm_id"], None, "--grid rm_id: give the flag"),
    ("train_preferences", ["--selection", "disagreement"], None, "needs an ensemble"),
    ("train_preferences", ["--init_reward", "nope_123"], None, "index not found"),
    ("train_preferences", [], "segment_length: 0\n", "--segment_length"),
    ("plot_reward_saliency", ["--reward_model", "a.safetensors"], None, "--demo_csv or"),
    ("run_experiments", ["--pass_args", '"unclosed'], None, "--pass_args"),
]


@pytest.mark.parametrize("stage, argv, yaml_text, message", BAD)
def test_a_bad_value_is_one_line_and_exit_2(
    stage, argv, yaml_text, message, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    if yaml_text is not None:
        (tmp_path / "c.yaml").write_text(yaml_text)
        argv = ["-c", str(tmp_path / "c.yaml"), *argv]
    module = importlib.import_module(f"trex.{stage}")
    assert module.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == (["c.yaml"] if yaml_text else [])


def test_the_check_holds_python_values_to_the_flag_rules():
    TrainPolicyConfig(env_name="coinrun", num_envs=4, nsteps=8, nminibatches=2).check()
    with pytest.raises(UserError, match="--num_envs"):
        TrainPolicyConfig(num_envs=0).check()
    with pytest.raises(UserError, match="--precision"):
        TrainPolicyConfig(precision="fp16").check()
    with pytest.raises(UserError, match="unknown env_name"):
        TrainPolicyConfig(env_name="pong").check()
    with pytest.raises(UserError, match="--level_sets"):
        TestPolicyConfig(load_path="random", env_name="coinrun", level_sets=["val"]).check()
    with pytest.raises(UserError, match="--load_path is required"):
        TestPolicyConfig(env_name="coinrun").check()
    with pytest.raises(UserError, match="--pick"):
        ExportPolicyConfig(models_dir="m", out_dir="o", pick=0).check()


def test_ppo_flags_are_reusable_with_train_policys_names_and_defaults():
    """A stage that trains PPO (e.g. a future train_preferences) inherits PPOConfig."""

    @dataclasses.dataclass
    class OtherStage(PPOConfig):
        pass

    ours = {a.dest: a for a in config_parser(OtherStage)._actions}
    train_policy = {a.dest: a for a in config_parser(TrainPolicyConfig)._actions}
    ppo = _fields(PPOConfig)
    assert {"env_name", "num_levels", "start_level", "nsteps", "gamma", "norm_gamma"} <= ppo
    assert {"precision", "device", "seed", "num_threads"} <= ppo
    for name in ppo:
        a, b = ours[name], train_policy[name]
        assert (a.default, a.type, a.choices, a.help) == (b.default, b.type, b.choices, b.help)


def test_checkpoint_settings_resolve_the_level_pool():
    settings = TrainPolicyConfig(env_name="coinrun", rm_id="123_4567").ppo_settings()
    assert (settings["start_level"], settings["num_levels"]) == (0, 1_000_000_000)
    assert not {"rm_id", "log_dir", "num_threads"} & set(settings)
    assert PPOConfig(start_level=10, num_levels=200).ppo_settings()["num_levels"] == 200


def test_optional_true_switches(tmp_path):
    from trex.sweeps.grid import flag_tokens
    from trex.sweeps.stages import stage_actions
    from trex.test_policy import build_parser

    parser = build_parser()
    parse = parser.parse_args
    assert parse(["--load_path", "x"]).deterministic is False
    assert parse(["--load_path", "x", "--deterministic"]).deterministic is True
    assert parse(["--load_path", "x", "--deterministic", "false"]).deterministic is False
    assert flag_tokens("deterministic", True, stage_actions(parser)) == ["--deterministic=True"]


def test_run_experiments_flags_and_pass_through():
    from trex.sweeps.config import parse_sweep_args

    args = parse_sweep_args(
        ["--num_dems", "12", "25", "--max_num_epochs", "5", "--pass_args", "--patience 2"]
    )
    assert args.cfg.num_dems == ["12", "25"] and args.cfg.stage == "train_reward"
    assert args.stage_args == ["--max_num_epochs", "5", "--patience", "2"]
    assert args.cfg.cli_axes() == [("num_dems", ["12", "25"])]
    with pytest.raises(UserError, match="unrecognized|ambiguous|unexpected"):
        parse_sweep_args(["stray"])
