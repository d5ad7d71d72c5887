"""Collecting demonstrations: many Procgen environments in parallel, one batched policy
forward per step, each finished episode written to the demo store as soon as it ends.

Why the demos are not biased toward short episodes. With N environments running at
once, "keep the first ``num_dems`` episodes that finish" favours short episodes (they
finish first). Here every demo is a *job* fixed in advance (which policy, which noise);
a job is handed to an environment the moment that environment starts a fresh episode,
and that episode is kept whatever its length. Exactly one episode is started per job and
collection runs until every started episode has ended (or been cut at ``max_ep_len``),
so the kept set is the set of started episodes: nothing is selected by length. An
environment with no job left plays on (its episodes are discarded, never stored).

Skill spread (T-REX, Brown et al. 2019, arXiv 1904.06387, ranks demos of varied
quality): checkpoints are picked per demo so the demos' expected returns are evenly
spaced between the worst and best checkpoint's training return, instead of drawing
checkpoints uniformly (the original project's way), which over-samples the many late checkpoints of
a saturated learning curve. Noise: epsilon-greedy injection, a uniformly random action
with probability epsilon, else the policy's (D-REX, Brown et al. 2019, arXiv 1907.03976).

Whole runs: :func:`collect_demos` (``gen_demos`` from Python) takes a
:class:`~trex.demos.config.GenDemosConfig`, plans the jobs (:mod:`trex.demos.planning`),
resumes an interrupted attempt of the same run and collects.

Auto-reset: the observation returned with ``done=True`` is the first of the next episode
and the reward returned with it is the last of the finished one (see trex/core/envs.py),
so an episode's frames are the observations *before* each of its steps: T frames, T
actions, T rewards, never spliced across levels.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from trex.common.envs import NUM_ACTIONS, OBS_SHAPE_HWC, level_pool, make_procgen_env
from trex.common.errors import UserError
from trex.demos.planning import RANDOM_POLICY, DemoJob, PolicySource
from trex.demos.store import (
    DEFAULT_FILES_DIR,
    DEFAULT_INDEX_NAME,
    DEMO_COLUMNS,
    commit_demo,
    compress_demo,
    demo_file_path,
    read_index_ids,
    remove_orphans,
)

if TYPE_CHECKING:
    from trex.demos.config import GenDemosConfig

log = logging.getLogger(__name__)

_INITIAL_CAPACITY = 256


# ----------------------------------------------------------------------------- collection


@dataclass
class EpisodeRecord:
    """A finished episode: observations uint8 (T, 64, 64, 3) (the frame before each step),
    actions int64 (T,), rewards float32 (T,); ``done`` False when cut at max_ep_len."""

    job: DemoJob
    level_seed: int
    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    done: bool

    @property
    def ret(self) -> float:
        return float(self.rewards.sum(dtype=np.float64))


@dataclass
class CollectConfig:
    """Environment and acting settings of a collection run."""

    env_name: str
    distribution_mode: str = "easy"
    test_set: bool = False
    start_level: int | None = None
    num_levels: int | None = None
    sequential: int = 0
    use_backgrounds: bool = True
    max_ep_len: int = 1000
    num_envs: int = 64
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    precision: str = "auto"

    def pool(self) -> tuple[int, int]:
        """(start_level, num_levels) the demos come from: a pool inside the training range
        [0, 1e9), or with ``test_set`` inside the unseen range [1e9, 2e9) (default: all of it)."""
        return level_pool(self.start_level, self.num_levels, self.test_set)


@dataclass
class CollectStats:
    """What a collection run did: demos, stored frames, env steps (all envs), seconds."""

    demos: int = 0
    demo_steps: int = 0
    env_steps: int = 0
    forwards: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def demo_steps_per_s(self) -> float:
        return self.demo_steps / self.seconds if self.seconds > 0 else float("nan")


class _PolicyCache:
    """Loads checkpoints on first use and drops them once no job needs them."""

    def __init__(self, cfg: CollectConfig) -> None:
        self.cfg = cfg
        self.loaded: dict[str, Any] = {}

    def get(self, src: PolicySource) -> Any:
        if src.name not in self.loaded:
            from trex.common.device import pick_device
            from trex.rl.checkpoints import load_policy

            policy, _ = load_policy(
                src.path,
                device=pick_device(self.cfg.device),
                precision=self.cfg.precision,
                expected_env=self.cfg.env_name,
            )
            self.loaded[src.name] = policy
            log.debug("loaded %s", src.name)
        return self.loaded[src.name]

    def keep_only(self, names: set[str]) -> None:
        for name in list(self.loaded):
            if name not in names:
                del self.loaded[name]


def collect_episodes(
    jobs: Sequence[DemoJob],
    cfg: CollectConfig,
    sink: Callable[[EpisodeRecord], None],
    progress: bool = True,
) -> CollectStats:
    """Play one episode per job on ``min(num_envs, len(jobs))`` parallel environments.

    Per step: the frames of the recording environments go into preallocated per-env
    buffers (N, capacity, 64, 64, 3), one policy forward per distinct running policy
    (one, except while jobs switch checkpoint), epsilon-greedy noise, one env step.
    A finished episode is handed to ``sink`` (which must copy or consume it at once)
    and the environment takes the next job. Episodes cut at ``max_ep_len`` are handed over
    with ``done=False``; that environment then plays on with random actions until the
    game ends the episode, so the next job starts at a level's beginning.
    """
    import time

    from tqdm.auto import tqdm

    from trex.rl.policy import act

    if not jobs:
        return CollectStats()
    if cfg.max_ep_len <= 0:
        raise UserError(f"--max_ep_len must be positive, got {cfg.max_ep_len}")
    n = max(1, min(cfg.num_envs, len(jobs)))
    start, count = cfg.pool()
    env = make_procgen_env(
        cfg.env_name,
        n,
        cfg.distribution_mode,
        start,
        count,
        bool(cfg.sequential),
        cfg.use_backgrounds,
        cfg.seed,
    )
    rng = np.random.default_rng([cfg.seed, 7])
    cache = _PolicyCache(cfg)

    cap = min(cfg.max_ep_len, _INITIAL_CAPACITY)
    frames = np.empty((n, cap, *OBS_SHAPE_HWC), dtype=np.uint8)
    actions_buf = np.zeros((n, cap), dtype=np.int64)
    rewards_buf = np.zeros((n, cap), dtype=np.float32)
    t = np.zeros(n, dtype=np.int64)
    recording = np.zeros(n, dtype=bool)  # playing a job's episode
    slot_job: list[int] = [-1] * n
    slot_policy = np.full(n, -1, dtype=np.int64)  # index into policy_names, -1: random
    slot_eps = np.zeros(n, dtype=np.float64)
    slot_level = np.zeros(n, dtype=np.int64)
    policy_names: list[str] = []
    policy_index: dict[str, int] = {}
    remaining_per_policy: dict[str, int] = {}
    for j in jobs:
        remaining_per_policy[j.policy.name] = remaining_per_policy.get(j.policy.name, 0) + 1
    next_job = 0
    stats = CollectStats()

    env.reset()
    levels_now = env.level_seeds

    def assign(slots: np.ndarray) -> None:
        nonlocal next_job
        for s in slots:
            if next_job >= len(jobs):
                recording[s] = False
                slot_job[s] = -1
                continue
            job = jobs[next_job]
            slot_job[s] = next_job
            next_job += 1
            recording[s] = True
            t[s] = 0
            slot_eps[s] = job.noise
            slot_level[s] = levels_now[s]
            if job.policy.is_random:
                slot_policy[s] = -1
            else:
                if job.policy.name not in policy_index:
                    policy_index[job.policy.name] = len(policy_names)
                    policy_names.append(job.policy.name)
                slot_policy[s] = policy_index[job.policy.name]
                cache.get(job.policy)

    assign(np.arange(n))
    bar = tqdm(
        total=len(jobs),
        unit="demo",
        desc=f"{cfg.env_name} demos",
        disable=not progress,
        mininterval=1,
    )
    t0 = time.perf_counter()
    all_slots = np.arange(n)
    try:
        while stats.demos < len(jobs):
            idx = np.flatnonzero(recording)
            # grow the buffers (doubling) when a recording env reaches the capacity
            if len(idx) and t[idx].max() >= cap:
                new_cap = min(cfg.max_ep_len, cap * 2)
                frames, actions_buf, rewards_buf = _grow(frames, actions_buf, rewards_buf, new_cap)
                cap = new_cap
            rgb = env.last_rgb
            ti = t[idx]
            frames[idx, ti] = rgb[idx]

            actions = rng.integers(0, NUM_ACTIONS, size=n)  # idle, draining, random, explored
            explore = rng.random(n) < slot_eps
            greedy = recording & ~explore & (slot_policy >= 0)
            if greedy.any():
                for p in np.unique(slot_policy[greedy]):
                    sel = np.flatnonzero(greedy & (slot_policy == p))
                    policy = cache.loaded[policy_names[p]]
                    actions[sel] = act(policy, rgb[sel], deterministic=cfg.deterministic)
                    stats.forwards += 1
            actions_buf[idx, ti] = actions[idx]

            _, rew, done, infos = env.step(actions)
            levels_now = env.level_seeds
            rewards_buf[idx, ti] = rew[idx]
            t[idx] += 1
            stats.env_steps += n

            ended = idx[done[idx]]
            cut = idx[~done[idx] & (t[idx] >= cfg.max_ep_len)]
            for s, by_itself in [(s, True) for s in ended] + [(s, False) for s in cut]:
                job = jobs[slot_job[s]]
                length = int(t[s])
                if by_itself and infos[s].get("level_seed") != slot_level[s]:
                    raise RuntimeError(
                        f"episode spliced across levels: {slot_level[s]} vs {infos[s]}"
                    )
                sink(
                    EpisodeRecord(
                        job,
                        int(slot_level[s]),
                        frames[s, :length],
                        actions_buf[s, :length],
                        rewards_buf[s, :length],
                        by_itself,
                    )
                )
                stats.demos += 1
                stats.demo_steps += length
                remaining_per_policy[job.policy.name] -= 1
                recording[s] = False
                slot_job[s] = -1
                bar.update(1)
            # environments whose episode just ended take the next job (a fresh episode); a cut
            # one is neither recording nor free until its game ends the episode by itself
            free = all_slots[done & ~recording]
            if len(free):
                assign(free)
            if len(ended) or len(cut):
                cache.keep_only({name for name, left in remaining_per_policy.items() if left > 0})
                bar.set_postfix_str(
                    f"{stats.demo_steps / max(time.perf_counter() - t0, 1e-9):.0f} steps/s",
                    refresh=False,
                )
    finally:
        bar.close()
        env.close()
        stats.seconds = time.perf_counter() - t0
    return stats


def _grow(
    frames: np.ndarray, actions: np.ndarray, rewards: np.ndarray, cap: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-env buffers with a larger time capacity: (N, cap, ...), old contents kept."""
    n, old = frames.shape[:2]
    f = np.empty((n, cap, *frames.shape[2:]), dtype=frames.dtype)
    f[:, :old] = frames
    a = np.zeros((n, cap), dtype=actions.dtype)
    a[:, :old] = actions
    r = np.zeros((n, cap), dtype=rewards.dtype)
    r[:, :old] = rewards
    return f, a, r


