"""PPO with a reward learned online from preferences (Christiano et al. 2017, arXiv 1706.03741).

PPO (train_policy's, :func:`trex.rl.training.train_ppo`) optimises the reward network's
prediction ``r(o_t)`` (the ensemble's mean), normalised as ``train_policy --rm_id`` does. The
wrapper of the environments, :class:`PreferenceRewardVecEnv`, keeps the rollout PPO collects
(:class:`RolloutRecord`: the frames acted on, every member's reward of them and the true
rewards, which only the labeller reads). Around each rollout, :class:`PreferenceLearner`:

1. measures the reward on freshly labelled held-out pairs of this rollout (never trained on);
2. before the updates the schedule names (:func:`~trex.preferences.schedule.query_schedule`),
   cuts the rollout into segments, picks pairs (uniform or by the ensemble's disagreement),
   asks the labeller, stores the labelled pairs in the buffer (and a round file), and fits
   the reward network on the buffer, warm-started;
3. before every policy checkpoint, saves the reward model, its optimiser and the counters, so
   a killed run resumes from its last checkpoint with the same buffer and ends with exactly
   ``--num_queries`` queries.

The rollout's rewards were computed by the network before this round's fit; PPO's update on
that rollout uses them (the new reward applies from the next rollout on).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv

from trex.common.files import write_text_atomic
from trex.common.runs import fault_point
from trex.preferences.buffer import Comparisons, PreferenceBuffer, save_round
from trex.preferences.config import TrainPreferencesConfig
from trex.preferences.fitting import fit_on_buffer, save_optimizer
from trex.preferences.labeller import SyntheticLabeller
from trex.preferences.selection import candidate_pairs, cut_segments, select_pairs
from trex.reward.model_file import save_reward_model
from trex.reward.nets import RewardNet, predict_frame_rewards
from trex.reward.trex import TrexConfig
from trex.rl.reward_wrappers import ContinuousVecEnv, LearnedRewardVecEnv
from trex.rl.training import TrainingHooks

log = logging.getLogger(__name__)

PREFS_DIR = "preferences"
MODEL_NAME = "reward_model.safetensors"
#: the progress.csv columns the preference learner adds
PREFERENCE_COLUMNS: tuple[str, ...] = (
    "queries",
    "labels",
    "buffer_pairs",
    "buffer_gb",
    "heldout_acc",
    "heldout_pairs",
    "fit_pairs",
    "fit_loss",
    "fit_acc",
    "fit_s",
    "label_s",
    "reward_offset",
)
#: frames of the last rollout the reward's mean is measured on (``--center_reward``)
OFFSET_FRAMES = 1024


class RolloutRecord:
    """One rollout as PPO collected it: ``obs`` uint8 (T, N, 3, 64, 64) the frames acted on,
    ``members`` float32 (T, M, N) every reward member's prediction of them, ``true`` float32
    (T, N) the true rewards (read by the labeller only)."""

    def __init__(self, nsteps: int, num_envs: int, members: int) -> None:
        self.obs = np.zeros((nsteps, num_envs, 3, 64, 64), dtype=np.uint8)
        self.members = np.zeros((nsteps, members, num_envs), dtype=np.float32)
        self.true = np.zeros((nsteps, num_envs), dtype=np.float32)
        self.t = 0

    def add(self, obs: np.ndarray, members: np.ndarray, true: np.ndarray) -> None:
        if self.t < len(self.obs):  # steps past a rollout's length (none in PPO) are not kept
            self.obs[self.t], self.members[self.t], self.true[self.t] = obs, members, true
        self.t += 1

    @property
    def full(self) -> bool:
        return self.t >= len(self.obs)

    def segment_frames(self, env: int, start: int, length: int) -> np.ndarray:
        """uint8 (length, 64, 64, 3): a segment's frames in the demos' layout."""
        return self.obs[start : start + length, env].transpose(0, 2, 3, 1)


class MemberRewards:
    """The reward network as PPO's reward: uint8 observations (N, 3, 64, 64) (or stacks
    (N, K, 3, 64, 64)) -> every member's reward float32 (M, N), one batched forward."""

    def __init__(self, net: RewardNet, device: torch.device, bf16: bool) -> None:
        self.net, self.device, self.bf16 = net, device, bf16

    @property
    def frame_stack(self) -> int:
        return self.net.frame_stack

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return predict_frame_rewards(self.net, obs, self.device, self.bf16, members=True)


