"""The options of the reward stages, one dataclass each: a field is a flag of the stage
(:mod:`trex.common.config`), and the same object is what the library takes, so a notebook
runs a stage without the command line::

    from trex.reward import TrainRewardConfig, train_reward_model

    result = train_reward_model(TrainRewardConfig(env_name="starpilot", num_dems=12))
    result.row["pearson"], result.model_path

:class:`TrainRewardConfig` (``train_reward``) derives the library's
:class:`~trex.reward.trex.TrexConfig` and :class:`~trex.reward.demo_choice.DemoSpec` from its
fields by name; :class:`EvalRewardConfig` is ``eval_reward``'s. Each ``check()`` holds every
check of its stage's options. Importing this module imports neither torch nor pandas.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from trex.common.cli import nonnegative_int, positive_float, positive_int
from trex.common.config import Config, flag, require
from trex.reward.demo_choice import RANK_BY, DemoSpec
from trex.reward.trex import LR_SCALINGS, TrexConfig

#: --precision: auto/bf16 = channels_last + bf16 autocast where the hardware has it; fp32
PRECISION_CHOICES: tuple[str, ...] = ("auto", "bf16", "fp32")

#: train_reward options that do not change which model a run makes (where things go, how
#: fast): a finished run with the same rm_id and other values of these is the same model
NOT_IDENTITY: frozenset[str] = frozenset(
    {"config", "overwrite", "log_dir", "save_dir", "save_name", "device", "precision"}
)

#: the flags of the reward network and its optimiser, shared by every stage that trains one
#: (train_reward, train_preferences): name -> flag() arguments; :func:`reward_flag` makes a field
_REWARD_FLAGS: dict[str, dict[str, Any]] = {
    "lr": dict(default=5e-5, type=positive_float, help="reward model learning rate (Adam)"),
    "lam_l1": dict(default=0.001, type=float, help="L1 penalty on the absolute per-frame rewards"),
    "weight_decay": dict(default=0.01, type=float, help="Adam weight decay"),
    "output_abs": dict(default=False, help="take the absolute value of the reward output"),
    "frame_stack": dict(
        default=1,
        type=int,
        help="frames per network input: frame t and the K-1 before it in its demo/episode "
        "on the channel axis, the first frame repeated before the start (as in DQN, "
        "Mnih et al. 2015); used alike in training, evaluation and PPO on the "
        "learned reward (1 = each frame alone, as upstream)",
    ),
    "scale_frames": dict(
        default=False,
        help="divide the network's input by 255 (upstream feeds raw 0..255 pixel values)",
    ),
    "augment": dict(
        default="none",
        help="training-only input augmentation: none, or shift = random shift by up to 4 "
        "pixels with edge-replicated padding, one shift per demo and batch (RAD, "
        "Laskin et al. 2020, arXiv 2004.14990; DrAC, Raileanu et al. 2020, "
        "arXiv 2006.12862)",
    ),
    "architecture": dict(
        default="seed_cnn",
        help="reward network: seed_cnn (the original project's small CNN) or impala (the "
        "IMPALA CNN encoder, Espeholt et al. 2018, arXiv 1802.01561, as in Procgen's "
        "PPO, with a linear reward head)",
    ),
    "ensemble": dict(
        default=1,
        type=int,
        help="train K reward networks together (stacked parameters, one call for all; "
        "they differ by init, each gets the T-REX loss on the same pairs); the "
        "reward is their mean and the members' disagreement on test-demo returns is "
        "reported (ensemble_spread); 1 = a single network",
    ),
    "batch_size": dict(
        default=1,
        type=positive_int,
        help="snippet pairs per optimizer step (the original project's 1: as good as or "
        "better than batches at equal pairs, docs/results/optimizer.md); every distinct "
        "frame of a batch goes through the network once",
    ),
    "lr_scaling": dict(
        default="sqrt",
        choices=LR_SCALINGS,
        help="sqrt: Adam's step size is lr * sqrt(batch_size) (square-root scaling rule, "
        "Malladi et al. 2022), so --lr keeps the original project's per-pair meaning; "
        "none: lr as given",
    ),
    "max_batch_frames": dict(
        default=256,
        type=positive_int,
        help="most distinct frames in one training pass (~0.9 MB of activations each for "
        "the upstream CNN, more for impala, K times that for an --ensemble of K); larger "
        "batches go through in groups of pairs, one pass each, with exact gradients (a "
        "single pair over it: in chunks, with one extra forward). "
        "256 (measured on 20 real starpilot demos: peak RSS 0.98 GB instead of 1.58 GB "
        "with 1024, at the same speed)",
    ),
}


def reward_flag(name: str, **changes: Any) -> Any:
    """The config field of the shared reward flag ``name`` (:data:`_REWARD_FLAGS`), with
    ``changes`` (e.g. another default) applied."""
    return flag(**{**_REWARD_FLAGS[name], **changes})


def check_plain_name(flag_name: str, value: str | None) -> None:
    """UserError unless ``value`` is None or a plain file-name part (no path separator)."""
    require(
        value is None or (bool(value) and not any(c in value for c in "/\\")),
        f"--{flag_name} must be a plain name, got {value!r}",
    )


@dataclasses.dataclass
class TrainRewardConfig(Config):
    """Everything a ``train_reward`` run takes (its flags, with the original project's
    names and defaults). ``seed=None`` draws a random 7-digit seed when the run starts."""

    env_name: str = flag("fruitbot", help=None)
    distribution_mode: str = flag(
        "easy", help=None, choices=["easy", "hard", "exploration", "memory", "extreme"]
    )
    seed: int | None = flag(
        None,
        type=nonnegative_int,
        help="random seed (default: a random 7-digit seed); the rm_id is derived from it",
    )
    sequential: int = flag(
        0,
        type=nonnegative_int,
        help="use demos with this 'sequential' value (0 = not sequential)",
    )
    num_dems: int = flag(12, type=positive_int, help="number of demonstrations to train on")
    max_return: float = flag(
        1.0,
        type=positive_float,
        help="maximum return of the chosen demos as a fraction of the available return range",
    )
    num_snippets: int = flag(
        50000, type=positive_int, help="number of training snippet pairs to sample"
    )
    min_snippet_length: int = flag(
        20, type=positive_int, help="min length of a snippet (demos must be longer)"
    )
    max_snippet_length: int = flag(100, type=positive_int, help="max length of a snippet")
    epoch_size: int = flag(1000, type=positive_int, help="training pairs between two evaluations")
    max_num_epochs: int = flag(50, type=positive_int, help="maximum number of epochs")
    patience: int = flag(
        10,
        type=positive_int,
        help="early stopping patience (epochs without a better --select_by score)",
    )
    select_by: str = flag(
        "val_acc",
        help="which epoch's weights are kept: val_acc (the best validation accuracy, as "
        "upstream), val_loss (the lowest validation loss: a smoother score than accuracy "
        "on a few validation demos), or last (no early stopping; the final epoch)",
    )
    lr: float = reward_flag("lr")
    lam_l1: float = reward_flag("lam_l1")
    weight_decay: float = reward_flag("weight_decay")
    output_abs: bool = reward_flag("output_abs")
    use_snippet_rewards: bool = flag(
        False, help="label pairs by the snippets' true rewards instead of the demos' returns"
    )
    use_clip_heuristic: bool = flag(
        True, help="the better demo's snippet starts no earlier than the worse one's"
    )
    # variants of the network and its input (the defaults are the original project's)
    frame_stack: int = reward_flag("frame_stack")
    scale_frames: bool = reward_flag("scale_frames")
    augment: str = reward_flag("augment")
    architecture: str = reward_flag("architecture")
    ensemble: int = reward_flag("ensemble")
    rank_by: str = flag(
        "return",
        choices=RANK_BY,
        help="what ranks the demos: their true return (T-REX), or reward-free (D-REX, "
        "Brown et al. 2019): less epsilon-greedy noise is better (noise), more "
        "demonstrator training steps are better (checkpoint); then the true reward "
        "of the training demos is never read",
    )
    start_level: int | None = flag(
        None,
        type=nonnegative_int,
        help="use training demos of the level pool starting here (default: any)",
    )
    num_levels: int | None = flag(
        None,
        type=nonnegative_int,
        help="use training demos of a pool of this many levels (default: any)",
    )
    use_backgrounds: bool | None = flag(
        None,
        help="use training demos recorded with (true) or without (false) backgrounds; "
        "test demos must match (default: any)",
    )
    mix_pools: bool = flag(
        False, help="allow training demos from several level pools (refused by default)"
    )
    window: int = flag(
        50, type=positive_int, help="frames per window of the fixed-window correlation"
    )
    num_bootstrap: int = flag(
        1000,
        type=positive_int,
        help="bootstrap resamples (over test demos) for the 95%% intervals",
    )
    log_dir: str = flag("LOGS/RM_LOGS", help="training logs directory")
    demo_csv: list[str] = flag(["demos/demo_infos.csv"], help="demo index CSV(s) (combined)")
    save_dir: str = flag("reward_models", help="where the models and rm_infos CSV go")
    save_name: str | None = flag(
        None, help="suffix: rm_infos_<save_name>.csv and model_files_<save_name>/"
    )
    # ours (not upstream)
    batch_size: int = reward_flag("batch_size")
    lr_scaling: str = reward_flag("lr_scaling")
    max_batch_frames: int = reward_flag("max_batch_frames")
    num_val_snippets: int = flag(1000, type=positive_int, help="validation pairs (upstream: 1000)")
    num_test_snippets: int = flag(1000, type=positive_int, help="test pairs (upstream: 1000)")
    max_test_demos: int = flag(
        100,
        type=positive_int,
        help="test demos evaluated every epoch (a random subset; upstream: the first 100); "
        "the final correlations use all test demos",
    )
    precision: str = flag(
        "auto",
        choices=PRECISION_CHOICES,
        help="auto/bf16: channels_last + bf16 autocast where the hardware has it "
        "(the fast path); fp32: plain fp32",
    )
    device: str = flag("auto", help="auto (CUDA when available), cpu, cuda, cuda:1 ...")
    overwrite: bool = flag(False, help="replace an existing model file with the same rm_id")

    def check(self) -> None:
        """UserError (one line, naming the flag) for any bad value or combination."""
        from trex.common.envs import check_env_name

        super().check()
        self.check_flags()
        check_env_name(self.env_name)
        check_plain_name("save_name", self.save_name)
        require(
            not (self.use_snippet_rewards and self.rank_by != "return"),
            "--use_snippet_rewards labels pairs by the true reward: it needs --rank_by return",
        )
        self.trex_config().check()  # snippet lengths, penalties, the network variant
        self.demo_spec().check()

    def trex_config(self) -> TrexConfig:
        """The training settings (:class:`~trex.reward.trex.TrexConfig`): the fields of the
        same names; the rest keep TrexConfig's defaults."""
        return TrexConfig(**_same_named(self, TrexConfig))

    def demo_spec(self) -> DemoSpec:
        """Which demos the run learns from and is tested on
        (:class:`~trex.reward.demo_choice.DemoSpec`); demos must be longer than a snippet."""
        return DemoSpec(**_same_named(self, DemoSpec), min_length=self.min_snippet_length + 1)

    def identity(self) -> dict[str, Any]:
        """The values that decide which model a run makes (all but :data:`NOT_IDENTITY`)."""
        return {k: v for k, v in self.to_dict().items() if k not in NOT_IDENTITY}


