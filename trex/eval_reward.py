"""Evaluate reward models on any demo set: every metric that tells a learned reward from a
survival bonus, with bootstrap 95% intervals, and how much the models agree.

    python -m trex.eval_reward --rm_id 123_4567 234_5678 --reward_csv reward_models/rm_infos.csv \
        --demo_csv demos/demo_infos.csv --out reward_eval.csv
    python -m trex.eval_reward --reward_model a.safetensors b.safetensors \
        --demo_csv demos_nobg/demo_infos.csv --use_backgrounds false

Per model, one row appended to ``--out``: Pearson and Spearman of predicted vs true return,
the episode-length baseline, the partial correlation given length, the fixed-window
correlation (each with ``_lo``/``_hi``). With several models, their pairwise EPIC Pearson
distances go to ``<out stem>_agreement.csv`` and the mean distance with its interval is logged.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from trex.common.cli import (
    add_config_flag,
    cli_entry,
    nonnegative_int,
    parse_args,
    positive_int,
    str2bool,
)
from trex.common.errors import UserError

log = logging.getLogger("trex.eval_reward")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trex-eval-reward",
        description="Metrics of reward models on a demo set (content vs survival, agreement).",
    )
    add_config_flag(p)
    p.add_argument(
        "--rm_id", nargs="+", default=[], help="reward model id(s), looked up in --reward_csv"
    )
    p.add_argument(
        "--reward_csv", default="reward_models/rm_infos.csv", help="rm_infos CSV for --rm_id"
    )
    p.add_argument(
        "--reward_model", nargs="+", default=[], help="reward model .safetensors file(s)"
    )
    p.add_argument(
        "--demo_csv", nargs="+", default=["demos/demo_infos.csv"], help="demo index CSV(s)"
    )
    p.add_argument("--env_name", default=None, help="game of the demos (default: the models')")
    p.add_argument(
        "--distribution_mode", default=None, help="mode of the demos (default: the models')"
    )
    p.add_argument("--sequential", type=nonnegative_int, default=0)
    p.add_argument(
        "--set_name",
        choices=("train", "test"),
        default="test",
        help="evaluate on the index's test demos (unseen levels) or training demos",
    )
    p.add_argument(
        "--start_level", type=nonnegative_int, default=None, help="only demos of this pool start"
    )
    p.add_argument(
        "--num_levels", type=nonnegative_int, default=None, help="only demos of pools this size"
    )
    p.add_argument(
        "--use_backgrounds",
        type=str2bool,
        default=None,
        help="only demos recorded with (true) or without (false) backgrounds",
    )
    p.add_argument(
        "--allow_reward_mismatch",
        action="store_true",
        help="evaluate models trained on another game or mode",
    )
    p.add_argument(
        "--window", type=positive_int, default=50, help="frames per window of the window metric"
    )
    p.add_argument(
        "--num_bootstrap", type=positive_int, default=1000, help="bootstrap resamples over demos"
    )
    p.add_argument(
        "--seed", type=nonnegative_int, default=0, help="seed of the bootstrap resamples"
    )
    p.add_argument("--out", default="reward_eval.csv", help="CSV the rows are appended to")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto")
    p.add_argument("--device", default="auto")
    return p


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    from trex.common.cli import setup_logging

    setup_logging()
    import pandas as pd

    from trex.common.files import append_csv_rows, write_text_atomic
    from trex.demos.store import DemoIndex
    from trex.reward.model_file import load_reward_function
    from trex.reward.registry import resolve_reward_model
    from trex.reward.training import evaluate_reward_models

    paths = [resolve_reward_model(r, args.reward_csv) for r in args.rm_id]
    paths += [resolve_reward_model(r) for r in args.reward_model]
    if not paths:
        raise UserError("give reward models with --rm_id and/or --reward_model")
    fns = [load_reward_function(p, device=args.device, precision=args.precision) for p in paths]
    env_name = args.env_name or fns[0].meta.get("env_name")
    mode = args.distribution_mode or fns[0].meta.get("mode")
    if not args.allow_reward_mismatch:
        for fn, path in zip(fns, paths):
            if (fn.meta.get("env_name"), fn.meta.get("mode")) != (env_name, mode):
                raise UserError(
                    f"reward model {path} was trained on {fn.meta.get('env_name')} "
                    f"{fn.meta.get('mode')}, the demos are {env_name} {mode} "
                    f"(--allow_reward_mismatch to evaluate it anyway)"
                )
    index = DemoIndex.read(args.demo_csv).filter(
        env_name=env_name, mode=mode, set_name=args.set_name, sequential=args.sequential
    )
    df = index.df
    for col in ("start_level", "num_levels", "use_backgrounds"):
        want = getattr(args, col)
        if want is not None:
            df = df[df[col] == want]
    index = DemoIndex(df, index.sources)
    if len(index) < 2:
        raise UserError(
            f"fewer than 2 {args.set_name} demos of {env_name} {mode} match in "
            f"{', '.join(args.demo_csv)}"
        )
    log.info(
        "evaluating %d reward model(s) on %d %s demos of %s %s (%d frames)",
        len(fns),
        len(index),
        args.set_name,
        env_name,
        mode,
        int(df["length"].sum()),
    )
    t0 = time.perf_counter()
    metrics, agreement = evaluate_reward_models(
        fns, index, index.ids(), args.window, args.num_bootstrap, args.seed
    )
    pools = sorted(
        {
            (int(s), int(n), bool(b))
            for s, n, b in zip(df["start_level"], df["num_levels"], df["use_backgrounds"])
        }
    )
    demo_set = {
        "demo_csv": " ".join(args.demo_csv),
        "set_name": args.set_name,
        "demo_env": env_name,
        "demo_mode": mode,
        "demo_pools": " ".join(f"{s}+{n}{'' if b else ':nobg'}" for s, n, b in pools),
        "eval_seed": args.seed,
    }
    rows = []
    for fn, path, m in zip(fns, paths, metrics):
        rows.append(
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
        )
    append_csv_rows(args.out, rows)
    table = pd.DataFrame(rows)[
        [
            "rm_id",
            "pearson",
            "baseline_pearson",
            "partial",
            "partial_lo",
            "partial_hi",
            "window_pearson",
            "n_demos",
        ]
    ]
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if agreement:
        names = [r["rm_id"] for r in rows]
        pairs = [
            {
                "rm_id_a": names[i],
                "rm_id_b": names[j],
                "distance": float(agreement["distance"][i, j]),
            }
            for i in range(len(names))
            for j in range(i + 1, len(names))
        ]
        out = Path(args.out)
        agree_path = out.with_name(f"{out.stem}_agreement.csv")
        write_text_atomic(agree_path, pd.DataFrame(pairs).to_csv(index=False, lineterminator="\n"))
        log.info(
            "model agreement: mean EPIC Pearson distance %.3f [%.3f, %.3f] over %d pairs -> %s",
            agreement["mean_distance"],
            agreement["mean_distance_lo"],
            agreement["mean_distance_hi"],
            len(pairs),
            agree_path,
        )
    log.info("%d row(s) appended to %s in %.1f s", len(rows), args.out, time.perf_counter() - t0)
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
