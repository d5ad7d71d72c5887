"""The RL stages' options, one dataclass field per flag (:mod:`trex.common.config`).

The building blocks are shared, so a flag has one definition wherever it appears:

* :class:`LevelPoolConfig`: the game and its training level pool;
* :class:`PrecisionConfig`: ``--precision`` and ``--device``;
* :class:`PPOConfig` (both of the above): everything a PPO run needs, train-procgen's easy-mode
  defaults; what :func:`trex.rl.training.train_ppo` takes;
* :class:`RewardConfig`: the reward PPO optimises (the game's, a learned or a constant one);
* :class:`PolicyConfig`: a saved policy (or a random one) and the game it plays.

The stages' configs combine them: :class:`TrainPolicyConfig`, :class:`TestPolicyConfig`,
:class:`VisualizePolicyConfig`, :class:`ExportPolicyConfig`. A new stage that trains PPO
inherits :class:`PPOConfig` and gets every PPO, level-pool and precision flag of
train_policy with its name and default::

    cfg = TrainPolicyConfig(env_name="coinrun", num_levels=200, timesteps_per_proc=500_000)
    cfg.check()
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trex.common.cli import nonnegative_int, positive_float, positive_int, str2bool
from trex.common.config import Config, flag, require
from trex.common.device import PRECISIONS

REWARD_GROUP = "reward (default: the game's true reward)"
#: test_policy's level sets: the policy's training pool, and the unseen levels [1e9, 2e9)
LEVEL_SETS = ("train", "test")


def _check_game(env_name: str | None, mode: str | None) -> None:
    from trex.common.envs import check_distribution_mode, check_env_name

    if env_name is not None:
        check_env_name(env_name)
    if mode is not None:
        check_distribution_mode(mode)


# ----------------------------------------------------------------------------- building blocks


class OptionalTrue(argparse._StoreAction):
    """argparse action of the original project's ``--flag [true/false]`` switches: the bare
    flag means True, ``--flag false`` False (``flag(False, action=OptionalTrue, ...)``)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("nargs", "?")
        kwargs.setdefault("const", True)
        kwargs.setdefault("type", str2bool)
        super().__init__(option_strings, dest, **kwargs)


@dataclasses.dataclass
class StageConfig(Config):
    """Base of the configs here: :meth:`check` starts with :meth:`Config.check_flags` (every
    value one its flag accepts on the command line), once however the blocks are combined;
    the blocks extend it, calling ``super().check()`` first."""

    def check(self) -> None:
        super().check()
        self.check_flags()


@dataclasses.dataclass
class LevelPoolConfig(StageConfig):
    """The game and the training pool [start_level, start_level + num_levels) in [0, 1e9)."""

    env_name: str = flag("starpilot", help=None)
    distribution_mode: str = flag("easy", help=None)
    num_levels: int | None = flag(
        None,
        type=nonnegative_int,
        help="training pool size, e.g. 200 for procgen's generalization protocol "
        "(default: the whole training range [start_level, 1e9))",
    )
    start_level: int = flag(0, type=nonnegative_int, help="first level of the training pool")
    use_backgrounds: bool = flag(True, help=None)

    def check(self) -> None:
        super().check()
        _check_game(self.env_name, self.distribution_mode)
        self.level_pool()

    def level_pool(self) -> tuple[int, int]:
        """(start_level, num_levels) of the pool, ``num_levels`` resolved (UserError if the
        pool leaves the training range)."""
        from trex.common.envs import training_pool

        return training_pool(self.start_level, self.num_levels)


@dataclasses.dataclass
class PrecisionConfig(StageConfig):
    """Where and how the networks run."""

    precision: str = flag(
        "auto",
        choices=PRECISIONS,
        help="auto/bf16: channels_last + bf16 autocast (fast path); fp32: plain",
    )
    device: str = flag("auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")