@dataclasses.dataclass
class EvalRewardConfig(Config):
    """Everything an ``eval_reward`` run takes: the models, the demo set, the metrics'
    settings and where the rows go."""

    rm_id: list[str] = flag([], help="reward model id(s), looked up in --reward_csv")
    reward_csv: str = flag("reward_models/rm_infos.csv", help="rm_infos CSV for --rm_id")
    reward_model: list[str] = flag([], help="reward model .safetensors file(s)")
    demo_csv: list[str] = flag(["demos/demo_infos.csv"], help="demo index CSV(s)")
    env_name: str | None = flag(None, help="game of the demos (default: the models')")
    distribution_mode: str | None = flag(None, help="mode of the demos (default: the models')")
    sequential: int = flag(0, type=nonnegative_int, help=None)
    set_name: str = flag(
        "test",
        choices=("train", "test"),
        help="evaluate on the index's test demos (unseen levels) or training demos",
    )
    start_level: int | None = flag(None, type=nonnegative_int, help="only demos of this pool start")
    num_levels: int | None = flag(None, type=nonnegative_int, help="only demos of pools this size")
    use_backgrounds: bool | None = flag(
        None, help="only demos recorded with (true) or without (false) backgrounds"
    )
    allow_reward_mismatch: bool = flag(
        False, help="evaluate models trained on another game or mode"
    )
    window: int = flag(50, type=positive_int, help="frames per window of the window metric")
    num_bootstrap: int = flag(1000, type=positive_int, help="bootstrap resamples over demos")
    seed: int = flag(0, type=nonnegative_int, help="seed of the bootstrap resamples")
    out: str = flag("reward_eval.csv", help="CSV the rows are appended to")
    precision: str = flag("auto", choices=PRECISION_CHOICES, help=None)
    device: str = flag("auto", help=None)

    def check(self) -> None:
        """UserError (one line) for a bad value, or no reward model given."""
        super().check()
        self.check_flags()
        require(
            bool(self.rm_id or self.reward_model),
            "give reward models with --rm_id and/or --reward_model",
        )


def _same_named(cfg: Config, cls: type) -> dict[str, Any]:
    """The values of ``cfg``'s fields that ``cls`` (a dataclass) has a field of the name of."""
    names = {f.name for f in dataclasses.fields(cls)} & {f.name for f in dataclasses.fields(cfg)}
    return {name: getattr(cfg, name) for name in names}
