"""Shipping policies (the export_policy stage): pick checkpoints from a run's manifest by
skill, write them as weights-only files with their manifest, and add test scores."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from trex.common.errors import UserError
from trex.common.files import atomic_path, read_csv_checked
from trex.rl.checkpoints import (
    MANIFEST_COLUMNS,
    MANIFEST_NAME,
    WEIGHTS_SUFFIX,
    is_weights_file,
    load_policy,
    read_checkpoint_meta,
    read_manifest,
    save_policy_weights,
)
from trex.rl.config import ExportPolicyConfig

log = logging.getLogger(__name__)

# ------------------------------------------------------------------ shipping (export_policy)

BEST = "best"


def _finite_returns(
    manifest: pd.DataFrame, what: str, models_dir: str | os.PathLike
) -> pd.DataFrame:
    rows = manifest[np.isfinite(manifest["mean_return"].astype(float))]
    if rows.empty:
        raise UserError(
            f"no checkpoint in {models_dir} has a recorded mean_return, which {what} needs"
        )
    return rows


def select_checkpoints(
    manifest: pd.DataFrame,
    timesteps: Sequence[int | str] | None = None,
    pick: int | None = None,
    models_dir: str | os.PathLike = "the manifest",
) -> pd.DataFrame:
    """The manifest rows to export, oldest first, with a ``selected_by`` column.

    ``timesteps``: for each value the checkpoint nearest that step count (UserError if the
    nearest is further away than the largest gap between consecutive checkpoints, e.g. 1M asked
    of a run that stopped at 500k), or ``"best"``: the highest mean training return (the
    earliest of equals). ``pick`` N: N checkpoints spread over skill: the earliest and the
    best (among those with a recorded mean_return) and N-2 between them whose returns are
    nearest to evenly spaced targets from the earliest's to the best's return.
    """
    if (timesteps is None) == (pick is None):
        raise UserError("choose the checkpoints with either --timesteps or --pick")
    df = manifest.sort_values("timesteps", kind="stable").reset_index(drop=True)
    chosen: dict[int, list[str]] = {}

    def choose(i: int, why: str) -> None:
        chosen.setdefault(int(i), []).append(why)

    if timesteps is not None:
        steps = df["timesteps"].to_numpy(dtype=np.int64)
        gaps = np.diff(np.unique(steps))
        tolerance = int(gaps.max()) if len(gaps) else 0
        for want in timesteps:
            if want == BEST:
                rows = _finite_returns(df, "'best'", models_dir)
                choose(rows["mean_return"].astype(float).idxmax(), BEST)
                continue
            want = int(want)
            i = int(np.abs(steps - want).argmin())
            if abs(int(steps[i]) - want) > tolerance:
                raise UserError(
                    f"no checkpoint in {models_dir} near {want} timesteps (nearest: "
                    f"{int(steps[i])}; checkpoints span {steps.min()} to {steps.max()})"
                )
            choose(i, f"timesteps {want}")
    else:
        if pick is None or pick <= 0:
            raise UserError(f"--pick must be positive, got {pick}")
        rows = _finite_returns(df, "--pick", models_dir)
        if pick > len(rows):
            raise UserError(
                f"--pick {pick}: {models_dir} has only {len(rows)} checkpoint(s) "
                "with a recorded mean_return"
            )
        ret = rows["mean_return"].astype(float)
        first, best = int(rows.index[0]), int(ret.idxmax())
        if pick > 1 and first == best:
            raise UserError(
                f"--pick {pick}: the earliest checkpoint in {models_dir} is the best "
                "one, so there is no skill range to spread over; use --timesteps"
            )
        choose(best, BEST)
        if pick > 1:
            choose(first, "earliest")
            free = [int(i) for i in rows.index if int(i) not in chosen]
            for target in np.linspace(ret[first], ret[best], pick)[1:-1]:
                j = min(free, key=lambda i: (abs(ret[i] - target), i))
                free.remove(j)
                choose(j, f"return {target:.3g}")
    out = df.loc[sorted(chosen)].copy()
    out["selected_by"] = ["; ".join(dict.fromkeys(chosen[i])) for i in out.index]
    return out.reset_index(drop=True)


def export_checkpoints(
    models_dir: str | os.PathLike, out_dir: str | os.PathLike, selection: pd.DataFrame
) -> pd.DataFrame:
    """Write the weights-only ``.safetensors`` copies of the ``selection`` (rows of
    ``<models_dir>/checkpoints.csv``) into ``out_dir``, with its ``checkpoints.csv``
    (file, timesteps, mean_return, source, selected_by); returns that manifest.

    Every source is loaded and checked (one game and mode, an ``out_dir`` that is not a
    training run's directory) before anything is written; each file and then the manifest
    are written atomically. Files already listed in ``out_dir``'s manifest stay listed
    (exporting more checkpoints of the same game into it adds them; a re-export replaces).
    """
    models_dir, out_dir = Path(models_dir), Path(out_dir)
    if out_dir.resolve() == models_dir.resolve():
        raise UserError(f"--out_dir must differ from --models_dir ({models_dir})")
    loaded = []
    for row in selection.itertuples(index=False):
        src = models_dir / str(row.file)
        policy, meta = load_policy(src, device="cpu", precision="fp32")
        name = Path(str(row.file)).stem + WEIGHTS_SUFFIX
        loaded.append((name, src, row, policy, meta))
    names = [x[0] for x in loaded]
    if len(set(names)) < len(names):
        raise UserError(
            f"two selected checkpoints would both be written as one file ({', '.join(names)})"
        )
    games = {(m.get("env_name"), m.get("distribution_mode", "easy")) for *_, m in loaded}
    old = _existing_shipped(out_dir)
    for _, r in old.iterrows():
        meta = read_checkpoint_meta(out_dir / str(r["file"]))
        games.add((meta.get("env_name"), meta.get("distribution_mode", "easy")))
    if len(games) > 1:
        listed = ", ".join(f"{g}/{m}" for g, m in sorted(games, key=str))
        raise UserError(
            f"one shipped folder holds one game and mode; this export would mix {listed} "
            f"in {out_dir}"
        )
    rows = []
    for name, src, row, policy, meta in loaded:
        # the training checkpoint it came from (kept when re-exporting an exported file)
        origin = meta.get("exported_from") if is_weights_file(src) else None
        meta = {**meta, "exported_from": origin or Path(str(row.file)).name}
        meta.pop("format_version", None)
        save_policy_weights(policy, out_dir / name, meta)
        rows.append(
            {
                "file": name,
                "timesteps": int(row.timesteps),
                "mean_return": float(row.mean_return),
                "source": str(row.file),
                "selected_by": row.selected_by,
            }
        )
        log.info(
            "%s -> %s (%d timesteps, mean training return %.2f; %s)",
            src,
            out_dir / name,
            int(row.timesteps),
            float(row.mean_return),
            row.selected_by,
        )
    new = pd.DataFrame(rows)
    kept = old[~old["file"].astype(str).isin(set(names))]
    manifest = pd.concat([kept, new], ignore_index=True) if len(kept) else new
    manifest = manifest.sort_values("timesteps", kind="stable").reset_index(drop=True)
    columns = MANIFEST_COLUMNS + [c for c in manifest.columns if c not in MANIFEST_COLUMNS]
    with atomic_path(out_dir / MANIFEST_NAME) as tmp:
        manifest[columns].to_csv(tmp, index=False)
    return manifest[columns]


def _existing_shipped(out_dir: Path) -> pd.DataFrame:
    """The rows of ``out_dir``'s manifest whose file exists (empty if none); UserError if
    ``out_dir`` is a training run's directory (its manifest lists .zip checkpoints)."""
    manifest = out_dir / MANIFEST_NAME
    if not manifest.is_file():
        return pd.DataFrame(columns=MANIFEST_COLUMNS)
    df = read_csv_checked(manifest, "checkpoint manifest", MANIFEST_COLUMNS)
    if not all(is_weights_file(f) for f in df["file"].astype(str)):
        raise UserError(
            f"{out_dir} is a training run's directory (its {MANIFEST_NAME} lists .zip "
            "checkpoints); export into another --out_dir"
        )
    exists = [(out_dir / str(f)).is_file() for f in df["file"]]
    if not all(exists):
        log.warning(
            "%s lists %d file(s) that are gone; they are dropped from it",
            manifest,
            exists.count(False),
        )
    return df[exists].drop_duplicates("file", keep="last").reset_index(drop=True)


#: level sets of test_policy and the manifest columns their scores go to
SCORE_COLUMNS = {
    "train": ("train_levels_return", "train_levels_se"),
    "test": ("unseen_levels_return", "unseen_levels_se"),
}


def add_test_scores(out_dir: str | os.PathLike, test_csv: str | os.PathLike) -> pd.DataFrame:
    """Put test_policy's scores of an exported folder's files into its manifest: per level set
    the mean true return and its standard error (the latest test of each file), and the
    number of episodes behind them. Returns the manifest (written atomically)."""
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    tests = read_csv_checked(
        test_csv,
        "test_policy CSV",
        ["load_path", "level_set", "return_mean", "return_std", "episodes"],
    )
    tests = tests[tests["load_path"] != "random"]
    tests = tests.assign(
        _file=[Path(p).name for p in tests["load_path"]],
        _dir=[str(Path(p).resolve().parent) for p in tests["load_path"]],
    )
    tests = tests[tests["_dir"] == str(out_dir.resolve())]
    if tests.empty:
        raise UserError(f"{test_csv} has no test of a file in {out_dir}")
    for level_set, (mean_col, se_col) in SCORE_COLUMNS.items():
        latest = (
            tests[tests["level_set"] == level_set]
            .drop_duplicates("_file", keep="last")
            .set_index("_file")
        )
        manifest[mean_col] = [
            float(latest.loc[f, "return_mean"]) if f in latest.index else float("nan")
            for f in manifest["file"]
        ]
        manifest[se_col] = [
            float(latest.loc[f, "return_std"] / np.sqrt(latest.loc[f, "episodes"]))
            if f in latest.index
            else float("nan")
            for f in manifest["file"]
        ]
        manifest[f"{level_set}_episodes"] = [
            int(latest.loc[f, "episodes"]) if f in latest.index else 0 for f in manifest["file"]
        ]
    columns = MANIFEST_COLUMNS + [c for c in manifest.columns if c not in MANIFEST_COLUMNS]
    with atomic_path(out_dir / MANIFEST_NAME) as tmp:
        manifest[columns].to_csv(tmp, index=False, float_format="%.4g")
    return manifest[columns]


def export_policy(cfg: ExportPolicyConfig) -> pd.DataFrame:
    """The export_policy stage: export the checkpoints ``cfg`` chooses from
    ``cfg.models_dir`` into ``cfg.out_dir`` (each checked to be of ``cfg.env_name`` when
    given), then add the scores of ``cfg.test_csv`` when given; with ``cfg.test_csv`` alone
    only the scores are updated. Returns ``out_dir``'s manifest."""
    from trex.rl.checkpoints import check_checkpoint_env

    if not cfg.selects:
        return add_test_scores(cfg.out_dir, cfg.test_csv)
    manifest = read_manifest(cfg.models_dir)
    selection = select_checkpoints(
        manifest, timesteps=cfg.timesteps, pick=cfg.pick, models_dir=cfg.models_dir
    )
    if cfg.env_name is not None:
        for f in selection["file"]:
            path = Path(cfg.models_dir) / str(f)
            check_checkpoint_env(read_checkpoint_meta(path), path, cfg.env_name)
    shipped = export_checkpoints(cfg.models_dir, cfg.out_dir, selection)
    if cfg.test_csv is not None:
        shipped = add_test_scores(cfg.out_dir, cfg.test_csv)
    return shipped