@dataclasses.dataclass
class PPOConfig(PrecisionConfig, LevelPoolConfig):
    """Everything a PPO run needs (train-procgen's easy-mode defaults)."""

    num_envs: int = flag(64, type=positive_int, help=None)
    nsteps: int = flag(256, type=positive_int, help=None)
    nminibatches: int = flag(8, type=positive_int, help=None)
    ppo_epochs: int = flag(3, type=positive_int, help=None)
    learning_rate: float = flag(5e-4, type=positive_float, help=None)
    ent_coef: float = flag(0.01, help=None)
    vf_coef: float = flag(0.5, help=None)
    max_grad_norm: float = flag(0.5, type=positive_float, help=None)
    gamma: float = flag(0.999, type=positive_float, help=None)
    lam: float = flag(0.95, type=positive_float, help=None)
    norm_gamma: float = flag(
        0.99,
        type=positive_float,
        help="discount of the return normalisation (baselines' VecNormalize default, "
        "which train-procgen uses; separate from the PPO discount --gamma)",
    )
    clip_range: float = flag(0.2, type=positive_float, help=None)
    timesteps_per_proc: int = flag(
        25_000_000,
        type=positive_int,
        help="total environment steps to reach (a resumed run continues to this total)",
    )
    save_interval: int = flag(10, type=positive_int, help="updates between checkpoints")
    log_interval: int = flag(1, type=positive_int, help="updates between progress rows")
    seed: int = flag(0, help=None)
    num_threads: int | None = flag(
        None,
        type=positive_int,
        help="torch CPU threads (default: torch's choice; 1 is much faster on a busy machine)",
    )

    def check(self) -> None:
        super().check()
        batch = self.num_envs * self.nsteps
        require(
            batch % self.nminibatches == 0,
            f"num_envs * nsteps ({batch}) must be divisible by nminibatches ({self.nminibatches})",
        )

    def ppo_settings(self) -> dict[str, Any]:
        """The :class:`PPOConfig` values alone, with the level pool resolved and without
        ``num_threads`` (a machine setting): what a checkpoint records as its ``config``."""
        start_level, num_levels = self.level_pool()
        names = [f.name for f in dataclasses.fields(PPOConfig) if f.name != "num_threads"]
        values = {name: getattr(self, name) for name in names}
        return {**values, "start_level": start_level, "num_levels": num_levels}


@dataclasses.dataclass
class RewardConfig(StageConfig):
    """The reward PPO optimises: the game's (default), a learned one, or +C every step."""

    rm_id: str | None = flag(
        None, group=REWARD_GROUP, help="learned reward model id, looked up in --reward_csv"
    )
    reward_csv: str = flag(
        "reward_models/rm_infos.csv", group=REWARD_GROUP, help="rm_infos CSV to look --rm_id up in"
    )
    reward_model: str | None = flag(
        None, group=REWARD_GROUP, help="path to a reward model .safetensors"
    )
    use_sigmoid: bool = flag(
        False,
        action=OptionalTrue,
        group=REWARD_GROUP,
        help="squash the learned reward with a sigmoid (the original project's option)",
    )
    constant_reward: float | None = flag(
        None, group=REWARD_GROUP, help="+C every step: the live-long baseline"
    )
    allow_reward_mismatch: bool = flag(
        False, group=REWARD_GROUP, help="use a reward model trained on another game or mode"
    )

    def check(self) -> None:
        super().check()
        chosen = [x for x in (self.rm_id, self.reward_model, self.constant_reward) if x is not None]
        require(len(chosen) <= 1, "choose one of --rm_id, --reward_model and --constant_reward")
        require(
            not self.use_sigmoid or self.learned_reward,
            "--use_sigmoid needs a learned reward (--rm_id or --reward_model)",
        )

    @property
    def learned_reward(self) -> bool:
        return self.rm_id is not None or self.reward_model is not None


@dataclasses.dataclass
class PolicyConfig(PrecisionConfig):
    """A policy checkpoint (or ``random``) and the game it plays (default: the checkpoint's)."""

    load_path: str = flag(
        required=True,
        help="policy checkpoint (.zip, or weights-only .safetensors from export_policy), "
        "or 'random' for a uniformly random policy",
    )
    env_name: str | None = flag(None, help="default: the checkpoint's game")
    distribution_mode: str | None = flag(None, help="default: the checkpoint's mode")
    use_backgrounds: bool | None = flag(
        None, help="default: as the policy was trained (the checkpoint's), else True"
    )
    deterministic: bool = flag(
        False, action=OptionalTrue, help="take the most likely action instead of sampling"
    )
    seed: int = flag(0, help=None)

    def check(self) -> None:
        super().check()
        _check_game(self.env_name, self.distribution_mode)

    def game(self, meta: dict[str, Any]) -> tuple[str, str, bool]:
        """(env_name, distribution_mode, use_backgrounds): the flags', else the checkpoint's
        ``meta``'s (mode default easy, backgrounds default True)."""
        from trex.common.envs import check_distribution_mode, check_env_name

        env_name = check_env_name(self.env_name or meta["env_name"])
        mode = check_distribution_mode(
            self.distribution_mode or meta.get("distribution_mode", "easy")
        )
        backgrounds = self.use_backgrounds
        if backgrounds is None:
            backgrounds = bool(meta.get("use_backgrounds", True))
        return env_name, mode, backgrounds


# ----------------------------------------------------------------------------- the stages


