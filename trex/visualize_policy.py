"""Record a policy playing as an MP4 a person can watch (frames upscaled, several screens tiled).

python -m trex.visualize_policy --load_path experts/starpilot/easy/checkpoint_0000491520.zip
python -m trex.visualize_policy --load_path experts_shipped/starpilot/checkpoint_0000491520.safetensors
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from trex.common.cli import (
    add_config_flag,
    cli_entry,
    nonnegative_int,
    parse_args,
    positive_int,
    setup_logging,
    str2bool,
)
from trex.common.device import PRECISIONS
from trex.common.runs import seed_everything

log = logging.getLogger("trex.visualize_policy")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trex-visualize-policy", description="Film a policy (or a random one) as an MP4."
    )
    add_config_flag(p)
    p.add_argument(
        "--load_path",
        required=True,
        help="policy checkpoint (.zip, or weights-only .safetensors from export_policy), or 'random'",
    )
    p.add_argument("--env_name", default=None, help="default: the checkpoint's game")
    p.add_argument("--distribution_mode", default=None)
    p.add_argument("--video_length", type=positive_int, default=500, help="frames")
    p.add_argument(
        "--num_screens", type=positive_int, default=1, help="environments tiled in a grid"
    )
    p.add_argument(
        "--start_level",
        type=nonnegative_int,
        default=1_000_000_000,
        help="default: unseen test levels",
    )
    p.add_argument("--num_levels", type=nonnegative_int, default=1_000_000_000)
    p.add_argument(
        "--use_backgrounds",
        type=str2bool,
        default=None,
        help="default: as the policy was trained (the checkpoint's), else True",
    )
    p.add_argument(
        "--scale", type=positive_int, default=4, help="upscaling factor (64 px -> 256 px)"
    )
    p.add_argument("--fps", type=positive_int, default=15)
    p.add_argument("--deterministic", type=str2bool, nargs="?", const=True, default=False)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="default: Videos/policy_<env>_<checkpoint>.mp4")
    p.add_argument("--precision", choices=PRECISIONS, default="auto")
    p.add_argument("--device", default="auto")
    return p


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    setup_logging()
    import numpy as np
    from tqdm.auto import tqdm

    from trex.common.envs import (
        check_distribution_mode,
        check_env_name,
        make_procgen_env,
    )
    from trex.common.video import tile, upscale, write_mp4
    from trex.rl.evaluation import load_act_fn

    seed_everything(args.seed)  # the policy samples its actions with torch's generator
    act_fn, meta = load_act_fn(
        args.load_path,
        args.env_name,
        device=args.device,
        precision=args.precision,
        deterministic=args.deterministic,
        seed=args.seed,
    )
    tag = "random" if args.load_path == "random" else Path(args.load_path).stem
    env_name = check_env_name(args.env_name or meta["env_name"])
    mode = check_distribution_mode(args.distribution_mode or meta.get("distribution_mode", "easy"))
    out = Path(args.out or f"Videos/policy_{env_name}_{tag}.mp4")
    backgrounds = (
        args.use_backgrounds
        if args.use_backgrounds is not None
        else bool(meta.get("use_backgrounds", True))
    )
    env = make_procgen_env(
        env_name,
        args.num_screens,
        mode,
        args.start_level,
        args.num_levels,
        False,
        backgrounds,
        args.seed,
    )
    frames = np.empty((args.video_length, args.num_screens, 64, 64, 3), dtype=np.uint8)
    obs = env.reset()
    for t in tqdm(range(args.video_length), desc="filming", unit="frame", mininterval=2):
        frames[t] = env.last_rgb
        obs, _, _, _ = env.step(act_fn(obs))
    env.close()
    write_mp4(out, upscale(tile(frames), args.scale), fps=args.fps)
    log.info("video: %s", out)
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
