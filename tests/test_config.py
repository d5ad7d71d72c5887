"""The config dataclasses: one definition per flag, parser generated, checked once."""

from __future__ import annotations

import dataclasses
import json

import pytest

from trex.common.cli import positive_int, str2bool
from trex.common.config import (
    Config,
    config_fields,
    config_parser,
    flag,
    parse_config,
    require,
)
from trex.common.errors import UserError


@dataclasses.dataclass
class ToyConfig(Config):
    env_name: str = flag("fruitbot", help="game")
    num_dems: int = flag(12, help="number of demos")
    lr: float = flag(5e-5, help="learning rate")
    output_abs: bool = flag(False, help="a switch")
    use_clip_heuristic: bool = flag(True, help="a true/false flag")
    seed: int | None = flag(None, help="random seed")
    demo_csv: list[str] = flag(["demos/demo_infos.csv"], help="index CSVs")
    mode: str = flag("easy", help="mode", choices=["easy", "hard"], group="env")

    def check(self) -> None:
        super().check()
        require(self.num_dems >= 2, f"--num_dems must be at least 2, got {self.num_dems}")


def test_defaults_and_types_from_the_fields():
    cfg = parse_config(ToyConfig, [])
    assert cfg == ToyConfig()
    cfg = parse_config(
        ToyConfig,
        [
            "--num_dems",
            "20",
            "--lr",
            "1e-3",
            "--output_abs",
            "--use_clip_heuristic",
            "false",
            "--seed",
            "7",
            "--demo_csv",
            "a.csv",
            "b.csv",
            "--mode",
            "hard",
        ],
    )
    assert (cfg.num_dems, cfg.lr, cfg.output_abs, cfg.use_clip_heuristic, cfg.seed) == (
        20,
        1e-3,
        True,
        False,
        7,
    )
    assert cfg.demo_csv == ["a.csv", "b.csv"] and cfg.mode == "hard"


def test_list_default_is_not_shared():
    a, b = ToyConfig(), ToyConfig()
    a.demo_csv.append("x.csv")
    assert b.demo_csv == ["demos/demo_infos.csv"]


def test_help_lists_every_field_once():
    text = config_parser(ToyConfig).format_help()
    for field in dataclasses.fields(ToyConfig):
        assert text.count(f"--{field.name} ") + text.count(f"--{field.name}\n") >= 1
    assert "env:" in text


def test_check_runs_once_parsed(capsys):
    with pytest.raises(UserError, match="--num_dems must be at least 2, got 1"):
        parse_config(ToyConfig, ["--num_dems", "1"])
    with pytest.raises(SystemExit) as exc:
        parse_config(ToyConfig, ["--mode", "medium"])
    assert exc.value.code == 2
    with pytest.raises(UserError):
        ToyConfig().replace(num_dems=0)


def test_config_file_and_replay(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("num_dems: 30\nenv_name: starpilot\n")
    cfg = parse_config(ToyConfig, ["-c", str(yaml_file), "--num_dems", "40"])
    assert (cfg.env_name, cfg.num_dems) == ("starpilot", 40)  # the command line wins
    run_json = tmp_path / "config.json"
    run_json.write_text(json.dumps({"args": cfg.to_dict(), "versions": {}}))
    assert parse_config(ToyConfig, ["-c", str(run_json)]) == cfg
    bad = tmp_path / "bad.yaml"
    bad.write_text("num_demz: 3\n")
    with pytest.raises(UserError, match="unknown flag"):
        parse_config(ToyConfig, ["-c", str(bad)])


def test_a_field_without_flag_is_refused():
    @dataclasses.dataclass
    class Bad(Config):
        x: int = 3

    with pytest.raises(TypeError):
        config_parser(Bad)


@dataclasses.dataclass
class FlagsConfig(Config):
    demo_id: str | None = flag(positional=True, help="an id")
    count: int = flag(3, type=positive_int, help="a positive count")
    ratio: float = flag(0.5, help="a ratio")
    deterministic: bool = flag(False, type=str2bool, help="a true/false flag defaulting to false")
    quiet: bool = flag(False, help=None)
    precision: str = flag("auto", choices=("auto", "fp32"), help="choices")
    noise: list[float] | None = flag(None, type=float, nargs="+", metavar="EPS", help="a list")

    def check(self) -> None:
        super().check()
        self.check_flags()


def test_positional_switch_and_true_false_flags():
    parser = config_parser(FlagsConfig)
    actions = {a.dest: a for a in parser._actions}
    assert actions["demo_id"].option_strings == [] and actions["demo_id"].required
    assert actions["deterministic"].type is str2bool and actions["deterministic"].default is False
    assert actions["quiet"].nargs == 0 and actions["quiet"].help is None  # a store_true switch
    cfg = parse_config(FlagsConfig, ["d1", "--deterministic", "true", "--noise", "0", "0.5"])
    assert (cfg.demo_id, cfg.deterministic, cfg.quiet, cfg.noise) == ("d1", True, False, [0, 0.5])
    with pytest.raises(SystemExit):
        parse_config(FlagsConfig, ["--count", "2"])  # the positional is missing
    assert config_fields(FlagsConfig) == [f.name for f in dataclasses.fields(FlagsConfig)]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"demo_id": None}, "demo_id is required"),
        ({"count": 0}, "--count: expected a positive integer, got 0"),
        ({"count": 2.5}, "--count: expected a positive integer, got '2.5'"),
        ({"ratio": "half"}, "--ratio: invalid float value: 'half'"),
        ({"precision": "fp16"}, "--precision must be one of auto, fp32, got 'fp16'"),
        ({"noise": [0.1, "x"]}, "--noise: invalid float value: 'x'"),
    ],
)
def test_check_flags_holds_python_values_to_the_flags(changes, message):
    FlagsConfig(demo_id="d").check()
    with pytest.raises(UserError) as exc:
        dataclasses.replace(FlagsConfig(demo_id="d"), **changes).check()
    assert str(exc.value) == message


def test_check_flags_catches_config_file_values(tmp_path):
    """argparse converts command-line text, not the values of -c FILE.yaml: check_flags does."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("count: -4\n")
    with pytest.raises(UserError, match="--count: expected a positive integer, got -4"):
        parse_config(FlagsConfig, ["d", "-c", str(bad)])
