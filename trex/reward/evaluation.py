"""Evaluating saved reward models on a demo set: ``eval_reward`` from Python.

:func:`evaluate_reward_files` takes an :class:`~trex.reward.config.EvalRewardConfig`
(which models, which demos), loads the models, picks the demos and returns one metrics row
per model (:func:`evaluate_reward_models` does the measuring) and the
models' pairwise agreement. It writes nothing; the stage appends the rows to ``--out``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trex.common.errors import UserError
from trex.demos.store import POOL_COLUMNS, DemoIndex
from trex.reward.config import EvalRewardConfig
from trex.reward.metrics import DEFAULT_WINDOW, NUM_BOOTSTRAP, model_agreement, reward_metrics

log = logging.getLogger(__name__)

#: the columns of an evaluation row the stage prints
SUMMARY_COLUMNS: tuple[str, ...] = (
    "rm_id",
    "pearson",
    "baseline_pearson",
    "partial",
    "partial_lo",
    "partial_hi",
    "window_pearson",
    "n_demos",
)


@dataclass
class RewardEvaluation:
    """What :func:`evaluate_reward_files` returns.

    Attributes:
        rows: one row per model: what the model is (rm_id, model_file, env_name, mode,
            num_dems, rank_by, num_levels), which demos (demo_csv, set_name, demo_env,
            demo_mode, demo_pools, eval_seed), then every metric of
            :func:`trex.reward.metrics.reward_metrics`.
        agreement: with two models or more, :func:`trex.reward.metrics.model_agreement`
            (``distance`` float (K, K), ``mean_distance`` and its ``_lo``/``_hi``); else empty.
        index: the demos evaluated on.
    """

    rows: list[dict[str, Any]]
    agreement: dict[str, Any] = field(default_factory=dict)
    index: DemoIndex | None = None

    @property
    def table(self) -> pd.DataFrame:
        """The rows as a table."""
        return pd.DataFrame(self.rows)

    def agreement_pairs(self) -> pd.DataFrame:
        """One row per pair of models: rm_id_a, rm_id_b, distance (EPIC Pearson distance)."""
        names = [r["rm_id"] for r in self.rows]
        return pd.DataFrame(
            [
                {
                    "rm_id_a": names[i],
                    "rm_id_b": names[j],
                    "distance": float(self.agreement["distance"][i, j]),
                }
                for i in range(len(names))
                for j in range(i + 1, len(names))
            ],
            columns=["rm_id_a", "rm_id_b", "distance"],
        )


def select_eval_demos(cfg: EvalRewardConfig, env_name: str, mode: str) -> DemoIndex:
    """The demos of ``cfg.demo_csv`` to evaluate on: ``cfg.set_name`` demos of the game and
    mode, of ``cfg.sequential``, of the pool filters that are set; UserError for fewer than 2."""
    index = DemoIndex.read(cfg.demo_csv).filter(
        env_name=env_name, mode=mode, set_name=cfg.set_name, sequential=cfg.sequential
    )
    df = index.df
    for col in POOL_COLUMNS:
        want = getattr(cfg, col)
        if want is not None:
            df = df[df[col] == want]
    if len(df) < 2:
        raise UserError(
            f"fewer than 2 {cfg.set_name} demos of {env_name} {mode} match in "
            f"{', '.join(cfg.demo_csv)}"
        )
    return DemoIndex(df, index.sources)


def evaluate_reward_files(cfg: EvalRewardConfig) -> RewardEvaluation:
    """Evaluate the reward models of ``cfg`` (``rm_id`` looked up in ``reward_csv``, and
    ``reward_model`` files) on the demo set of ``cfg``. The demos' game and mode default to
    the first model's; a model of another game or mode is refused unless
    ``allow_reward_mismatch``. UserError (one line) for bad input."""
    from trex.reward.model_file import load_reward_function
    from trex.reward.registry import resolve_reward_model

    cfg.check()
    paths = [resolve_reward_model(r, cfg.reward_csv) for r in cfg.rm_id]
    paths += [resolve_reward_model(r) for r in cfg.reward_model]
    fns = [load_reward_function(p, device=cfg.device, precision=cfg.precision) for p in paths]
    env_name = cfg.env_name or fns[0].meta.get("env_name")
    mode = cfg.distribution_mode or fns[0].meta.get("mode")
    if not cfg.allow_reward_mismatch:
        for fn, path in zip(fns, paths):
            if (fn.meta.get("env_name"), fn.meta.get("mode")) != (env_name, mode):
                raise UserError(
                    f"reward model {path} was trained on {fn.meta.get('env_name')} "
                    f"{fn.meta.get('mode')}, the demos are {env_name} {mode} "
                    f"(--allow_reward_mismatch to evaluate it anyway)"
                )
    index = select_eval_demos(cfg, env_name, mode)
    df = index.df
    log.info(
        "evaluating %d reward model(s) on %d %s demos of %s %s (%d frames)",
        len(fns),
        len(index),
        cfg.set_name,
        env_name,
        mode,
        int(df["length"].sum()),
    )
    metrics, agreement = evaluate_reward_models(
        fns, index, index.ids(), cfg.window, cfg.num_bootstrap, cfg.seed
    )
    pools = sorted(
        {
            (int(s), int(n), bool(b))
            for s, n, b in zip(df["start_level"], df["num_levels"], df["use_backgrounds"])
        }
    )
    demo_set = {
        "demo_csv": " ".join(cfg.demo_csv),
        "set_name": cfg.set_name,
        "demo_env": env_name,
        "demo_mode": mode,
        "demo_pools": " ".join(f"{s}+{n}{'' if b else ':nobg'}" for s, n, b in pools),
        "eval_seed": cfg.seed,
    }
    rows = [
        {
            "rm_id": fn.rm_id or Path(path).stem,
            "model_file": str(path),
            "env_name": fn.meta.get("env_name"),
            "mode": fn.meta.get("mode"),
            "num_dems": fn.meta.get("num_dems"),
            "rank_by": fn.meta.get("rank_by", "return"),
            "num_levels": fn.meta.get("num_levels", ""),
            **demo_set,
            **m,
        }
        for fn, path, m in zip(fns, paths, metrics)
    ]
    return RewardEvaluation(rows, agreement, index)


def frame_predictions(
    reward_fns: Sequence[Callable[[np.ndarray], np.ndarray]],
    index: DemoIndex,
    ids: Iterable[str],
    in_memory: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    desc: str = "evaluating demos",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame rewards of K reward functions on demos, each demo read once:
    (predicted float32 (K, F), true float32 (F,), offsets int64 (n + 1,)).

    ``in_memory`` maps demo ids already loaded to (frames (T, 64, 64, 3), rewards (T,)).
    """
    from tqdm import tqdm

    ids = list(ids)
    in_memory = in_memory or {}
    preds: list[list[np.ndarray]] = [[] for _ in reward_fns]
    true: list[np.ndarray] = []
    lengths: list[int] = []
    for demo_id in tqdm(ids, desc=desc, leave=False, disable=None):
        if demo_id in in_memory:
            frames, rewards = in_memory[demo_id]
        else:
            demo = index.load(demo_id)
            frames, rewards = demo.observations, demo.rewards
        for k, fn in enumerate(reward_fns):
            preds[k].append(np.asarray(fn(frames), dtype=np.float32))
        true.append(np.asarray(rewards, dtype=np.float32))
        lengths.append(len(rewards))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    pred = np.stack([np.concatenate(p) if p else np.zeros(0, np.float32) for p in preds])
    return pred, (np.concatenate(true) if true else np.zeros(0, np.float32)), offsets