# ----------------------------------------------------------------------------- writing


def demo_id_for(level_seed: int, test_set: bool) -> str:
    """Readable id from the level, the original project's style: ``0_123_456_789`` for training
    level 123456789, ``1_...`` for test level 1e9 + 123456789."""
    start, _ = level_pool(None, None, test_set)
    digits = f"{int(level_seed) - start:09d}"
    return f"{int(test_set)}_{digits[0:3]}_{digits[3:6]}_{digits[6:]}"


def index_paths(log_dir: str | os.PathLike, name: str | None) -> tuple[Path, Path]:
    """(index CSV, demo file directory): ``demo_infos.csv`` + ``demo_files/``, or with a
    name ``demo_infos_<name>.csv`` + ``demo_files_<name>/`` (the original project's naming)."""
    log_dir = Path(log_dir)
    if name:
        return log_dir / f"demo_infos_{name}.csv", log_dir / f"{DEFAULT_FILES_DIR}_{name}"
    return log_dir / DEFAULT_INDEX_NAME, log_dir / DEFAULT_FILES_DIR


def check_existing_index(csv_path: str | os.PathLike) -> set[str]:
    """Ids already in the index CSV gen_demos will append to (empty if new); UserError if it
    is malformed or was written with other columns."""
    csv_path = Path(csv_path)
    taken = read_index_ids(csv_path)
    if csv_path.exists() and csv_path.stat().st_size > 0:
        header = pd.read_csv(csv_path, nrows=0).columns
        missing = [c for c in DEMO_COLUMNS if c not in header]
        if missing:
            raise UserError(
                f"{csv_path} was written with other columns (lacks "
                f"{', '.join(missing)}); write to a new --log_dir or --name"
            )
    return taken


