"""The options of ``gen_demos`` as one dataclass: a field is a flag of the stage
(:mod:`trex.common.config`), and the same object is what the library takes::

    from trex.demos import GenDemosConfig, collect_demos

    result = collect_demos(GenDemosConfig(env_name="starpilot", policy="random", num_dems=20))
    result.rows, result.csv_path

Importing this module imports neither torch nor the environments.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import TYPE_CHECKING

from trex.common.cli import nonnegative_int, positive_int, str2bool
from trex.common.config import Config, flag, require
from trex.demos.planning import RANDOM_POLICY

if TYPE_CHECKING:
    from trex.demos.generation import CollectConfig

#: the policy name that means a uniformly random policy (``--policy random``)
#: options that do not change which demos a run makes (where they go, how fast, how verbose):
#: left out of the run key
NOT_IN_RUN_KEY: frozenset[str] = frozenset(
    {"config", "progress", "device", "precision", "num_envs", "log_dir", "name"}
)


@dataclasses.dataclass
class GenDemosConfig(Config):
    """Everything a ``gen_demos`` run takes. One of ``models_dir`` (a train_policy
    checkpoint directory), ``policy`` (one checkpoint, or ``random``) must be given;
    ``seed=None`` draws a random seed when the run starts."""

    env_name: str = flag("starpilot", help=None)
    distribution_mode: str = flag("easy", help=None)
    test_set: bool = flag(
        False, help="demos from the unseen test levels [1e9, 2e9) instead of [0, 1e9)"
    )
    start_level: int | None = flag(
        None,
        type=nonnegative_int,
        help="first level of the pool (default: 0, or 1e9 with --test_set)",
    )
    num_levels: int | None = flag(
        None,
        type=nonnegative_int,
        help="pool size: demos are drawn from [start_level, start_level + num_levels), "
        "several per level allowed (default: the rest of the training / test range)",
    )
    num_dems: int = flag(100, type=positive_int, help="number of demos to collect")
    max_ep_len: int = flag(
        1000,
        type=positive_int,
        help="cut episodes at this length (kept, with done=False in the index)",
    )
    models_dir: str | None = flag(
        None,
        help="checkpoint directory written by train_policy (its checkpoints.csv); "
        "checkpoints are chosen so the demos spread over the skill range",
    )
    policy: str | None = flag(
        None,
        help="'random' for a uniformly random policy, or one checkpoint (.zip or .safetensors) "
        "(instead of --models_dir)",
    )
    noise: list[float] | None = flag(
        None,
        type=float,
        nargs="+",
        metavar="EPS",
        help="epsilon-greedy noise levels (D-REX); demos split evenly over them (default 0 = none)",
    )
    sequential: int = flag(
        0,
        type=nonnegative_int,
        help="nonzero: procgen's sequential levels (finishing a level continues to "
        "the next instead of ending the episode); the value is recorded",
    )
    use_backgrounds: bool = flag(True, help=None)
    num_envs: int = flag(
        64,
        type=positive_int,
        help="environments stepped in parallel, one batched policy forward per step",
    )
    deterministic: bool = flag(
        False,
        type=str2bool,
        help="take the policy's most likely action instead of sampling",
    )
    log_dir: str = flag("demos", help="where the index CSV and demo files go")
    name: str | None = flag(
        None,
        help="name of this batch of demos: demo_infos_<name>.csv and demo_files_<name>/",
    )
    seed: int | None = flag(
        None,
        type=nonnegative_int,
        help="seeds policy sampling, noise and the levels (default: a random seed, recorded)",
    )
    precision: str = flag("auto", choices=("auto", "bf16", "fp32"), help=None)
    device: str = flag("auto", help=None)
    progress: bool = flag(True, help="show a progress bar")

    def check(self) -> None:
        """UserError (one line, naming the flag) for any bad value or combination."""
        from trex.common.envs import check_distribution_mode, check_env_name
        from trex.demos.planning import check_noise

        super().check()
        self.check_flags()
        check_env_name(self.env_name)
        check_distribution_mode(self.distribution_mode)
        require(
            self.name is None or (bool(self.name) and not any(c in self.name for c in "/\\")),
            f"--name must be a plain name, got {self.name!r}",
        )
        require(
            self.policy is None or self.models_dir is None,
            "give either --models_dir or --policy, not both",
        )
        require(
            not (self.policy == RANDOM_POLICY and self.noise is not None),
            "--noise does not apply to --policy random (its demos are recorded with noise 1.0)",
        )
        require(
            self.policy is not None or self.models_dir is not None,
            "give --models_dir (a train_policy checkpoint directory), --policy CKPT.zip "
            "or --policy random",
        )
        if self.noise is not None:
            check_noise(self.noise)
        self.collect_config().pool()  # the level pool lies inside its range

    @property
    def noise_levels(self) -> list[float]:
        """The epsilons the demos are split over (``[0.0]`` when ``noise`` is not given)."""
        return [float(e) for e in self.noise] if self.noise is not None else [0.0]

    def collect_config(self, seed: int | None = None) -> CollectConfig:
        """The environment and acting settings (:class:`~trex.demos.generation.CollectConfig`):
        the fields of the same names, with ``seed`` (default: this config's, or 0)."""
        from trex.demos.generation import CollectConfig

        names = {f.name for f in dataclasses.fields(CollectConfig)} - {"seed"}
        seed = seed if seed is not None else self.seed
        return CollectConfig(
            **{n: getattr(self, n) for n in names}, seed=0 if seed is None else int(seed)
        )

    def run_key(self) -> str:
        """A hash of the values that decide which demos a run makes (not where they go, how
        fast or how verbosely): the same run retried gets the same key."""
        chosen = {k: v for k, v in sorted(self.to_dict().items()) if k not in NOT_IN_RUN_KEY}
        text = json.dumps(chosen, sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()[:12]
