"""Which demos a reward model learns from: the training demos of one level pool (refusing to
mix pools silently), ranked by their true return or, reward-free (D-REX, Brown et al. 2019,
arXiv 1907.03976), by the demonstrator's noise level or checkpoint age; ``num_dems`` of them
spread over the ranking (the original project's selection), split 80/20 into training and
validation demos; and the held-out test demos."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from trex.common.errors import UserError
from trex.demos.store import POOL_COLUMNS, DemoIndex
from trex.reward.pairs import DemoSet, check_pairable, select_demos, split_train_val

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

#: what T-REX can rank demos by: the true return (T-REX), or reward-free (D-REX): less
#: epsilon-greedy noise is better, more training steps of the demonstrator are better
RANK_BY: tuple[str, ...] = ("return", "noise", "checkpoint")


@dataclass
class DemoSpec:
    """Which demos a run learns from and is tested on."""

    demo_csv: Sequence[str]
    env_name: str
    distribution_mode: str = "easy"
    sequential: int = 0
    num_dems: int = 12
    max_return: float = 1.0
    rank_by: str = "return"
    min_length: int = 21
    #: training pool filters (None = any); demos of several pools are refused unless mix_pools
    start_level: int | None = None
    num_levels: int | None = None
    use_backgrounds: bool | None = None
    mix_pools: bool = False
    max_test_demos: int = 100

    def check(self) -> None:
        """UserError for an unknown ranking."""
        if self.rank_by not in RANK_BY:
            raise UserError(f"--rank_by must be one of {', '.join(RANK_BY)}, got {self.rank_by!r}")


@dataclass
class DemoChoice:
    """The demos of a run: the chosen training demos (selection order) and the test demos."""

    train_index: DemoIndex
    chosen_ids: list[str]
    rank_keys: np.ndarray
    test_index: DemoIndex
    epoch_test_ids: list[str]
    pool: dict[str, Any] = field(default_factory=dict)

    def split(self) -> tuple[np.ndarray, np.ndarray]:
        """(training, validation) positions into ``chosen_ids`` (the original project's 80/20,
        stratified)."""
        return split_train_val(self.rank_keys)

    def load(self, rank_by: str = "return") -> tuple[DemoSet, DemoSet]:
        """(chosen training demos, per-epoch test demos) read into memory; the training demos
        carry the ranking keys unless ``rank_by`` is ``return``. UserError for a bad file."""
        demos = DemoSet.from_index(self.train_index, self.chosen_ids, desc="training demos")
        if rank_by != "return":
            demos.rank_keys = self.rank_keys
        test = DemoSet.from_index(self.test_index, self.epoch_test_ids, desc="test demos")
        return demos, test

    @property
    def train_ids(self) -> list[str]:
        return [self.chosen_ids[i] for i in self.split()[0]]

    @property
    def val_ids(self) -> list[str]:
        return [self.chosen_ids[i] for i in self.split()[1]]

    @property
    def n_train_levels(self) -> int:
        """Distinct levels behind the chosen training demos."""
        return int(
            self.train_index.df.set_index("demo_id").loc[self.chosen_ids, "level_seed"].nunique()
        )


def rank_keys(df: pd.DataFrame, rank_by: str) -> np.ndarray:
    """float64 (n,) keys to rank demo rows by (higher = better).

    ``return``: the true return; ``noise``: minus the epsilon the demo was recorded with
    (equal noise = a tie, never paired); ``checkpoint``: the demonstrator's training steps
    (``policy_timesteps``; the random policy is -1).
    """
    if rank_by == "return":
        return df["return"].to_numpy(dtype=np.float64)
    if rank_by == "noise":
        return -df["noise"].to_numpy(dtype=np.float64)
    if rank_by == "checkpoint":
        if "policy_timesteps" not in df.columns or df["policy_timesteps"].isna().any():
            raise UserError(
                "--rank_by checkpoint needs the policy_timesteps column of gen_demos' index"
            )
        return df["policy_timesteps"].to_numpy(dtype=np.float64)
    raise UserError(f"--rank_by must be one of {', '.join(RANK_BY)}, got {rank_by!r}")


def _pool_filter(index: DemoIndex, spec: DemoSpec) -> DemoIndex:
    df = index.df
    mask = np.ones(len(df), dtype=bool)
    for col in POOL_COLUMNS:
        want = getattr(spec, col)
        if want is not None:
            mask &= (df[col] == want).to_numpy()
    return DemoIndex(df[mask], index.sources)


def _describe_pools(df: pd.DataFrame) -> str:
    counts = df.groupby(POOL_COLUMNS).size()
    return "; ".join(
        f"[{s}, {s + n}) backgrounds {'on' if b else 'off'}: {c} demos"
        for (s, n, b), c in counts.items()
    )


def choose_demos(spec: DemoSpec, rng: np.random.Generator) -> DemoChoice:
    """Filter the index, check the pools, choose ``num_dems`` training demos spread over the
    ranking (the original project's 4-bin selection) and the test demos. UserError on bad input."""
    spec.check()
    index = DemoIndex.read(spec.demo_csv)
    where = f"{spec.env_name} {spec.distribution_mode} sequential={spec.sequential}"
    matching = index.filter(
        env_name=spec.env_name, mode=spec.distribution_mode, sequential=spec.sequential
    )
    train_all = matching.filter(set_name="train")
    train_idx = _pool_filter(train_all, spec).filter(min_length=spec.min_length)
    n_short = len(_pool_filter(train_all, spec)) - len(train_idx)
    if len(train_idx) == 0:
        pools = f" (pools there: {_describe_pools(train_all.df)})" if len(train_all) else ""
        raise UserError(
            f"no training demos for {where} in the chosen level pool longer than "
            f"{spec.min_length - 1} steps in {', '.join(spec.demo_csv)}{pools}"
        )
    n_pools = len(train_idx.df.groupby(POOL_COLUMNS))
    if n_pools > 1 and not spec.mix_pools:
        raise UserError(
            f"the training demos for {where} come from {n_pools} level pools "
            f"({_describe_pools(train_idx.df)}): choose one with --start_level, "
            f"--num_levels and --use_backgrounds, or pass --mix_pools"
        )
    backgrounds = sorted(set(train_idx.df["use_backgrounds"]))
    test_idx = matching.filter(set_name="test", min_length=spec.min_length)
    test_idx = DemoIndex(
        test_idx.df[test_idx.df["use_backgrounds"].isin(backgrounds)], test_idx.sources
    )
    log.info(
        "demos for %s: %d training in the pool (%d more too short), %d test; %d requested, "
        "ranked by %s",
        where,
        len(train_idx),
        n_short,
        len(test_idx),
        spec.num_dems,
        spec.rank_by,
    )
    if len(test_idx) < 2:
        raise UserError(
            f"need at least 2 test demos (set_name=test) for {where} longer than "
            f"{spec.min_length - 1} steps in {', '.join(spec.demo_csv)}, found "
            f"{len(test_idx)} (make them with trex-gen-demos --test_set)"
        )
    shared = set(train_idx.df["level_seed"]) & set(test_idx.df["level_seed"])
    if shared:
        raise UserError(
            f"{len(shared)} level(s) appear in both training and test demos (e.g. "
            f"{min(shared)}): test demos must come from unseen levels"
        )
    keys_all = rank_keys(train_idx.df, spec.rank_by)
    pos = select_demos(keys_all, spec.num_dems, spec.max_return, rng)
    chosen = [str(train_idx.df["demo_id"].iloc[i]) for i in pos]
    test_ids = test_idx.ids()
    epoch_pos = sorted(
        rng.choice(
            len(test_ids), size=min(spec.max_test_demos, len(test_ids)), replace=False
        ).tolist()
    )
    rows = train_idx.df.iloc[pos]
    pools = rows.groupby(POOL_COLUMNS).size()
    pool = (
        {
            "start_level": int(pools.index[0][0]),
            "num_levels": int(pools.index[0][1]),
            "use_backgrounds": bool(pools.index[0][2]),
        }
        if len(pools) == 1
        else {
            "start_level": -1,
            "num_levels": -1,
            "use_backgrounds": bool(rows["use_backgrounds"].all()),
        }
    )
    choice = DemoChoice(
        train_idx, chosen, keys_all[pos], test_idx, [test_ids[i] for i in epoch_pos], pool
    )
    train_pos, val_pos = choice.split()
    hint = " (use more --num_dems, or demos of more varied return)"
    check_pairable(choice.rank_keys[train_pos], "training", hint)
    check_pairable(choice.rank_keys[val_pos], "validation", hint)
    return choice
