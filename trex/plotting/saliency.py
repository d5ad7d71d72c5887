"""Figure of what reward models look at: frames, and beside each the perturbation saliency
(:func:`trex.reward.saliency.saliency_map`) of every model on it, as a PNG grid.
:func:`reward_saliency_figure` is the plot_reward_saliency stage, its flags the fields of
:class:`PlotRewardSaliencyConfig`."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trex.common.cli import positive_int
from trex.common.config import Config, flag, require
from trex.common.errors import UserError
from trex.plotting.correlations import _new_figure, save_png

log = logging.getLogger(__name__)


def plot_saliency_grid(
    frames: np.ndarray,
    maps: np.ndarray,
    rewards: np.ndarray,
    labels: Sequence[str],
    out: str | os.PathLike,
    title: str = "",
) -> Path:
    """Frames uint8 (F, 64, 64, 3) in the first column; model m's saliency maps (M, F, 64, 64)
    over the dimmed grey frame in column m + 1 (normalised per model over its frames), its
    reward of the frame (M, F) in the panel's title. Writes a PNG."""
    n_models, n_frames = maps.shape[:2]
    fig = _new_figure((2.2 * (n_models + 1), 2.3 * n_frames))
    grey = frames.astype(np.float32).mean(axis=-1) / 255.0
    for f in range(n_frames):
        ax = fig.add_subplot(n_frames, n_models + 1, f * (n_models + 1) + 1)
        ax.imshow(frames[f], interpolation="nearest")
        ax.set_title(f"frame {f}", fontsize=8)
        ax.axis("off")
        for m in range(n_models):
            top = float(maps[m].max()) or 1.0
            ax = fig.add_subplot(n_frames, n_models + 1, f * (n_models + 1) + m + 2)
            ax.imshow(grey[f] * 0.6, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            heat = np.zeros((*maps.shape[2:], 4), dtype=np.float32)
            heat[..., 0] = 1.0
            heat[..., 3] = np.clip(maps[m, f] / top, 0, 1) * 0.85
            ax.imshow(heat, interpolation="bilinear")
            ax.set_title(f"{labels[m]}\nr = {rewards[m, f]:.3g}", fontsize=7)
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    return save_png(fig, out)


@dataclass
class PlotRewardSaliencyConfig(Config):
    """plot_reward_saliency: perturbation saliency of reward models on demo or policy frames."""

    reward_model: list[str] = flag([], help="reward model .safetensors file(s), one column each")
    rm_id: list[str] = flag([], help="reward model id(s), looked up in --reward_csv")
    reward_csv: str = flag("reward_models/rm_infos.csv", help="rm_infos CSV for --rm_id")
    labels: list[str] | None = flag(None, help="one column title per model (default: rm_id)")
    demo_csv: list[str] | None = flag(None, help="take the frames from these demos")
    set_name: str = flag(
        "test", choices=("train", "test"), help="which demos (test: unseen levels)"
    )
    env_name: str | None = flag(None, help="game (default: the first model's)")
    distribution_mode: str = flag("easy", help=None)
    load_path: str | None = flag(
        None, help="take the frames from this policy (checkpoint, or random) on unseen levels"
    )
    num_frames: int = flag(4, type=positive_int, help="frames (rows), one per demo or episode")
    position: float = flag(
        0.5,
        type=float,
        help="where in each demo or episode the frame is, as a fraction of its length (e.g. "
        "0.9: near the end, where coinrun's coin is)",
    )
    max_steps: int = flag(
        1000, type=positive_int, help="--load_path: episodes are cut at this length"
    )
    stride: int = flag(2, type=positive_int, help="pixels between blurred points")
    seed: int = flag(0, help="which demos / levels")
    title: str = flag("", help=None)
    out: str = flag("figures/reward_saliency.png", help=None)
    precision: str = flag("auto", choices=("auto", "bf16", "fp32"), help=None)
    device: str = flag("auto", help=None)

    def check(self) -> None:
        super().check()
        self.check_flags()
        n = len(self.reward_model) + len(self.rm_id)
        require(n > 0, "give reward models with --reward_model and/or --rm_id")
        require(
            (self.demo_csv is None) != (self.load_path is None),
            "give the frames' source: --demo_csv or --load_path (one of them)",
        )
        require(0.0 <= self.position <= 1.0, "--position must be in [0, 1]")
        require(
            self.labels is None or len(self.labels) == n,
            f"--labels has {len(self.labels or [])} entries for {n} models",
        )


def _demo_frames(cfg: PlotRewardSaliencyConfig, env_name: str) -> np.ndarray:
    from trex.demos.store import DemoIndex

    index = DemoIndex.read(cfg.demo_csv).filter(
        env_name=env_name, mode=cfg.distribution_mode, set_name=cfg.set_name
    )
    if len(index) == 0:
        raise UserError(f"no {cfg.set_name} demos of {env_name} in {', '.join(cfg.demo_csv)}")
    rng = np.random.default_rng(cfg.seed)
    ids = index.ids()
    chosen = sorted(rng.choice(len(ids), size=min(cfg.num_frames, len(ids)), replace=False))
    frames = []
    for demo in index.iter_demos([ids[i] for i in chosen]):
        t = min(int(cfg.position * len(demo.observations)), len(demo.observations) - 1)
        frames.append(demo.observations[t])
    return np.stack(frames)


def _policy_frames(cfg: PlotRewardSaliencyConfig, env_name: str) -> np.ndarray:
    """One frame per environment: at ``position`` of its first episode (cut at ``max_steps``).
    The policy samples its actions with torch's generator, seeded by ``seed`` like the levels,
    so the same flags give the same frames."""
    from trex.common.envs import level_range, make_procgen_env
    from trex.common.runs import seed_everything
    from trex.rl.evaluation import load_act_fn

    seed_everything(cfg.seed)
    act, _ = load_act_fn(
        cfg.load_path, env_name, device=cfg.device, precision=cfg.precision, seed=cfg.seed
    )
    start, num = level_range(test_set=True)
    n = cfg.num_frames
    env = make_procgen_env(env_name, n, cfg.distribution_mode, start, num, seed=cfg.seed)
    obs = env.reset()
    episodes = np.zeros((cfg.max_steps, n, 64, 64, 3), dtype=np.uint8)
    length = np.full(n, cfg.max_steps)
    for t in range(cfg.max_steps):
        episodes[t] = obs.transpose(0, 2, 3, 1)
        obs, _, dones, _ = env.step(act(obs))
        length = np.where(dones & (length == cfg.max_steps), t + 1, length)
        if (length < cfg.max_steps).all():
            break
    env.close()
    at = np.minimum((cfg.position * length).astype(int), length - 1)
    return episodes[at, np.arange(n)].copy()


def reward_saliency_figure(cfg: PlotRewardSaliencyConfig) -> Path:
    """The plot_reward_saliency stage: load the models, pick the frames, map and draw them."""
    from tqdm import tqdm

    from trex.reward.model_file import load_reward_function
    from trex.reward.registry import resolve_reward_model
    from trex.reward.saliency import saliency_map

    paths = [Path(p) for p in cfg.reward_model]
    paths += [resolve_reward_model(r, cfg.reward_csv) for r in cfg.rm_id]
    check = {"env_name": cfg.env_name, "mode": cfg.distribution_mode} if cfg.env_name else {}
    fns = [
        load_reward_function(p, device=cfg.device, precision=cfg.precision, **check) for p in paths
    ]
    env_name = cfg.env_name or str(fns[0].meta.get("env_name"))
    for fn, p in zip(fns, paths):
        if fn.frame_stack > 1:
            raise UserError(f"{p} stacks frames: saliency of frame-stacking models is not drawn")
    frames = _demo_frames(cfg, env_name) if cfg.demo_csv else _policy_frames(cfg, env_name)
    maps = np.zeros((len(fns), len(frames), 64, 64), dtype=np.float32)
    rewards = np.zeros((len(fns), len(frames)), dtype=np.float32)
    for m, fn in enumerate(fns):
        for f in tqdm(
            range(len(frames)), desc=f"saliency {paths[m].stem}", leave=False, disable=None
        ):
            maps[m, f], rewards[m, f] = saliency_map(fn, frames[f], cfg.stride)
    labels = cfg.labels or [fn.rm_id or p.stem for fn, p in zip(fns, paths)]
    return plot_saliency_grid(frames, maps, rewards, labels, cfg.out, cfg.title)
