"""Procgen environments as stable-baselines3 vectorised environments.

procgen's own API is gym3 (``ProcgenGym3Env``): one object steps ``num`` environments,
auto-resets each when its episode ends, and marks the first observation of an episode with
``first=True``; the reward observed together with ``first=True`` belongs to the last step of
the episode that just ended. :class:`ProcgenVecEnv` turns that into SB3's ``VecEnv`` with
gymnasium spaces (SB3's own Procgen example is broken with gymnasium spaces).

Level ranges (DESIGN.md): training demos come from levels [0, 1e9), test demos from
[1e9, 2e9), so the two never share a level.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvStepReturn

from trex.common.errors import UserError

log = logging.getLogger(__name__)

ENV_NAMES: tuple[str, ...] = (
    "bigfish",
    "bossfight",
    "caveflyer",
    "chaser",
    "climber",
    "coinrun",
    "dodgeball",
    "fruitbot",
    "heist",
    "jumper",
    "leaper",
    "maze",
    "miner",
    "ninja",
    "plunder",
    "starpilot",
)
DISTRIBUTION_MODES: tuple[str, ...] = ("easy", "hard", "extreme", "memory", "exploration")
NUM_ACTIONS = 15
OBS_SHAPE_HWC = (64, 64, 3)

#: [start, start + count) of the levels training demos come from
TRAIN_LEVELS: tuple[int, int] = (0, 1_000_000_000)
#: [start, start + count) of the unseen levels test demos and test_policy's "test" set use
TEST_LEVELS: tuple[int, int] = (1_000_000_000, 1_000_000_000)


def check_env_name(env_name: str) -> str:
    """Return ``env_name`` or raise UserError listing the valid Procgen games."""
    if env_name not in ENV_NAMES:
        raise UserError(f"unknown env_name {env_name!r}; valid: {', '.join(ENV_NAMES)}")
    return env_name


def check_distribution_mode(mode: str) -> str:
    """Return ``mode`` or raise UserError listing the valid distribution modes."""
    if mode not in DISTRIBUTION_MODES:
        raise UserError(
            f"unknown distribution_mode {mode!r}; valid: {', '.join(DISTRIBUTION_MODES)}"
        )
    return mode


def level_range(test_set: bool) -> tuple[int, int]:
    """(start_level, num_levels) of the training or the unseen test level range."""
    return TEST_LEVELS if test_set else TRAIN_LEVELS


def level_pool(
    start_level: int | None, num_levels: int | None, test_set: bool = False
) -> tuple[int, int]:
    """(start_level, num_levels) of a level pool, checked to lie inside the training range
    [0, 1e9) (or, with ``test_set``, inside the unseen test range [1e9, 2e9)).

    ``start_level=None`` is the range's first level; ``num_levels=None`` the rest of the range
    from ``start_level``. Procgen's ``num_levels=0`` (unbounded: it covers both ranges) is
    refused, so a policy, a demo set or a reward model "for training" never sees a test level
    (procgen's protocol, Cobbe et al. 2020, arXiv 1912.01588: train on a pool of N levels,
    test on levels outside it).
    """
    first, count = TEST_LEVELS if test_set else TRAIN_LEVELS
    end = first + count
    what = "test" if test_set else "training"
    start_level = first if start_level is None else int(start_level)
    if num_levels is None:
        num_levels = end - start_level
    if num_levels == 0:
        raise UserError(
            f"num_levels 0 is procgen's unbounded range, which mixes the training levels "
            f"[{TRAIN_LEVELS[0]}, {sum(TRAIN_LEVELS)}) and the unseen test levels "
            f"[{TEST_LEVELS[0]}, {sum(TEST_LEVELS)}); leave --num_levels out for the "
            f"whole {what} range [{first}, {end})"
        )
    if start_level < first or num_levels < 0 or start_level + num_levels > end:
        raise UserError(
            f"{what} level pool [{start_level}, {start_level + num_levels}) must lie inside "
            f"the {what} range [{first}, {end})"
        )
    return start_level, int(num_levels)


def training_pool(start_level: int, num_levels: int | None) -> tuple[int, int]:
    """:func:`level_pool` inside the training range [0, 1e9)."""
    return level_pool(start_level, num_levels, test_set=False)


def _import_procgen():
    # procgen imports the unmaintained `gym`, whose import prints a multi-line notice to
    # stderr; it says nothing about this toolkit (we use gymnasium), so keep it quiet.
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        from procgen import ProcgenGym3Env
    return ProcgenGym3Env


class ProcgenVecEnv(VecEnv):
    """``num_envs`` Procgen games stepped together, as an SB3 ``VecEnv``.

    Observations are uint8 ``(num_envs, 3, 64, 64)`` (channel-first, what SB3's CNN
    policies expect; a view of procgen's HWC frames, which :attr:`last_rgb` keeps as
    ``(num_envs, 64, 64, 3)``). Actions are ints in [0, 15). Episodes auto-reset: a step
    that ends an episode returns ``done=True`` and the first observation of the next one.

    Infos (one dict per env, every step): ``level_seed`` of the episode the step belongs
    to; on the step that ends an episode also ``episode = {"r": return, "l": length}``
    (SB3's Monitor convention, so SB3 logs ``ep_rew_mean``) and ``level_complete``.
    """

    def __init__(
        self,
        env_name: str,
        num_envs: int,
        distribution_mode: str = "easy",
        start_level: int = 0,
        num_levels: int = 0,
        use_sequential_levels: bool = False,
        use_backgrounds: bool = True,
        seed: int = 0,
    ) -> None:
        check_env_name(env_name)
        check_distribution_mode(distribution_mode)
        if num_envs <= 0:
            raise UserError(f"num_envs must be positive, got {num_envs}")
        if start_level < 0 or num_levels < 0:
            raise UserError(
                f"start_level and num_levels must be >= 0, got {start_level}, {num_levels}"
            )
        if start_level + num_levels > 2**31 - 1:
            raise UserError("start_level + num_levels must stay below 2**31")
        self.env_name = env_name
        self.distribution_mode = distribution_mode
        self.start_level = int(start_level)
        self.num_levels = int(num_levels)
        self.use_sequential_levels = bool(use_sequential_levels)
        self.use_backgrounds = bool(use_backgrounds)
        self.render_mode = "rgb_array"
        self._base_seed = int(seed)
        self._generation = 0
        self._env: Any = None
        self._fresh = False
        super().__init__(
            num_envs,
            spaces.Box(0, 255, (3, 64, 64), np.uint8),
            spaces.Discrete(NUM_ACTIONS),
        )
        self._make(self._base_seed)
        self._actions: np.ndarray | None = None

    # -- gym3 plumbing ---------------------------------------------------------------------

    def _make(self, rand_seed: int) -> None:
        ProcgenGym3Env = _import_procgen()
        if self._env is not None:
            self._env.close() if hasattr(self._env, "close") else None
        self._env = ProcgenGym3Env(
            num=self.num_envs,
            env_name=self.env_name,
            distribution_mode=self.distribution_mode,
            start_level=self.start_level,
            num_levels=self.num_levels,
            use_sequential_levels=self.use_sequential_levels,
            use_backgrounds=self.use_backgrounds,
            rand_seed=int(rand_seed) % 2**31,
        )
        _, ob, _ = self._env.observe()
        self.last_rgb: np.ndarray = ob["rgb"]
        infos = self._env.get_info()
        self._level_seeds = np.array([int(i["level_seed"]) for i in infos], dtype=np.int64)
        self._ep_returns = np.zeros(self.num_envs, dtype=np.float64)
        self._ep_lengths = np.zeros(self.num_envs, dtype=np.int64)
        self._fresh = True

    @property
    def level_seeds(self) -> np.ndarray:
        """int64 (num_envs,): the level each environment is playing now."""
        return self._level_seeds.copy()

    # -- VecEnv API ------------------------------------------------------------------------

    def reset(self) -> np.ndarray:
        """Start every environment on a new episode; returns obs (num_envs, 3, 64, 64).

        The first reset after construction returns the environments' first observations
        (so the same seed gives the same first observations); later resets rebuild the
        environments with the next seed (or the one given to :meth:`seed`).
        """
        if self._seeds[0] is not None:
            self._base_seed = int(self._seeds[0])
            self._generation = 0
            self._make(self._base_seed)
            self._reset_seeds()
        elif not self._fresh:
            self._generation += 1
            self._make(self._base_seed + 1_000_003 * self._generation)
        self._fresh = False
        self.reset_infos = [{"level_seed": int(s)} for s in self._level_seeds]
        return self._obs_chw(self.last_rgb)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs).astype(np.int32)

    def step_wait(self) -> VecEnvStepReturn:
        assert self._actions is not None, "step_async must come before step_wait"
        self._fresh = False
        self._env.act(self._actions)
        rew, ob, first = self._env.observe()
        raw_infos = self._env.get_info()
        rewards = np.asarray(rew, dtype=np.float32)
        dones = np.asarray(first, dtype=bool)
        self._ep_returns += rewards
        self._ep_lengths += 1
        infos: list[dict[str, Any]] = []
        for i in range(self.num_envs):
            info: dict[str, Any] = {"level_seed": int(self._level_seeds[i])}
            if dones[i]:
                info["episode"] = {"r": float(self._ep_returns[i]), "l": int(self._ep_lengths[i])}
                info["level_complete"] = bool(raw_infos[i].get("prev_level_complete", 0))
                info["TimeLimit.truncated"] = False
            infos.append(info)
        if dones.any():
            self._ep_returns[dones] = 0.0
            self._ep_lengths[dones] = 0
            self._level_seeds[dones] = [
                int(raw_infos[i]["level_seed"]) for i in np.flatnonzero(dones)
            ]
        self.last_rgb = ob["rgb"]
        self._actions = None
        return self._obs_chw(self.last_rgb), rewards, dones, infos

    @staticmethod
    def _obs_chw(rgb: np.ndarray) -> np.ndarray:
        return rgb.transpose(0, 3, 1, 2)

    def close(self) -> None:
        self._env = None

    def get_images(self) -> Sequence[np.ndarray | None]:
        """The current frames, HWC uint8 (64, 64, 3) each."""
        return [self.last_rgb[i] for i in range(self.num_envs)]

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        return [getattr(self, attr_name)] * len(self._get_indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        setattr(self, attr_name, value)

    def env_method(
        self, method_name: str, *method_args, indices=None, **method_kwargs
    ) -> list[Any]:
        method = getattr(self, method_name)
        return [method(*method_args, **method_kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False] * len(self._get_indices(indices))

    def _get_indices(self, indices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices)


def make_procgen_env(
    env_name: str,
    num_envs: int,
    distribution_mode: str = "easy",
    start_level: int = 0,
    num_levels: int = 0,
    use_sequential_levels: bool = False,
    use_backgrounds: bool = True,
    seed: int = 0,
) -> ProcgenVecEnv:
    """Build ``num_envs`` Procgen games on levels [start_level, start_level + num_levels)
    (``num_levels=0``: unbounded) as an SB3 ``VecEnv``; see :class:`ProcgenVecEnv`."""
    return ProcgenVecEnv(
        env_name,
        num_envs,
        distribution_mode,
        start_level,
        num_levels,
        use_sequential_levels,
        use_backgrounds,
        seed,
    )
