"""One ``train_preferences`` run: resolve what it starts from (a fresh or T-REX-initialised
reward network, demo-seeded pairs, or its own last checkpoint), then PPO with the
:class:`~trex.preferences.loop.PreferenceLearner` until the step budget.

Restarting the same command continues a killed run from its last policy checkpoint: the
reward model, the optimiser and the counters of that checkpoint, the buffer rebuilt from the
round files up to it (later ones are deleted, their rounds asked again), progress rows past it
dropped.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trex.common.device import pick_device, use_bf16
from trex.common.errors import UserError
from trex.common.files import write_text_atomic
from trex.common.runs import seed_everything, write_run_config
from trex.preferences.buffer import (
    FRAME_BYTES,
    Comparisons,
    PreferenceBuffer,
    load_round,
    save_round,
)
from trex.preferences.config import TrainPreferencesConfig
from trex.preferences.fitting import load_optimizer
from trex.preferences.loop import MODEL_NAME, PREFS_DIR, LearnerState, PreferenceLearner
from trex.preferences.schedule import query_schedule
from trex.preferences.tags import reward_tag
from trex.reward.nets import RewardNet, prepare_net
from trex.reward.trex import step_lr

log = logging.getLogger(__name__)

#: config values that may differ when a run is continued (machine settings, the total)
RESUMABLE_CHANGES = frozenset({"num_threads", "device", "precision", "timesteps_per_proc"})
_ROUND = re.compile(r"round_(\d+)\.npz$")
_STEP_FILE = re.compile(r"(?:reward|optimizer|state)_(\d+)\.(?:safetensors|json)$")


def _latest_checkpoint(run_dir: Path) -> tuple[Path, int] | None:
    """(checkpoint, timesteps) of the run's manifest's latest, or None for a new run."""
    from trex.rl.checkpoints import MANIFEST_NAME, read_manifest

    if not (run_dir / MANIFEST_NAME).is_file():
        return None
    df = read_manifest(run_dir)
    last = df.sort_values("timesteps", kind="stable").iloc[-1]
    return run_dir / str(last["file"]), int(last["timesteps"])


def _check_same_run(cfg: TrainPreferencesConfig, run_dir: Path) -> None:
    """UserError unless the run in ``run_dir`` was started with the same settings."""
    path = run_dir / "config.json"
    try:
        before = json.loads(path.read_text())["args"]
    except (OSError, ValueError, KeyError):
        raise UserError(f"{run_dir} holds a run without a readable config.json") from None
    now = cfg.to_dict()
    defaults = TrainPreferencesConfig().to_dict()  # a flag added since: its default then
    changed = sorted(
        k for k in now if k not in RESUMABLE_CHANGES and before.get(k, defaults[k]) != now[k]
    )
    if changed:
        raise UserError(
            f"{run_dir} holds a run with other settings ({', '.join('--' + k for k in changed)});"
            " use the same flags to continue it, or another --log_name"
        )


def _clear_after(run_dir: Path, updates: int, timesteps: int) -> None:
    """Delete what a killed run wrote after its last checkpoint (all of it for a new run)."""
    prefs = run_dir / PREFS_DIR
    if prefs.is_dir():
        for f in prefs.iterdir():
            m = _ROUND.search(f.name) or _STEP_FILE.search(f.name)
            if m and int(m.group(1)) > (updates if f.name.startswith("round_") else timesteps):
                f.unlink()
    progress = run_dir / "progress.csv"
    if progress.is_file():
        import pandas as pd

        df = pd.read_csv(progress)
        kept = df[df["timesteps"] <= timesteps]
        if len(kept) < len(df):
            write_text_atomic(progress, kept.to_csv(index=False, lineterminator="\n"))
        if kept.empty:
            progress.unlink()


def _rebuild_buffer(run_dir: Path, capacity: int, updates: int) -> PreferenceBuffer:
    """The buffer as it was after round ``updates``: every round file up to it, in order."""
    buffer = PreferenceBuffer(capacity)
    files = sorted(
        (int(m.group(1)), f)
        for f in (run_dir / PREFS_DIR).glob("round_*.npz")
        if (m := _ROUND.search(f.name))
    )
    for u, f in files:
        if u <= updates:
            buffer.add(*load_round(f))
    return buffer


def _initial_net(cfg: TrainPreferencesConfig, device: torch.device) -> tuple[RewardNet, str]:
    """A fresh network of the flags' variant, or ``--init_reward``'s (and where it came from)."""
    if not cfg.init_reward:
        return prepare_net(cfg.trex_config().make_net(), device), ""
    from trex.reward.model_file import load_reward_model
    from trex.reward.registry import resolve_reward_model

    is_file = cfg.init_reward.endswith(".safetensors")
    path = resolve_reward_model(cfg.init_reward, None if is_file else cfg.reward_csv)
    net, meta = load_reward_model(path, device, env_name=cfg.env_name, mode=cfg.distribution_mode)
    log.info("refining %s (%s, ensemble of %d)", path, net.architecture, net.ensemble_size)
    if cfg.selection == "disagreement" and net.ensemble_size < 2:
        raise UserError(f"--selection disagreement needs an ensemble; {path} is one network")
    return net, str(path)


def _seed_demo_pairs(cfg: TrainPreferencesConfig, run_dir: Path, buffer: PreferenceBuffer) -> int:
    """Round 0: T-REX snippet pairs of ``num_dems`` ranked demos (the original project's
    selection over the return range), each demo's frames stored once. Returns the pairs."""
    from trex.demos.store import DemoIndex
    from trex.reward.pairs import DemoSet, sample_pairs, select_demos
    from trex.reward.trex import TrexConfig

    lengths = TrexConfig()
    index = DemoIndex.read(cfg.init_demos).filter(
        env_name=cfg.env_name, mode=cfg.distribution_mode, set_name="train"
    )
    index = index.filter(min_length=lengths.min_snippet_length + 1)
    if len(index) < cfg.num_dems:
        raise UserError(
            f"--init_demos: {cfg.num_dems} training demos of {cfg.env_name} "
            f"{cfg.distribution_mode} requested, {len(index)} found"
        )
    rng = np.random.default_rng([cfg.seed, 0, 3])
    pos = select_demos(index.df["return"].to_numpy(float), cfg.num_dems, 1.0, rng)
    demos = DemoSet.from_index(index, [str(index.df["demo_id"].iloc[i]) for i in pos])
    pairs = sample_pairs(
        demos,
        np.arange(len(demos)),
        cfg.init_pairs,
        lengths.min_snippet_length,
        lengths.max_snippet_length,
        rng,
    )
    segments = [demos.frames[a:b] for a, b in zip(demos.offsets[:-1], demos.offsets[1:])]
    comparisons = Comparisons(pairs.demo, pairs.start, pairs.length)
    save_round(run_dir / PREFS_DIR / "round_00000.npz", segments, comparisons)
    buffer.add(segments, comparisons)
    log.info("buffer seeded with %d snippet pairs of %d demos", len(pairs), len(demos))
    return len(pairs)