class DemoWriter:
    """Writes finished episodes (npz, then the index row) on a background thread.

    Compression runs off the stepping thread (zlib releases the GIL); at most
    ``max_pending`` episodes wait in memory, so memory stays bounded. Ids are unique
    against the existing index, this run, and (through the no-clobber file link)
    concurrent writers; a clash gets a ``_2``, ``_3``... suffix.
    """

    def __init__(
        self,
        csv_path: Path,
        demo_dir: Path,
        base_row: dict[str, Any],
        test_set: bool,
        max_pending: int = 16,
    ) -> None:
        self.csv_path = Path(csv_path)
        self.demo_dir = Path(demo_dir)
        self.base_row = dict(base_row)
        self.test_set = test_set
        remove_orphans(self.csv_path, self.demo_dir)  # what a killed run left behind
        self.taken = check_existing_index(self.csv_path)
        self.rows: list[dict[str, Any]] = []
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="demo-writer")
        self._slots = threading.BoundedSemaphore(max_pending)
        self._futures: list[Future] = []

    def __call__(self, rec: EpisodeRecord) -> None:
        self._raise_failures()
        self._slots.acquire()
        rec = EpisodeRecord(
            rec.job,
            rec.level_seed,
            rec.observations.copy(),
            rec.actions.copy(),
            rec.rewards.copy(),
            rec.done,
        )
        fut = self._pool.submit(self._write, rec)
        fut.add_done_callback(lambda _: self._slots.release())
        self._futures.append(fut)

    def _write(self, rec: EpisodeRecord) -> None:
        base = demo_id_for(rec.level_seed, self.test_set)
        job = rec.job
        row = {
            **self.base_row,
            "length": int(len(rec.actions)),
            "return": rec.ret,
            "level_seed": int(rec.level_seed),
            "policy": job.policy.name,
            "noise": float(job.noise),
            "done": bool(rec.done),
            "policy_timesteps": int(job.policy.timesteps),
        }
        tmp = compress_demo(self.demo_dir, base, rec.observations, rec.actions, rec.rewards)
        try:
            k = 1
            while True:
                demo_id = base if k == 1 else f"{base}_{k}"
                k += 1
                if demo_id in self.taken:
                    continue
                path = demo_file_path(self.demo_dir, demo_id)
                row.update(
                    demo_id=demo_id,
                    file=Path(os.path.relpath(path, self.csv_path.parent)).as_posix(),
                )
                try:
                    commit_demo(self.csv_path, tmp, path, {c: row[c] for c in DEMO_COLUMNS})
                except UserError as err:
                    if "already" in str(err):  # a concurrent writer took this id
                        self.taken.add(demo_id)
                        continue
                    raise
                break
        finally:
            tmp.unlink(missing_ok=True)
        self.taken.add(demo_id)
        self.rows.append(row)

    def _raise_failures(self) -> None:
        for fut in [f for f in self._futures if f.done()]:
            self._futures.remove(fut)
            fut.result()  # re-raises a writer error in the collecting thread

    def close(self) -> None:
        """Wait for every pending write; re-raise the first failure."""
        self._pool.shutdown(wait=True)
        for fut in self._futures:
            fut.result()
        self._futures.clear()