class PreferenceRewardVecEnv(LearnedRewardVecEnv):
    """PPO's reward is the members' mean prediction less ``offset`` (0 unless
    ``--center_reward``); every step goes into ``record`` (the members' raw predictions, and
    the labeller's rewards: the game's, less ``end_penalty`` at an episode end without a
    completed level)."""

    def __init__(
        self,
        venv: VecEnv,
        rewards: MemberRewards,
        record: RolloutRecord,
        end_penalty: float = 0.0,
    ) -> None:
        super().__init__(venv, rewards)
        self.record = record
        self.offset = 0.0
        self.end_penalty = float(end_penalty)
        self._pending: tuple[np.ndarray, np.ndarray] | None = None

    def rewards_for(self, obs: np.ndarray) -> np.ndarray:
        x = self._stacks if self.frame_stack > 1 else obs
        members = np.asarray(self.reward_fn(x), dtype=np.float32)  # (M, N)
        self._pending = (obs, members)
        return members.mean(axis=0) - np.float32(self.offset)

    @staticmethod
    def true_rewards(rewards: np.ndarray, infos: list[dict[str, Any]]) -> np.ndarray:
        """The game's rewards of a step (N,): the one place the loop takes them from, for
        the labeller."""
        return rewards

    @staticmethod
    def failed_ends(infos: list[dict[str, Any]]) -> np.ndarray:
        """bool (N,): the steps that ended an episode without completing its level (a death
        or the time limit; Procgen's ``prev_level_complete``, as ``level_complete``)."""
        return np.array(["episode" in i and not i.get("level_complete", False) for i in infos])

    def stepped(self, acted_on: np.ndarray, true_rewards: np.ndarray, infos: list[dict]) -> None:
        assert self._pending is not None and self._pending[0] is acted_on
        labeller = np.asarray(self.true_rewards(true_rewards, infos), dtype=np.float32)
        if self.end_penalty > 0:
            labeller = labeller - np.float32(self.end_penalty) * self.failed_ends(infos)
        self.record.add(acted_on, self._pending[1], labeller)


@dataclass
class LearnerState:
    """The counters a checkpoint records (``preferences/state_<steps>.json``)."""

    queries: int = 0
    labels: int = 0
    demo_pairs: int = 0
    reward_offset: float = 0.0  # subtracted from PPO's reward (``--center_reward``)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=1)