def _model_metadata(cfg: TrainPreferencesConfig, run_dir: Path, init_from: str) -> dict[str, Any]:
    """What every reward model file of the run records (:func:`save_reward_model`'s keywords)."""
    start_level, num_levels = cfg.level_pool()
    return {
        "env_name": cfg.env_name,
        "mode": cfg.distribution_mode,
        "num_dems": cfg.num_dems if cfg.init_demos else 0,
        "seed": cfg.seed,
        "rm_id": f"{cfg.env_name}_{run_dir.name}",
        "training": {k: v for k, v in cfg.to_dict().items() if k not in RESUMABLE_CHANGES},
        "extra": {
            "method": "preferences",
            "start_level": start_level,
            "num_levels": num_levels,
            "use_backgrounds": cfg.use_backgrounds,
            "init_reward": init_from,
        },
    }


def _restore(
    cfg: TrainPreferencesConfig,
    checkpoint: Path,
    steps: int,
    net: RewardNet,
    opt: torch.optim.Optimizer,
) -> LearnerState:
    """Load the reward model, optimiser and counters saved with ``checkpoint`` (UserError if
    missing or corrupt)."""
    from safetensors.torch import load_file

    prefs = cfg.run_dir / PREFS_DIR
    try:
        state = LearnerState(**json.loads((prefs / f"state_{steps:010d}.json").read_text()))
        net.load_state_dict(load_file(str(prefs / f"reward_{steps:010d}.safetensors")))
    except (OSError, ValueError, TypeError) as err:
        raise UserError(
            f"{cfg.run_dir}: the preference state of {checkpoint.name} is missing "
            f"or corrupt ({type(err).__name__})"
        ) from None
    load_optimizer(prefs / f"optimizer_{steps:010d}.safetensors", opt)
    return state


