"""``train_preferences``' options: every PPO, level-pool and precision flag of train_policy
(:class:`~trex.rl.config.PPOConfig`, same names and defaults), the reward network's and its
optimiser's flags of train_reward (:func:`~trex.reward.config.reward_flag`, one definition),
and the preference learner's own."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from trex.common.cli import nonnegative_float, nonnegative_int, positive_float, positive_int
from trex.common.config import flag, require
from trex.preferences.selection import SELECTIONS
from trex.reward.config import reward_flag
from trex.reward.trex import TrexConfig
from trex.rl.config import PPOConfig

PREFS_GROUP = "preferences (Christiano et al. 2017)"
NET_GROUP = "reward network and its optimiser (as train_reward's)"
START_GROUP = "starting points"


def _probability(text: str) -> float:
    import argparse

    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value}")
    return value


@dataclasses.dataclass
class TrainPreferencesConfig(PPOConfig):
    """train_preferences: PPO on a reward learned online from synthetic preferences over the
    agent's own rollouts."""

    log_dir: str = flag("experts", help=None)
    log_name: str = flag(
        "", help="sub-directory under <log_dir>/<env>/<mode> (default: prefs_<selection>_<N>q)"
    )
    # the preference learner
    num_queries: int = flag(
        5000, type=nonnegative_int, group=PREFS_GROUP, help="queries to the labeller in all"
    )
    query_every: int = flag(
        1, type=positive_int, group=PREFS_GROUP, help="PPO updates between query rounds"
    )
    initial_query_frac: float = flag(
        0.1,
        type=_probability,
        group=PREFS_GROUP,
        help="share of the queries asked on the initial policy's rollout, before the first "
        "update; the rest at a rate decaying as ~1/T",
    )
    segment_length: int = flag(
        50, type=positive_int, group=PREFS_GROUP, help="frames per segment (Christiano: 25-60)"
    )
    selection: str = flag(
        "uniform",
        choices=SELECTIONS,
        group=PREFS_GROUP,
        help="which candidate pairs are asked: uniform, or disagreement (highest variance of "
        "the --ensemble members' preference; needs --ensemble >= 2)",
    )
    candidate_factor: int = flag(
        4,
        type=positive_int,
        group=PREFS_GROUP,
        help="candidate pairs per query for --selection disagreement",
    )
    label_noise: float = flag(
        0.0,
        type=_probability,
        group=PREFS_GROUP,
        help="probability that the labeller's answer is flipped (BPref's eps_mistake, <= 0.5)",
    )
    label_beta: float | None = flag(
        None,
        type=positive_float,
        group=PREFS_GROUP,
        help="Boltzmann rationality: P(b preferred) = sigmoid(beta (R_b - R_a)) "
        "(default: always the higher true return)",
    )
    ties: str = flag(
        "skip",
        choices=("skip", "equal"),
        group=PREFS_GROUP,
        help="segments of equal true return: skip (asked, no label) or equal (stored as "
        "equally preferable, a uniform label: Christiano et al.'s 'equally good' answer, "
        "the pair kept once in each order)",
    )
    center_reward: bool = flag(
        False,
        group=PREFS_GROUP,
        help="subtract the reward's mean on 1,024 frames of the last rollout (measured after "
        "every update's fit) from PPO's reward: Christiano et al.'s zero-mean normalisation. "
        "Preferences leave a per-step offset free, and PPO reads a positive one as pay for "
        "long episodes, a negative one as pay for short ones",
    )
    end_penalty: float = flag(
        0.0,
        type=nonnegative_float,
        group=PREFS_GROUP,
        help="the labeller's penalty for an episode end without a completed level (a death or "
        "the time limit), subtracted from that step's true reward; a completed level keeps its "
        "reward. The original project's christiano/ learner replaced every episode end's "
        "reward with -10 (its env_wrapper.py). 0: the game's reward only",
    )
    continuous: bool = flag(
        False,
        group=PREFS_GROUP,
        help="PPO plays on through episode ends (never told done: a death or a completed "
        "level is one more step into the next level), as the original project's christiano/ "
        "learner did; with --end_penalty, a reward that punishes dying then costs once per "
        "death, so dying less often pays, where an episode's one end costs the same early or "
        "late",
    )
    buffer_size: int = flag(
        3000,
        type=positive_int,
        group=PREFS_GROUP,
        help="most comparisons kept (the oldest are dropped)",
    )
    fit_pairs: int = flag(
        400,
        type=nonnegative_int,
        group=PREFS_GROUP,
        help="comparisons drawn from the buffer to fit the reward on, per query round",
    )
    initial_fit_pairs: int = flag(
        2000,
        type=nonnegative_int,
        group=PREFS_GROUP,
        help="the same for the first round (a fresh or a demo-seeded network)",
    )
    heldout_pairs: int = flag(
        200,
        type=nonnegative_int,
        group=PREFS_GROUP,
        help="freshly labelled pairs of every rollout the reward's accuracy is measured on "
        "(not queries: never trained on)",
    )
    # the reward network (train_reward's flags; batch of 16 pairs by default here)
    architecture: str = reward_flag("architecture", group=NET_GROUP)
    ensemble: int = reward_flag("ensemble", group=NET_GROUP)
    frame_stack: int = reward_flag("frame_stack", group=NET_GROUP)
    scale_frames: bool = reward_flag("scale_frames", group=NET_GROUP)
    output_abs: bool = reward_flag("output_abs", group=NET_GROUP)
    lr: float = reward_flag("lr", group=NET_GROUP)
    lam_l1: float = reward_flag("lam_l1", group=NET_GROUP)
    weight_decay: float = reward_flag("weight_decay", group=NET_GROUP)
    batch_size: int = reward_flag("batch_size", default=16, group=NET_GROUP)
    lr_scaling: str = reward_flag("lr_scaling", group=NET_GROUP)
    augment: str = reward_flag("augment", group=NET_GROUP)
    max_batch_frames: int = reward_flag("max_batch_frames", group=NET_GROUP)
    # starting points
    init_reward: str | None = flag(
        None,
        group=START_GROUP,
        help="start from this reward model (an rm_id in --reward_csv, or a .safetensors "
        "file) and refine it online; its network replaces the flags above",
    )
    reward_csv: str = flag(
        "reward_models/rm_infos.csv", group=START_GROUP, help="rm_infos CSV for --init_reward"
    )
    init_demos: list[str] | None = flag(
        None,
        group=START_GROUP,
        help="demo index CSV(s): seed the buffer with T-REX snippet pairs of --num_dems "
        "ranked demos (chosen as train_reward chooses them)",
    )
    num_dems: int = flag(12, type=positive_int, group=START_GROUP, help="demos for --init_demos")
    init_pairs: int = flag(
        1000, type=positive_int, group=START_GROUP, help="snippet pairs for --init_demos"
    )

    def check(self) -> None:
        super().check()
        require(
            self.segment_length <= self.nsteps,
            f"--segment_length ({self.segment_length}) must be at most --nsteps ({self.nsteps})",
        )
        require(
            self.num_envs * (self.nsteps // self.segment_length) >= 2,
            "a rollout must hold at least two segments (more --num_envs or a shorter "
            "--segment_length)",
        )
        require(self.label_noise <= 0.5, "--label_noise must be at most 0.5")
        require(
            self.selection != "disagreement" or self.ensemble >= 2 or self.init_reward,
            "--selection disagreement needs an ensemble: --ensemble 2 or more",
        )
        require(
            not self.init_demos or self.num_dems >= 2,
            "--init_demos needs --num_dems of at least 2",
        )
        self.trex_config().check()

    def trex_config(self) -> TrexConfig:
        """The reward network's and its optimiser's settings as T-REX's trainer takes them."""
        names = {f.name for f in dataclasses.fields(TrexConfig)}
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return TrexConfig(**{k: v for k, v in values.items() if k in names})

    @property
    def total_updates(self) -> int:
        """PPO updates until ``timesteps_per_proc`` (SB3 collects whole rollouts)."""
        return -(-self.timesteps_per_proc // (self.num_envs * self.nsteps))

    @property
    def run_dir(self) -> Path:
        """<log_dir>/<env_name>/<mode>/<log_name, default prefs_<selection>_<N>q>."""
        name = self.log_name or f"prefs_{self.selection}_{self.num_queries}q"
        return Path(self.log_dir) / self.env_name / self.distribution_mode / name