class PreferenceLearner(TrainingHooks):
    """The preference learner as :func:`~trex.rl.training.train_ppo`'s hooks."""

    columns = PREFERENCE_COLUMNS
    checkpoint_on_interrupt = False  # a round's counters hold at update boundaries only

    def __init__(
        self,
        cfg: TrainPreferencesConfig,
        run_dir: Path,
        net: RewardNet,
        opt: torch.optim.Optimizer,
        buffer: PreferenceBuffer,
        schedule: dict[int, int],
        device: torch.device,
        bf16: bool,
        state: LearnerState,
        model_meta: dict[str, Any],
    ) -> None:
        self.cfg, self.run_dir, self.net, self.opt = cfg, run_dir, net, opt
        self.buffer, self.schedule, self.device, self.bf16 = buffer, schedule, device, bf16
        self.state, self.model_meta = state, model_meta
        self.trex: TrexConfig = cfg.trex_config()
        self.labeller = SyntheticLabeller(cfg.label_noise, cfg.label_beta)
        self.labeller.queries = state.queries
        self.record: RolloutRecord | None = None
        self.env: PreferenceRewardVecEnv | None = None
        self.row: dict[str, Any] = {}

    @property
    def prefs_dir(self) -> Path:
        return self.run_dir / PREFS_DIR

    def wrap(self, venv: VecEnv) -> VecEnv:
        """train_ppo's ``wrap_env``: the raw Procgen VecEnv -> the preference reward's."""
        self.record = RolloutRecord(self.cfg.nsteps, venv.num_envs, self.net.ensemble_size)
        scorer = MemberRewards(self.net, self.device, self.bf16)
        self.env = PreferenceRewardVecEnv(venv, scorer, self.record, self.cfg.end_penalty)
        self.env.offset = self.state.reward_offset
        return ContinuousVecEnv(self.env) if self.cfg.continuous else self.env

    def _rng(self, updates: int, purpose: int) -> np.random.Generator:
        """A stream per (seed, update, purpose): the same after a resume, whatever ran before."""
        return np.random.default_rng([self.cfg.seed, updates, purpose])

    # ------------------------------------------------------------------ hooks

    def rollout_start(self) -> None:
        assert self.record is not None, "wrap() must come first"
        self.record.t = 0

    def rollout_end(self, updates: int) -> None:
        assert self.record is not None and self.record.full, "a whole rollout is needed"
        self.row = {"heldout_acc": self.heldout_accuracy(updates)}
        n = self.schedule.get(updates, 0)
        fit: dict[str, Any] = {}
        if n > 0:
            t0 = time.perf_counter()
            self.ask(updates, n)
            self.row["label_s"] = time.perf_counter() - t0
            pairs = self.cfg.initial_fit_pairs if updates == 1 else self.cfg.fit_pairs
            fit = self.fit(updates, pairs)
        self.row.update(fit)
        if self.cfg.center_reward:
            self.center(updates)

    def progress(self) -> dict[str, Any]:
        row = {
            "queries": self.labeller.queries,
            "labels": self.state.labels,
            "buffer_pairs": len(self.buffer),
            "buffer_gb": self.buffer.nbytes / 1e9,
            "heldout_pairs": self.cfg.heldout_pairs,
            **self.row,
        }
        self.row = {}
        return row

    def save(self, timesteps: int) -> None:
        d = self.prefs_dir
        self.save_model(d / f"reward_{timesteps:010d}.safetensors")
        save_optimizer(d / f"optimizer_{timesteps:010d}.safetensors", self.opt)
        self.state.queries = self.labeller.queries
        write_text_atomic(d / f"state_{timesteps:010d}.json", self.state.to_json())

    # ------------------------------------------------------------------ the steps

    def heldout_accuracy(self, updates: int) -> float:
        """Share of freshly labelled pairs of this rollout (ties left out) that the reward the
        rollout ran on orders right (NaN when there are none)."""
        if self.cfg.heldout_pairs == 0:
            return float("nan")
        assert self.record is not None
        rng = self._rng(updates, 1)
        segs = cut_segments(
            self.cfg.nsteps, self.record.true.shape[1], self.cfg.segment_length, rng
        )
        pairs = candidate_pairs(len(segs), self.cfg.heldout_pairs, rng)
        labels = self.labeller.query(self.record.true, segs, pairs, rng, count=False)
        if not labels.keep.any():
            return float("nan")
        oriented = labels.oriented(pairs)
        predicted = segs.sums(self.record.members).mean(axis=0)
        return float(np.mean(predicted[oriented[:, 1]] > predicted[oriented[:, 0]]))

    def ask(self, updates: int, n: int) -> None:
        """Ask ``n`` queries about this rollout's segments and store the labelled pairs."""
        assert self.record is not None
        rng = self._rng(updates, 0)
        segs = cut_segments(
            self.cfg.nsteps, self.record.true.shape[1], self.cfg.segment_length, rng
        )
        member_returns = segs.sums(self.record.members)  # (M, S): the rollout's own rewards
        factor = self.cfg.candidate_factor if self.cfg.selection == "disagreement" else 1
        candidates = candidate_pairs(len(segs), n * factor, rng)
        pairs = select_pairs(candidates, n, self.cfg.selection, member_returns)
        labels = self.labeller.query(self.record.true, segs, pairs, rng)
        oriented = labels.oriented(pairs)
        ties = pairs[~labels.keep]
        stored = oriented
        if self.cfg.ties == "equal":  # a uniform label = the pair once in each order
            stored = np.concatenate([oriented, ties, ties[:, ::-1]])
        frames = [
            self.record.segment_frames(int(e), int(s), segs.length)
            for e, s in zip(segs.env, segs.start)
        ]
        comparisons = Comparisons.whole(stored, segs.length)
        save_round(self.prefs_dir / f"round_{updates:05d}.npz", frames, comparisons)
        self.buffer.add(frames, comparisons)
        self.state.labels += len(oriented) + (len(ties) if self.cfg.ties == "equal" else 0)
        self.state.queries = self.labeller.queries
        log.info(
            "update %d: %d queries (%d in all), %d labelled (%d ties %s); buffer %d "
            "comparisons, %.2f GB",
            updates,
            n,
            self.labeller.queries,
            len(oriented),
            len(ties),
            "stored as equal" if self.cfg.ties == "equal" else "skipped",
            len(self.buffer),
            self.buffer.nbytes / 1e9,
        )
        fault_point("preferences_after_labels")

    def center(self, updates: int) -> None:
        """Set PPO's reward offset for the next rollout: the (refitted) reward's mean on
        ``OFFSET_FRAMES`` random frames of this rollout, the agent's current behaviour (a
        frame-stacking reward sees each with the frames before it in its environment, across
        episode starts: an approximation of the stacks PPO's reward sees)."""
        assert self.record is not None and self.env is not None
        obs = self.record.obs  # (T, N, 3, 64, 64)
        t, n = obs.shape[:2]
        picked = np.sort(self._rng(updates, 3).choice(t * n, min(OFFSET_FRAMES, t * n), False))
        step, env = np.divmod(picked, n)
        k = self.net.frame_stack
        if k == 1:
            frames = obs[step, env]  # (F, 3, 64, 64)
        else:
            back = np.maximum(step[:, None] - np.arange(k - 1, -1, -1), 0)
            frames = obs[back, env[:, None]]  # (F, K, 3, 64, 64)
        rewards = predict_frame_rewards(self.net, frames, self.device, self.bf16, members=True)
        self.env.offset = self.state.reward_offset = float(rewards.mean())
        self.row["reward_offset"] = self.env.offset

    def fit(self, updates: int, pairs: int) -> dict[str, Any]:
        """Fit the reward on ``pairs`` comparisons of the buffer; write the latest model."""
        stats = fit_on_buffer(
            self.net,
            self.opt,
            self.buffer,
            pairs,
            self.trex,
            self._rng(updates, 2),
            self.device,
            self.bf16,
        )
        self.save_model(self.run_dir / MODEL_NAME)
        log.info(
            "update %d: reward fitted on %d comparisons in %.1f s (loss %.3f, batch accuracy %.3f)",
            updates,
            stats["fit_pairs"],
            stats["fit_s"],
            stats["fit_loss"],
            stats["fit_acc"],
        )
        fault_point("preferences_after_fit")
        return stats

    def save_model(self, path: Path) -> None:
        """The reward network in train_reward's model format (eval_reward, train_policy
        --reward_model read it), with the queries so far in its results."""
        meta = dict(self.model_meta)
        results = {"queries": self.labeller.queries, "labels": self.state.labels}
        save_reward_model(path, self.net, results=results, **meta)