def evaluate_reward_models(
    reward_fns: Sequence[Callable[[np.ndarray], np.ndarray]],
    index: DemoIndex,
    ids: Sequence[str],
    window: int = DEFAULT_WINDOW,
    num_bootstrap: int = NUM_BOOTSTRAP,
    seed: int = 0,
) -> tuple[list[dict[str, float]], dict[str, Any]]:
    """Every metric for each of K reward functions on the demos ``ids`` of ``index``, and
    their agreement; each demo is read once.

    Args:
        reward_fns: K functions from uint8 frames (T, 64, 64, 3) of one demo to per-frame
            rewards float (T,) (e.g. :func:`trex.reward.model_file.load_reward_function`).
        index, ids: the demos (at least 2).
        window, num_bootstrap, seed: the window metric's frames per window, the bootstrap
            resamples over demos and their seed.

    Returns:
        (K metrics dicts, agreement): metrics as :func:`trex.reward.metrics.reward_metrics`
        (``pearson``, ``spearman``, ``baseline_*``, ``partial``, ``window_pearson``, each with
        ``_lo``/``_hi``, and ``n_demos``, ``n_windows``, ``window``); agreement, for K >= 2,
        :func:`trex.reward.metrics.model_agreement` (``distance`` float (K, K) EPIC Pearson
        distances, ``mean_distance`` with ``_lo``/``_hi``), else empty.
    """
    if len(ids) < 2:
        raise UserError(f"need at least 2 demos to evaluate on, got {len(ids)}")
    preds, true, offsets = frame_predictions(reward_fns, index, ids)
    rows = [reward_metrics(p, true, offsets, window, num_bootstrap, seed) for p in preds]
    agreement = model_agreement(preds, offsets, num_bootstrap, seed) if len(reward_fns) > 1 else {}
    return rows, agreement
