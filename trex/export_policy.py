"""Export chosen checkpoints of a train_policy run as weights-only files to ship with the code.

    python -m trex.export_policy --models_dir experts/starpilot/easy --out_dir experts_shipped/starpilot \
        --timesteps 250000 500000 1000000 best
    python -m trex.export_policy --models_dir experts/starpilot/easy --out_dir experts_shipped/starpilot --pick 4

Each chosen checkpoint becomes ``<out_dir>/<its name>.safetensors`` (fp32 weights of the policy
only, no optimizer state, about 2.5 MB; the checkpoint's metadata in the safetensors header),
listed in ``<out_dir>/checkpoints.csv`` (file, timesteps, mean_return, source, selected_by): a
folder that ``gen_demos --models_dir``, ``test_policy``, ``visualize_policy`` and
``train_policy --load_path`` (fine-tuning) read like a training run's directory.
``--timesteps T`` takes the checkpoint nearest T steps (``best``: the highest mean training
return); ``--pick N`` takes N spread over skill (the earliest, the best, and ones between
them evenly spaced in mean training return).
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
    parse_args,
    positive_int,
    setup_logging,
)
from trex.common.errors import UserError

log = logging.getLogger("trex.export_policy")


def timesteps_or_best(text: str) -> int | str:
    """argparse type: a step count >= 0 or ``best``."""
    if str(text).strip().lower() == "best":
        return "best"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of timesteps or 'best', got {text!r}"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of timesteps >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trex-export-policy",
        description="Write chosen checkpoints of a train_policy run as weights-only .safetensors "
        "files plus a checkpoints.csv manifest (experts to ship in a repository).",
    )
    add_config_flag(p)
    p.add_argument(
        "--models_dir",
        required=True,
        help="train_policy checkpoint directory (its checkpoints.csv), or an exported folder",
    )
    p.add_argument(
        "--out_dir",
        required=True,
        help="folder to write into (created; an exported folder of the same game gets "
        "the new files added)",
    )
    p.add_argument(
        "--test_csv",
        default=None,
        help="a test_policy results CSV of the exported files: their mean true return and "
        "standard error per level set go into the manifest (alone, without "
        "--timesteps/--pick, it only updates an exported folder's scores)",
    )
    choice = p.add_mutually_exclusive_group()
    choice.add_argument(
        "--timesteps",
        nargs="+",
        type=timesteps_or_best,
        metavar="T|best",
        help="the checkpoint nearest each step count; 'best': the highest mean training return",
    )
    choice.add_argument(
        "--pick",
        type=positive_int,
        metavar="N",
        help="N checkpoints spread over skill: the earliest, the best and N-2 between",
    )
    p.add_argument("--env_name", default=None, help="check that the checkpoints are of this game")
    return p


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    setup_logging()
    from trex.rl.checkpoints import (
        check_checkpoint_env,
        read_checkpoint_meta,
        read_manifest,
    )
    from trex.rl.export import add_test_scores, export_checkpoints, select_checkpoints

    if args.timesteps is None and args.pick is None:
        if args.test_csv is None:
            raise UserError(
                "give --timesteps or --pick (which checkpoints to export), or --test_csv"
            )
        shipped = add_test_scores(args.out_dir, args.test_csv)
    else:
        manifest = read_manifest(args.models_dir)
        selection = select_checkpoints(
            manifest, timesteps=args.timesteps, pick=args.pick, models_dir=args.models_dir
        )
        if args.env_name is not None:
            for f in selection["file"]:
                path = Path(args.models_dir) / str(f)
                check_checkpoint_env(read_checkpoint_meta(path), path, args.env_name)
        shipped = export_checkpoints(args.models_dir, args.out_dir, selection)
        if args.test_csv is not None:
            shipped = add_test_scores(args.out_dir, args.test_csv)
    print(shipped.to_string(index=False))
    log.info("%s lists %d checkpoint(s)", Path(args.out_dir) / "checkpoints.csv", len(shipped))
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
