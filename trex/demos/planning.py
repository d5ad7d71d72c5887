"""Planning demo generation: which policy (checkpoint, noise) records how many demos, spread
over the skill range of a run's checkpoints, and which jobs remain after an interrupted run."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trex.common.errors import UserError

log = logging.getLogger(__name__)

#: noise recorded for demos of the random policy (every action is random)
RANDOM_POLICY_NOISE = 1.0
#: ``--policy`` value (and ``policy`` column) of demos played by the uniform random policy
RANDOM_POLICY = "random"

# ----------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class PolicySource:
    """Where a demo's actions come from: a checkpoint file, or the random policy (path None)."""

    name: str  # what the index's ``policy`` column records
    path: Path | None  # checkpoint .zip or .safetensors, None for the random policy
    timesteps: int = -1  # training steps of the checkpoint (-1: random policy)
    mean_return: float = float("nan")  # the manifest's mean training return

    @property
    def is_random(self) -> bool:
        return self.path is None


@dataclass(frozen=True)
class DemoJob:
    """One demo to collect: its policy and its epsilon-greedy noise."""

    policy: PolicySource
    noise: float


def random_policy() -> PolicySource:
    """The uniformly random policy (no checkpoint)."""
    return PolicySource(RANDOM_POLICY, None)


def checkpoint_source(path: str | os.PathLike, env_name: str | None = None) -> PolicySource:
    """A single checkpoint file as a policy source (reads its metadata, checks its game)."""
    from trex.rl.checkpoints import check_checkpoint_env, read_checkpoint_meta

    meta = read_checkpoint_meta(path)
    check_checkpoint_env(meta, path, env_name)
    return PolicySource(
        str(path),
        Path(path),
        int(meta.get("timesteps", -1)),
        float(meta.get("mean_return", float("nan"))),
    )


def manifest_sources(
    models_dir: str | os.PathLike, env_name: str | None = None
) -> list[PolicySource]:
    """All checkpoints listed in ``<models_dir>/checkpoints.csv``, oldest first.

    Each one's metadata is read (and its game checked) before any demo is collected.
    """
    from trex.rl.checkpoints import (
        check_checkpoint_env,
        read_checkpoint_meta,
        read_manifest,
    )

    models_dir = Path(models_dir)
    manifest = read_manifest(models_dir).sort_values("timesteps", kind="stable")
    sources = []
    for row in manifest.itertuples(index=False):
        path = models_dir / str(row.file)
        check_checkpoint_env(read_checkpoint_meta(path), path, env_name)
        sources.append(PolicySource(str(path), path, int(row.timesteps), float(row.mean_return)))
    return sources


def skill_pool(sources: Sequence[PolicySource]) -> tuple[list[PolicySource], np.ndarray]:
    """The checkpoints usable for spreading and their skill (float64): the manifest's mean
    training return; checkpoints without one are skipped, and if none has one, training
    timesteps stand in for skill."""
    if not sources:
        raise UserError("no checkpoint to collect demos from")
    skill = np.array([s.mean_return for s in sources], dtype=np.float64)
    if np.isfinite(skill).all():
        return list(sources), skill
    if np.isfinite(skill).any():
        keep = np.isfinite(skill)
        log.warning(
            "%d checkpoint(s) have no recorded mean return and are not used", int((~keep).sum())
        )
        return [s for s, k in zip(sources, keep) if k], skill[keep]
    log.warning("no checkpoint has a recorded mean return: spreading demos over training steps")
    return list(sources), np.array([s.timesteps for s in sources], dtype=np.float64)


def spread_over_skill(
    sources: Sequence[PolicySource], num: int, skill: np.ndarray | None = None
) -> list[PolicySource]:
    """Pick a checkpoint for each of ``num`` demos so their skill is spread evenly.

    Targets are ``num`` values evenly spaced from the lowest to the highest skill (see
    :func:`skill_pool`); each demo gets the checkpoint whose skill is nearest its target.
    """
    if skill is None:
        sources, skill = skill_pool(sources)
    if num <= 0:
        return []
    targets = np.linspace(skill.min(), skill.max(), num)
    nearest = np.abs(targets[:, None] - skill[None, :]).argmin(axis=1)
    return [sources[i] for i in nearest]


def split_evenly(total: int, parts: int) -> np.ndarray:
    """int64 (parts,): ``total`` split into ``parts`` near-equal counts (larger first)."""
    counts = np.full(parts, total // parts, dtype=np.int64)
    counts[: total % parts] += 1
    return counts


def plan_jobs(
    num_dems: int, noise: Sequence[float], sources: Sequence[PolicySource] | None
) -> list[DemoJob]:
    """The demos to collect: ``num_dems`` split evenly over the noise levels; within each
    noise level, checkpoints spread over the skill range (:func:`spread_over_skill`).
    ``sources=None`` means the random policy. Jobs come grouped by policy (oldest
    checkpoint first), so at any time the running environments share one or two policies.
    """
    if num_dems <= 0:
        raise UserError(f"--num_dems must be positive, got {num_dems}")
    jobs: list[DemoJob] = []
    if sources is None:
        return [DemoJob(random_policy(), RANDOM_POLICY_NOISE) for _ in range(num_dems)]
    pool, skill = skill_pool(sources)
    for eps, count in zip(noise, split_evenly(num_dems, len(noise))):
        jobs.extend(DemoJob(src, float(eps)) for src in spread_over_skill(pool, int(count), skill))
    order = {s.name: i for i, s in enumerate(sources)}
    jobs.sort(key=lambda j: (order[j.policy.name], j.noise))
    return jobs


def remaining_jobs(jobs: Sequence[DemoJob], done_rows: pd.DataFrame) -> list[DemoJob]:
    """The planned jobs a previous attempt of the same run did not finish: ``jobs`` minus one
    job per stored demo of the same (policy, noise) (the multiset difference)."""
    left: dict[tuple[str, float], int] = {}
    for _, r in done_rows.iterrows():
        key = (str(r["policy"]), float(r["noise"]))
        left[key] = left.get(key, 0) + 1
    out = []
    for j in jobs:
        key = (j.policy.name, float(j.noise))
        if left.get(key, 0) > 0:
            left[key] -= 1
        else:
            out.append(j)
    return out


def check_noise(noise: Sequence[float]) -> list[float]:
    """Epsilons must lie in [0, 1]."""
    out = [float(e) for e in noise]
    if not out:
        raise UserError("--noise needs at least one value")
    for e in out:
        if not 0.0 <= e <= 1.0:
            raise UserError(f"--noise values must be in [0, 1], got {e}")
    return out