@dataclasses.dataclass
class TrainPolicyConfig(RewardConfig, PPOConfig):
    """train_policy: a PPO run on the chosen reward, its checkpoints under ``--log_dir``."""

    log_dir: str = flag("experts", help=None)
    log_name: str = flag("", help="sub-directory under <log_dir>/<env>/<mode>")
    load_path: str | None = flag(
        None,
        help="a training checkpoint .zip to resume (continues in its directory), a "
        "weights-only .safetensors to fine-tune from (a new run directory, fresh "
        "optimizer), or a checkpoint directory (its latest)",
    )

    def run_dir_for(self, reward_tag: str | None) -> Path:
        """Where a run's checkpoints and logs go: <log_dir>/<env_name>/<mode>[/<log_name>];
        runs on a replaced reward default to a sub-directory named for the reward."""
        path = Path(self.log_dir) / self.env_name / self.distribution_mode
        name = self.log_name or reward_tag
        return path / name if name else path


@dataclasses.dataclass
class TestPolicyConfig(PolicyConfig):
    """test_policy: true returns on the policy's training pool and on unseen levels."""

    __test__ = False  # not a pytest test class

    num_levels: int | None = flag(
        None,
        type=nonnegative_int,
        help="size of the 'train' level pool (default: the checkpoint's training pool; "
        "0 = the whole training range [0, 1e9))",
    )
    start_level: int | None = flag(
        None,
        type=nonnegative_int,
        help="first level of the 'train' pool (default: the checkpoint's)",
    )
    level_sets: list[str] = flag(
        list(LEVEL_SETS),
        choices=LEVEL_SETS,
        help="train: the policy's training levels; test: unseen levels [1e9, 2e9)",
    )
    num_runs: int = flag(100, type=positive_int, help="episodes per level set")
    num_envs: int = flag(32, type=positive_int, help="environments run in parallel")
    max_steps: int | None = flag(None, type=positive_int, help="cut episodes at this length")
    out_csv: str = flag("results/test_policy.csv", help=None)


@dataclasses.dataclass
class VisualizePolicyConfig(PolicyConfig):
    """visualize_policy: an MP4 of the policy playing, several screens tiled."""

    video_length: int = flag(500, type=positive_int, help="frames")
    num_screens: int = flag(1, type=positive_int, help="environments tiled in a grid")
    start_level: int = flag(1_000_000_000, type=nonnegative_int, help="default: unseen test levels")
    num_levels: int = flag(1_000_000_000, type=nonnegative_int, help=None)
    scale: int = flag(4, type=positive_int, help="upscaling factor (64 px -> 256 px)")
    fps: int = flag(15, type=positive_int, help=None)
    out: str | None = flag(None, help="default: Videos/policy_<env>_<checkpoint>.mp4")

    def out_path(self, env_name: str) -> Path:
        tag = "random" if self.load_path == "random" else Path(self.load_path).stem
        return Path(self.out or f"Videos/policy_{env_name}_{tag}.mp4")


def timesteps_or_best(text: str | int) -> int | str:
    """argparse type: a step count >= 0 or ``best``."""
    if str(text).strip().lower() == "best":
        return "best"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of timesteps or 'best', got {text!r}"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of timesteps >= 0, got {value}")
    return value


@dataclasses.dataclass
class ExportPolicyConfig(StageConfig):
    """export_policy: chosen checkpoints of a run as weights-only files plus a manifest."""

    models_dir: str = flag(
        required=True,
        help="train_policy checkpoint directory (its checkpoints.csv), or an exported folder",
    )
    out_dir: str = flag(
        required=True,
        help="folder to write into (created; an exported folder of the same game gets "
        "the new files added)",
    )
    test_csv: str | None = flag(
        None,
        help="a test_policy results CSV of the exported files: their mean true return and "
        "standard error per level set go into the manifest (alone, without "
        "--timesteps/--pick, it only updates an exported folder's scores)",
    )
    timesteps: list[int | str] | None = flag(
        None,
        type=timesteps_or_best,
        metavar="T|best",
        help="the checkpoint nearest each step count; 'best': the highest mean training return",
    )
    pick: int | None = flag(
        None,
        type=positive_int,
        metavar="N",
        help="N checkpoints spread over skill: the earliest, the best and N-2 between",
    )
    env_name: str | None = flag(None, help="check that the checkpoints are of this game")

    def check(self) -> None:
        super().check()
        require(
            self.timesteps is None or self.pick is None,
            "give --timesteps or --pick, not both",
        )
        require(
            self.timesteps is not None or self.pick is not None or self.test_csv is not None,
            "give --timesteps or --pick (which checkpoints to export), or --test_csv",
        )
        _check_game(self.env_name, None)

    @property
    def selects(self) -> bool:
        """Whether checkpoints are chosen (else only the scores of ``out_dir`` are updated)."""
        return self.timesteps is not None or self.pick is not None