def _log_plan(cfg: TrainPreferencesConfig, schedule: dict[int, int], demo_bytes: int) -> None:
    """The schedule and the memory bound, at start."""
    bound = cfg.buffer_size * 2 * cfg.segment_length * FRAME_BYTES / 1e9
    rollout = cfg.num_envs * cfg.nsteps * FRAME_BYTES / 1e9
    log.info(
        "%d queries over %d rounds (%d before the first update); buffer of at most %d "
        "comparisons: at most %.2f GB of frames%s, plus %.2f GB for the rollout",
        cfg.num_queries,
        len(schedule),
        schedule.get(1, 0),
        cfg.buffer_size,
        bound,
        f" (+{demo_bytes / 1e9:.2f} GB of demos)" if cfg.init_demos else "",
        rollout,
    )


def train_preferences(
    cfg: TrainPreferencesConfig, on_start: Callable[[Path], None] | None = None
) -> dict[str, Any]:
    """Run (or continue) ``cfg``'s train_preferences run; returns train_ppo's summary plus the
    queries and labels. UserError for bad input, before anything is written; ``on_start``
    gets the run directory just before the first write (e.g. to log into it)."""
    from trex.rl.training import train_ppo

    cfg.check()
    run_dir = cfg.run_dir
    resume = _latest_checkpoint(run_dir)
    if resume is not None:
        _check_same_run(cfg, run_dir)
        if resume[1] >= cfg.timesteps_per_proc:
            log.info("%s is complete (%d steps)", run_dir, resume[1])
            return {"timesteps": resume[1], "last_checkpoint": str(resume[0]), "complete": True}
    seed_everything(cfg.seed)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = pick_device(cfg.device)
    net, init_from = _initial_net(cfg, device)
    net.eval()
    opt = torch.optim.Adam(
        net.parameters(), lr=step_lr(cfg.trex_config()), weight_decay=cfg.weight_decay
    )
    checkpoint = None
    if resume is not None:
        checkpoint, steps = resume
        updates = steps // (cfg.num_envs * cfg.nsteps)
        state = _restore(cfg, checkpoint, steps, net, opt)
        if on_start is not None:
            on_start(run_dir)
        _clear_after(run_dir, updates, steps)
        buffer = _rebuild_buffer(run_dir, cfg.buffer_size, updates)
        log.info(
            "resuming %s at %d steps: %d queries so far, buffer of %d comparisons",
            run_dir,
            steps,
            state.queries,
            len(buffer),
        )
    else:
        if on_start is not None:
            on_start(run_dir)
        _clear_after(run_dir, -1, -1)
        state = LearnerState()
        buffer = PreferenceBuffer(cfg.buffer_size)
        if cfg.init_demos:
            state.demo_pairs = _seed_demo_pairs(cfg, run_dir, buffer)
    schedule = query_schedule(
        cfg.num_queries, cfg.total_updates, cfg.query_every, cfg.initial_query_frac
    )
    _log_plan(cfg, schedule, buffer.nbytes)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run_config(
        run_dir / ("config.json" if resume is None else "config_resume.json"),
        cfg.to_dict(),
        run_dir=str(run_dir),
    )
    bf16 = use_bf16(cfg.precision, device)
    meta = _model_metadata(cfg, run_dir, init_from)
    learner = PreferenceLearner(cfg, run_dir, net, opt, buffer, schedule, device, bf16, state, meta)
    if resume is None:
        learner.save_model(run_dir / MODEL_NAME)
    summary = train_ppo(
        cfg,
        run_dir,
        load_path=checkpoint,
        wrap_env=learner.wrap,
        checkpoint_meta={"reward": reward_tag(cfg), "reward_model": str(run_dir / MODEL_NAME)},
        hooks=learner,
    )
    learner.save_model(run_dir / MODEL_NAME)
    return {
        **summary,
        "queries": learner.labeller.queries,
        "labels": learner.state.labels,
        "reward_model": str(run_dir / MODEL_NAME),
    }
