"""PPO training on Procgen with checkpoints, a manifest, a progress CSV and TensorBoard.

The loop is stable-baselines3's; this module adds what the pipeline needs around it:
checkpoints every ``save_interval`` updates listed in ``checkpoints.csv`` (what
``gen_demos --models_dir`` reads), one progress row every ``log_interval`` updates, a
progress bar, resume from a training checkpoint (weights, optimizer, step count), fine-tuning
from a weights-only .safetensors (weights and step count, fresh optimizer, in a new run
directory), and a last checkpoint on Ctrl-C.

Returns logged as ``true_return_mean`` are always the game's true returns (the env adapter
counts them before any reward replacement); a learned-reward wrapper reports its own
episode returns through ``learned_return_mean``.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from trex.common.device import pick_device
from trex.common.envs import make_procgen_env
from trex.common.errors import UserError
from trex.common.files import append_csv_rows
from trex.common.runs import fault_point, seed_everything
from trex.rl.checkpoints import (
    MANIFEST_NAME,
    append_manifest,
    check_checkpoint_env,
    is_weights_file,
    read_checkpoint_meta,
    restore_training_state,
    save_checkpoint,
)
from trex.rl.config import PPOConfig, TrainPolicyConfig
from trex.rl.policy import build_ppo

log = logging.getLogger(__name__)

PROGRESS_NAME = "progress.csv"
PROGRESS_COLUMNS = [
    "timesteps",
    "updates",
    "elapsed_s",
    "fps",
    "episodes",
    "true_return_mean",
    "ep_length_mean",
    "learned_return_mean",
    "policy_loss",
    "value_loss",
    "entropy_loss",
    "approx_kl",
    "clip_fraction",
    "explained_variance",
]


class LearnedReturnSource:
    """What a reward-replacing wrapper exposes so its episode returns get logged."""

    learned_episode_returns: deque


class TrainingHooks:
    """What a run that learns alongside PPO plugs into :func:`train_ppo` (e.g. the
    preference learner): called around every rollout, for extra progress columns, and before
    every checkpoint (so a checkpoint never exists without the hooks' state of that step)."""

    #: extra progress.csv columns, after :data:`PROGRESS_COLUMNS`
    columns: tuple[str, ...] = ()
    #: whether Ctrl-C / SIGTERM saves a last checkpoint mid-rollout (train_policy's habit);
    #: False keeps every checkpoint on an update boundary (the run resumes from the last one)
    checkpoint_on_interrupt: bool = True

    def rollout_start(self) -> None:
        """Before PPO collects a rollout."""

    def rollout_end(self, updates: int) -> None:
        """After rollout ``updates`` (1-based) is collected, before PPO trains on it."""

    def progress(self) -> dict[str, Any]:
        """Values of :attr:`columns` for the current progress row."""
        return {}

    def save(self, timesteps: int) -> None:
        """Before the checkpoint of ``timesteps`` is written."""


class _TrainingMonitor(BaseCallback):
    """Checkpoints, manifest, progress CSV/TensorBoard and progress bar, per PPO update."""

    def __init__(
        self,
        run_dir: Path,
        cfg: PPOConfig,
        meta: dict[str, Any],
        total: int,
        learned_source: Any | None,
        writer: Any | None,
        hooks: TrainingHooks | None = None,
    ) -> None:
        super().__init__()
        self.run_dir, self.cfg, self.meta, self.total = run_dir, cfg, meta, total
        self.learned_source, self.writer = learned_source, writer
        self.hooks = hooks or TrainingHooks()
        self.steps_per_update = cfg.num_envs * cfg.nsteps
        self.t0 = time.time()
        self.steps_at_start = 0
        self.bar: Any = None
        self.last_saved = -1

    def _on_training_start(self) -> None:
        from tqdm.auto import tqdm

        self.steps_at_start = self.model.num_timesteps
        self.t0 = time.time()
        self.bar = tqdm(
            total=self.total,
            initial=self.model.num_timesteps,
            unit="step",
            desc=f"PPO {self.cfg.env_name}",
            dynamic_ncols=True,
            mininterval=2,
        )

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        if self.bar is not None:
            self.bar.update(self.steps_per_update)
        self.hooks.rollout_end(self.model.num_timesteps // self.steps_per_update)

    def _on_rollout_start(self) -> None:
        # runs after the previous update's train(): its losses are in the logger
        updates = self.model.num_timesteps // self.steps_per_update
        if updates == 0 or self.model.num_timesteps == self.steps_at_start:
            self.hooks.rollout_start()
            return
        if updates % self.cfg.log_interval == 0:
            self.log_progress(updates)
        if updates % self.cfg.save_interval == 0:
            self.save()
        self.hooks.rollout_start()

    def mean_return(self) -> float:
        buf = self.model.ep_info_buffer
        return float(np.mean([e["r"] for e in buf])) if buf else float("nan")

    def log_progress(self, updates: int) -> None:
        buf = self.model.ep_info_buffer
        elapsed = time.time() - self.t0
        values = self.model.logger.name_to_value
        learned = getattr(self.learned_source, "learned_episode_returns", None)
        row = {
            "timesteps": self.model.num_timesteps,
            "updates": updates,
            "elapsed_s": round(elapsed, 2),
            "fps": round((self.model.num_timesteps - self.steps_at_start) / max(elapsed, 1e-9), 2),
            "episodes": len(buf),
            "true_return_mean": self.mean_return(),
            "ep_length_mean": float(np.mean([e["l"] for e in buf])) if buf else float("nan"),
            "learned_return_mean": float(np.mean(learned)) if learned else float("nan"),
            "policy_loss": values.get("train/policy_gradient_loss", float("nan")),
            "value_loss": values.get("train/value_loss", float("nan")),
            "entropy_loss": values.get("train/entropy_loss", float("nan")),
            "approx_kl": values.get("train/approx_kl", float("nan")),
            "clip_fraction": values.get("train/clip_fraction", float("nan")),
            "explained_variance": values.get("train/explained_variance", float("nan")),
            **self.hooks.progress(),
        }
        columns = [*PROGRESS_COLUMNS, *self.hooks.columns]
        append_csv_rows(self.run_dir / PROGRESS_NAME, [row], columns=columns)
        if self.writer is not None:
            for key, value in row.items():
                if key != "timesteps" and value == value:  # skip NaN
                    self.writer.add_scalar(f"ppo/{key}", value, row["timesteps"])
        if self.bar is not None:
            self.bar.set_postfix(ret=f"{row['true_return_mean']:.2f}", fps=f"{row['fps']:.0f}")
        log.debug("progress %s", row)

    def save(self) -> Path | None:
        """Write a checkpoint for the current step count and list it in the manifest."""
        steps = int(self.model.num_timesteps)
        if steps == self.last_saved:
            return None
        name = f"checkpoint_{steps:010d}.zip"
        env = self.model.get_env()
        meta = dict(self.meta)
        if isinstance(env, VecNormalize):
            meta["ret_rms"] = {
                "mean": float(env.ret_rms.mean),
                "var": float(env.ret_rms.var),
                "count": float(env.ret_rms.count),
            }
        mean_ret = self.mean_return()
        meta["mean_return"] = mean_ret
        self.hooks.save(steps)
        save_checkpoint(self.model, self.run_dir / name, meta)
        fault_point("checkpoint_between_file_and_row")
        append_manifest(self.run_dir, name, steps, mean_ret)
        self.last_saved = steps
        log.info("checkpoint %s (mean training return %.2f)", name, mean_ret)
        return self.run_dir / name

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()


def find_resume_checkpoint(load_path: str | Path) -> Path:
    """A checkpoint file (.zip or weights-only .safetensors), or a checkpoint directory's
    latest checkpoint by timesteps (a training run's or an export_policy folder's; at equal
    timesteps a .zip, which holds the optimizer state too, wins)."""
    from trex.rl.checkpoints import read_manifest

    path = Path(load_path)
    if path.is_dir():
        df = read_manifest(path)
        df = df.assign(_zip=[not is_weights_file(f) for f in df["file"].astype(str)])
        return path / str(df.sort_values(["timesteps", "_zip"], kind="stable")["file"].iloc[-1])
    if not path.is_file():
        raise UserError(f"--load_path not found: {path}")
    return path


def check_run_dir(run_dir: Path, resume_from: Path | None) -> None:
    """Refuse to mix two runs' checkpoints in one directory.

    Resuming from a training checkpoint (.zip) continues in its own directory; fine-tuning
    from a weights-only .safetensors (e.g. a shipped expert) is a new run, so it never writes
    into the folder that file is in, nor into a directory that already holds a run.
    """
    weights_only = resume_from is not None and is_weights_file(resume_from)
    if weights_only:
        folder, target = resume_from.resolve().parent, run_dir.resolve()
        if target == folder or folder in target.parents:
            raise UserError(
                f"fine-tuning from {resume_from} would write into its own folder; "
                "choose another --log_dir/--log_name for the new run"
            )
    manifest = run_dir / MANIFEST_NAME
    if manifest.exists():
        if resume_from is None or weights_only or resume_from.resolve().parent != run_dir.resolve():
            raise UserError(
                f"{run_dir} already holds a training run; resume it with --load_path "
                f"{run_dir} or choose another --log_dir/--log_name"
            )


def check_resume(cfg: PPOConfig, load_path: Path) -> dict[str, Any]:
    """The metadata of the checkpoint a run resumes or fine-tunes from, checked to be of
    ``cfg.env_name`` and to have fewer steps than ``cfg.timesteps_per_proc`` (UserError)."""
    meta = read_checkpoint_meta(load_path)
    check_checkpoint_env(meta, load_path, cfg.env_name)
    if int(meta.get("timesteps", 0)) >= cfg.timesteps_per_proc:
        raise UserError(
            f"{load_path} already has {meta['timesteps']} steps; "
            f"--timesteps_per_proc ({cfg.timesteps_per_proc}) is the total to reach"
        )
    return meta


@dataclass
class TrainingSetup:
    """A train_policy run resolved and checked before anything is written
    (:func:`prepare_training`): where it goes and what it starts from."""

    run_dir: Path
    load_path: Path | None  # the checkpoint resumed (.zip) or fine-tuned from (.safetensors)
    resume_meta: dict[str, Any] | None  # that checkpoint's metadata
    wrap_env: Callable[[VecEnv], VecEnv] | None  # the reward replacement, None: true reward
    reward_meta: dict[str, Any]  # what checkpoints record about the reward

    @property
    def fine_tune(self) -> bool:
        return self.load_path is not None and is_weights_file(self.load_path)

    @property
    def config_name(self) -> str:
        """``config.json`` for a new run, ``config_resume.json`` when one is resumed."""
        return "config.json" if self.load_path is None or self.fine_tune else "config_resume.json"


def prepare_training(cfg: TrainPolicyConfig) -> TrainingSetup:
    """Resolve a run's checkpoint to start from, its reward and its directory.

    Every lookup that can fail happens here, before anything is written (UserError for a
    missing checkpoint, a missing or mismatched reward model, a checkpoint of another game or
    one past the total, a directory that holds another run). A resumed run continues in its
    checkpoint's own directory; a fine-tuning run goes to ``finetune_<name>`` beside the
    default one (never into the folder of the weights it starts from).
    """
    from trex.rl.reward_wrappers import reward_setup

    load_path = find_resume_checkpoint(cfg.load_path) if cfg.load_path else None
    wrap_env, reward_meta, reward_tag = reward_setup(cfg)
    run_dir = cfg.run_dir_for(reward_tag)
    fine_tune = load_path is not None and is_weights_file(load_path)
    default_place = not cfg.log_name and not reward_tag
    default_dir = cfg.log_dir == TrainPolicyConfig.log_dir  # the flag's default
    if load_path is not None and not fine_tune and default_place and default_dir:
        run_dir = load_path.parent  # resume continues in the checkpoint's own directory
    elif fine_tune and default_place:
        run_dir = run_dir / f"finetune_{load_path.stem}"  # a new run, never the shipped folder
    check_run_dir(run_dir, load_path)
    resume_meta = check_resume(cfg, load_path) if load_path is not None else None
    return TrainingSetup(run_dir, load_path, resume_meta, wrap_env, reward_meta)


def train_ppo(
    cfg: PPOConfig,
    run_dir: Path,
    load_path: Path | None = None,
    wrap_env: Callable[[VecEnv], VecEnv] | None = None,
    checkpoint_meta: dict[str, Any] | None = None,
    resume_meta: dict[str, Any] | None = None,
    hooks: TrainingHooks | None = None,
) -> dict[str, Any]:
    """Train PPO on ``cfg.env_name`` until ``cfg.timesteps_per_proc`` total steps.

    Seeds Python, NumPy and torch with ``cfg.seed`` (and the environments) and sets torch's
    CPU threads to ``cfg.num_threads`` when given. ``wrap_env`` may replace the
    environment's reward (learned reward, constant reward); it receives the raw Procgen
    VecEnv and its result is reward-normalised as train-procgen does: baselines'
    ``VecNormalize(venv, ob=False)``, whose return discount is 0.99 (``norm_gamma``), not the
    PPO discount 0.999. ``resume_meta``: ``load_path``'s metadata when already read and
    checked by :func:`check_resume` (else it is read here). ``hooks``: what learns alongside
    (:class:`TrainingHooks`). Returns a summary dict
    (timesteps, last checkpoint, mean training return, wall time, steps/s).
    """
    if load_path is not None and resume_meta is None:
        resume_meta = check_resume(cfg, load_path)
    seed_everything(cfg.seed)
    if cfg.num_threads:
        import torch

        torch.set_num_threads(cfg.num_threads)
    start_level, num_levels = cfg.level_pool()
    device = pick_device(cfg.device)
    env = make_procgen_env(
        cfg.env_name,
        cfg.num_envs,
        cfg.distribution_mode,
        start_level,
        num_levels,
        False,
        cfg.use_backgrounds,
        cfg.seed,
    )
    inner = wrap_env(env) if wrap_env is not None else env
    venv = VecNormalize(inner, norm_obs=False, norm_reward=True, gamma=cfg.norm_gamma)
    writer = None
    try:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tb"))
    except ImportError:
        log.info("tensorboard not installed: progress goes to %s only", PROGRESS_NAME)
    model = build_ppo(
        venv,
        nsteps=cfg.nsteps,
        nminibatches=cfg.nminibatches,
        ppo_epochs=cfg.ppo_epochs,
        learning_rate=cfg.learning_rate,
        gamma=cfg.gamma,
        lam=cfg.lam,
        clip_range=cfg.clip_range,
        ent_coef=cfg.ent_coef,
        vf_coef=cfg.vf_coef,
        max_grad_norm=cfg.max_grad_norm,
        seed=cfg.seed,
        device=device,
        precision=cfg.precision,
    )
    if load_path is not None:
        restore_training_state(model, load_path)
        rms = (resume_meta or {}).get("ret_rms")
        if rms:
            venv.ret_rms.mean, venv.ret_rms.var, venv.ret_rms.count = (
                rms["mean"],
                rms["var"],
                rms["count"],
            )
        log.info(
            "%s from %s at %d steps",
            "fine-tuning" if is_weights_file(load_path) else "resumed",
            load_path,
            model.num_timesteps,
        )
    meta = {
        "env_name": cfg.env_name,
        "distribution_mode": cfg.distribution_mode,
        "num_levels": num_levels,
        "start_level": start_level,
        "use_backgrounds": cfg.use_backgrounds,
        "seed": cfg.seed,
        "config": cfg.ppo_settings(),
        **(checkpoint_meta or {}),
    }
    # a run started from another run's weights says where they came from (kept on resume)
    if load_path is not None and is_weights_file(load_path):
        meta["fine_tuned_from"] = str(Path(load_path).resolve())
    elif resume_meta and resume_meta.get("fine_tuned_from"):
        meta["fine_tuned_from"] = resume_meta["fine_tuned_from"]
    learned_source = inner if hasattr(inner, "learned_episode_returns") else None
    monitor = _TrainingMonitor(
        run_dir, cfg, meta, cfg.timesteps_per_proc, learned_source, writer, hooks
    )
    remaining = cfg.timesteps_per_proc - model.num_timesteps
    t0 = time.time()
    start_steps = model.num_timesteps
    interrupted = False
    try:
        model.learn(
            total_timesteps=remaining,
            callback=monitor,
            log_interval=None,
            reset_num_timesteps=False,
        )
    except KeyboardInterrupt:
        interrupted = True
        if monitor.hooks.checkpoint_on_interrupt:
            log.warning("interrupted: saving a last checkpoint")
        else:
            log.warning("interrupted: the run resumes from its last checkpoint")
    finally:
        if monitor.bar is not None:
            monitor.bar.close()
    updates = model.num_timesteps // (cfg.num_envs * cfg.nsteps)
    if model.num_timesteps > start_steps and (
        not interrupted or monitor.hooks.checkpoint_on_interrupt
    ):
        monitor.log_progress(updates)
    if interrupted and not monitor.hooks.checkpoint_on_interrupt:
        last = run_dir / f"checkpoint_{max(monitor.last_saved, 0):010d}.zip"
    else:
        last = monitor.save() or (run_dir / f"checkpoint_{model.num_timesteps:010d}.zip")
    if writer is not None:
        writer.close()
    wall = time.time() - t0
    venv.close()
    return {
        "timesteps": int(model.num_timesteps),
        "last_checkpoint": str(last),
        "mean_return": monitor.mean_return(),
        "wall_s": wall,
        "steps_per_s": (model.num_timesteps - start_steps) / max(wall, 1e-9),
        "interrupted": interrupted,
    }