def summarize_rows(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Per (policy, noise) and overall: demos, min/median/max return, mean length, cut episodes."""
    df = pd.DataFrame(rows)
    if df.empty:
        return df

    def agg(g: pd.DataFrame) -> dict[str, Any]:
        return {
            "demos": len(g),
            "return_min": g["return"].min(),
            "return_median": g["return"].median(),
            "return_max": g["return"].max(),
            "length_mean": g["length"].mean(),
            "cut": int((~g["done"].astype(bool)).sum()),
        }

    out = [
        {"policy": Path(str(p)).name, "noise": e, **agg(g)}
        for (p, e), g in df.groupby(["policy", "noise"], sort=False)
    ]
    out.append({"policy": "all", "noise": "", **agg(df)})
    return pd.DataFrame(out)


def generate_demos(
    jobs: Sequence[DemoJob],
    cfg: CollectConfig,
    csv_path: str | os.PathLike,
    demo_dir: str | os.PathLike,
    progress: bool = True,
    run_key: str = "",
) -> tuple[list[dict[str, Any]], CollectStats]:
    """Collect one demo per job and store each as it finishes: ``<demo_dir>/<id>.npz`` plus
    a row appended to ``csv_path``. Returns (the rows written, collection stats).

    Interrupted (Ctrl-C or an error), every demo finished so far is on disk and indexed;
    nothing half-written is left.
    """
    set_name = "test" if cfg.test_set else "train"
    start, count = cfg.pool()
    base = {
        "env_name": cfg.env_name,
        "mode": cfg.distribution_mode,
        "set_name": set_name,
        "sequential": int(cfg.sequential),
        "seed": int(cfg.seed),
        "start_level": start,
        "num_levels": count,
        "use_backgrounds": bool(cfg.use_backgrounds),
        "run_key": run_key,
    }
    writer = DemoWriter(Path(csv_path), Path(demo_dir), base, cfg.test_set)
    try:
        stats = collect_episodes(jobs, cfg, writer, progress=progress)
    finally:
        writer.close()
    return writer.rows, stats


# ----------------------------------------------------------------------------- a whole run


@dataclass
class GenDemosResult:
    """What :func:`collect_demos` returns.

    Attributes:
        rows: the index rows this call wrote (one per demo, the columns of demo_infos.csv
            and more: policy_timesteps, done, run_key, ...).
        stats: the collection's counts and time (empty when nothing was left to do).
        csv_path, demo_dir: the index CSV and the demo file directory.
        run_dir: ``<log_dir>/gen_demos_runs/<time>_<pid>/`` (config.json, log.txt); None
            when an earlier attempt of the same run had already collected every demo.
        config: the run's config, its seed drawn if it was None.
        run_key: the run's key (:meth:`GenDemosConfig.run_key`), recorded in every row.
        resumed: demos of this run an earlier, interrupted attempt had already stored.
    """

    rows: list[dict[str, Any]]
    stats: CollectStats
    csv_path: Path
    demo_dir: Path
    run_dir: Path | None
    config: GenDemosConfig
    run_key: str
    resumed: int = 0


def demos_of_run(csv_path: str | os.PathLike, key: str) -> pd.DataFrame:
    """The index rows a run with this key already wrote (empty if none)."""
    from trex.demos.store import DemoIndex

    csv_path = Path(csv_path)
    if not csv_path.exists() or csv_path.stat().st_size == 0:
        return pd.DataFrame(columns=["policy", "noise"])
    df = DemoIndex.read(csv_path).df
    return df[df["run_key"].astype(str) == key] if "run_key" in df.columns else df.iloc[:0]


def policy_sources(cfg: GenDemosConfig) -> list[PolicySource] | None:
    """The checkpoints a run's demos come from (each one's metadata read and its game
    checked), or None for the random policy. UserError for a missing or wrong checkpoint."""
    from trex.demos.planning import checkpoint_source, manifest_sources

    if cfg.policy == RANDOM_POLICY:
        return None
    if cfg.policy is not None:
        return [checkpoint_source(cfg.policy, cfg.env_name)]
    if cfg.models_dir is None:
        raise UserError("give --models_dir or --policy")
    return manifest_sources(cfg.models_dir, cfg.env_name)


def collect_demos(cfg: GenDemosConfig) -> GenDemosResult:
    """Collect demos as ``python -m trex.gen_demos`` does, writing the same files: the demos
    ``<log_dir>/demo_files[_<name>]/<demo_id>.npz``, their rows appended to
    ``<log_dir>/demo_infos[_<name>].csv``, and a run directory with ``config.json`` and
    ``log.txt``.

    A retry of the same run (same options and seed, so the same :meth:`GenDemosConfig.run_key`)
    collects only what an interrupted attempt left to do. Every check of bad input runs
    before anything is written; UserError (one line) for each. Logging goes to stderr and the
    run's log.txt (:func:`trex.common.cli.setup_logging`), as for the stage.
    """
    import time

    from trex.common.cli import setup_logging
    from trex.common.runs import seed_everything, write_run_config
    from trex.demos.planning import plan_jobs, remaining_jobs

    cfg.check()
    if cfg.seed is None:
        cfg = dataclasses.replace(cfg, seed=int.from_bytes(os.urandom(4), "little") % 2**31)
    jobs = plan_jobs(cfg.num_dems, cfg.noise_levels, policy_sources(cfg))
    collect = cfg.collect_config()
    pool = collect.pool()
    csv_path, demo_dir = index_paths(cfg.log_dir, cfg.name)
    check_existing_index(csv_path)  # a clear error before anything is written
    # a retry of the same run (same arguments and seed) finishes what a killed attempt began
    key = cfg.run_key()
    done = demos_of_run(csv_path, key)
    if len(done):
        jobs = remaining_jobs(jobs, done)
        log.info(
            "%d demos of this run (key %s) are already in %s; %d left to collect",
            len(done),
            key,
            csv_path,
            len(jobs),
        )
        collect.seed = int(
            np.random.SeedSequence([cfg.seed, len(done)]).generate_state(1)[0] % 2**31
        )
        if not jobs:
            log.info("nothing left to do")
            return GenDemosResult([], CollectStats(), csv_path, demo_dir, None, cfg, key, len(done))
    run_dir = (
        Path(cfg.log_dir) / "gen_demos_runs" / f"{time.strftime('%Y%m%d-%H%M%S')}_{os.getpid()}"
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(run_dir / "log.txt")
    write_run_config(
        run_dir / "config.json", cfg.to_dict(), index=str(csv_path), demo_dir=str(demo_dir)
    )
    seed_everything(cfg.seed)
    n_policies = len({j.policy.name for j in jobs})
    log.info(
        "collecting %d %s demos of %s (%s) on levels [%d, %d) from %d polic%s, noise %s, "
        "%d envs, seed %d -> %s",
        len(jobs),
        "test" if cfg.test_set else "train",
        cfg.env_name,
        cfg.distribution_mode,
        pool[0],
        sum(pool),
        n_policies,
        "y" if n_policies == 1 else "ies",
        sorted({j.noise for j in jobs}),
        min(cfg.num_envs, len(jobs)),
        cfg.seed,
        csv_path,
    )
    rows, stats = generate_demos(
        jobs, collect, csv_path, demo_dir, progress=cfg.progress, run_key=key
    )
    log.info(
        "%d demos, %d steps in %.1f s (%.0f demo steps/s); index %s",
        stats.demos,
        stats.demo_steps,
        stats.seconds,
        stats.demo_steps_per_s,
        csv_path,
    )
    return GenDemosResult(rows, stats, csv_path, demo_dir, run_dir, cfg, key, len(done))
