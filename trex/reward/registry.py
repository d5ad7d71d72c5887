"""The ``rm_infos.csv`` registry of trained reward models: ids, file locations, lookups."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trex.common.errors import UserError
from trex.reward.model_file import MODEL_SUFFIX

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- rm_infos


def rm_csv_name(save_name: str | None) -> str:
    """``rm_infos.csv`` or ``rm_infos_<save_name>.csv`` (the original project's names)."""
    return "rm_infos.csv" if not save_name else f"rm_infos_{save_name}.csv"


def model_dir_name(save_name: str | None) -> str:
    """``model_files`` or ``model_files_<save_name>`` (the original project's names)."""
    return "model_files" if not save_name else f"model_files_{save_name}"


def rm_id_from_seed(seed: int) -> str:
    """The original project's reward model id: the random seed's digits split after the third
    (seed 1234567 -> ``123_4567``)."""
    s = f"{int(seed):07d}"  # short seeds zero-padded: 77 -> 000_0077, never "77_"
    return f"{s[:3]}_{s[3:]}"


def read_rm_infos(csv_path: str | os.PathLike) -> pd.DataFrame:
    """Read an ``rm_infos*.csv`` (rm_id kept as text); UserError naming the file on problems."""
    p = Path(csv_path)
    if not p.is_file():
        raise UserError(f"reward model index not found: {p}")
    try:
        df = pd.read_csv(
            p, dtype={"rm_id": str, "env_name": str, "mode": str, "model_file": str, "run_dir": str}
        )
    except pd.errors.EmptyDataError:
        raise UserError(f"reward model index {p} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise UserError(
            f"reward model index {p} is not a valid CSV ({str(err).splitlines()[0]})"
        ) from None
    missing = [c for c in ("rm_id", "env_name", "mode") if c not in df.columns]
    if missing:
        raise UserError(f"reward model index {p} lacks column(s) {', '.join(missing)}")
    dup = df["rm_id"].duplicated(keep="last")
    if dup.any():  # written by an older version on a retried run: the last row is the model on disk
        log.warning(
            "%s holds %d repeated rm_id row(s) (e.g. %s): keeping the last of each",
            p,
            int(dup.sum()),
            df.loc[dup, "rm_id"].iloc[0],
        )
        df = df[~dup].reset_index(drop=True)
    return df


def lookup_rm(rm_id: str, csv_path: str | os.PathLike) -> tuple[dict[str, Any], Path]:
    """(the rm_infos row of ``rm_id``, its model file path). The last row wins if an id was
    written twice. The path comes from the ``model_file`` column (relative to the CSV),
    else ``model_files/<rm_id>.safetensors`` next to the CSV. UserError if absent."""
    df = read_rm_infos(csv_path)
    rows = df[df["rm_id"] == str(rm_id)]
    if rows.empty:
        raise UserError(f"rm_id {rm_id} is not in {csv_path}")
    row = {
        k: (v.item() if isinstance(v, np.generic) else v)
        for k, v in rows.iloc[-1].to_dict().items()
    }
    base = Path(csv_path).resolve().parent
    rel = row.get("model_file")
    if isinstance(rel, str) and rel:
        path = base / rel
    else:
        path = base / model_dir_name(None) / f"{rm_id}{MODEL_SUFFIX}"
    return row, path


def resolve_reward_model(rm: str | os.PathLike, rm_csv: str | os.PathLike | None = None) -> Path:
    """A model file path from either a path to a ``.safetensors`` file or an rm_id looked up
    in ``rm_csv`` (default ``reward_models/rm_infos.csv``)."""
    text = str(rm)
    if text.endswith(MODEL_SUFFIX) or os.sep in text:
        return Path(text)
    _, path = lookup_rm(text, rm_csv or Path("reward_models") / rm_csv_name(None))
    return path


def check_rm_csv_header(path: str | os.PathLike, columns: Sequence[str]) -> None:
    """UserError, before any training, when an existing rm_infos CSV lacks some of
    ``columns`` (its rows could not take ours: e.g. one written before ``variant`` existed)."""
    import csv

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return
    with path.open(newline="") as f:
        header = next(csv.reader(f), [])
    missing = [c for c in columns if c not in header]
    if missing:
        raise UserError(
            f"{path} was written by an older version (no column(s) {', '.join(missing)}): "
            "use another --save_name or --save_dir, or add the columns to it"
        )


def finished_row(
    rm_csv: str | os.PathLike,
    rm_id: str,
    model_path: str | os.PathLike,
    identity: Mapping[str, Any],
    seed: int,
) -> dict[str, Any] | None:
    """The rm_infos row of ``rm_id`` if that run already finished (row and model file
    there), else None. ``identity``: the values that decide which model a run makes
    (:meth:`trex.reward.config.TrainRewardConfig.identity`); UserError if the model file
    of ``rm_id`` was trained with other values of them (other flags, same seed)."""
    from trex.reward.model_file import read_metadata

    rm_csv, model_path = Path(rm_csv), Path(model_path)
    if not rm_csv.is_file() or rm_csv.stat().st_size == 0:
        return None
    rows = read_rm_infos(rm_csv)
    rows = rows[rows["rm_id"] == rm_id]
    if rows.empty:
        return None
    if not model_path.is_file():
        raise UserError(
            f"{rm_csv} lists rm_id {rm_id} but {model_path} is missing; pass --overwrite "
            f"to train it again"
        )
    theirs = read_metadata(model_path).get("training", {})
    differ = sorted(k for k, v in identity.items() if k in theirs and theirs[k] != v)
    if differ:
        raise UserError(
            f"reward model {model_path} (rm_id {rm_id}, seed {seed}) was trained with "
            f"other {', '.join(differ[:5])}; pass another --seed or --save_name, or --overwrite"
        )
    return {
        k: (None if isinstance(v, float) and v != v else v)
        for k, v in rows.iloc[-1].to_dict().items()
    }


def select_rm_rows(
    csv_paths: Sequence[str | os.PathLike],
    env_name: str,
    mode: str,
    sequential: int = 0,
    where: Sequence[str] = (),
    numeric: Sequence[str] = (),
    columns: Sequence[str] = (),
) -> pd.DataFrame:
    """The rm_infos rows (of several CSVs combined) of one game, mode and ``sequential``
    value, and where each ``COLUMN=VALUE`` of ``where`` holds (compared as text); the
    ``numeric`` columns converted to numbers, rows without one of them dropped. UserError
    when a CSV lacks ``sequential``, a ``numeric`` or a ``columns`` column, for a bad
    ``where``, or when no row is left."""
    rm = pd.concat([read_rm_infos(p) for p in csv_paths], ignore_index=True, sort=False)
    names = ", ".join(str(p) for p in csv_paths)
    need = [c for c in dict.fromkeys(("sequential", *columns, *numeric)) if c not in rm.columns]
    if need:
        raise UserError(f"{names}: missing column(s) {', '.join(need)}")
    sel = rm[
        (rm["env_name"] == env_name)
        & (rm["mode"] == mode)
        & (pd.to_numeric(rm["sequential"], errors="coerce") == sequential)
    ]
    for cond in where:
        col, sep, value = cond.partition("=")
        if not sep or col not in sel.columns:
            raise UserError(
                f"--where {cond!r}: expected COLUMN=VALUE with a column of the rm_infos CSV"
            )
        sel = sel[sel[col].astype(str) == value]
    for m in numeric:
        sel = sel.assign(**{m: pd.to_numeric(sel[m], errors="coerce")})
    sel = sel.dropna(subset=list(numeric))
    if sel.empty:
        raise UserError(
            f"no reward models for {env_name} {mode} sequential={sequential}"
            f"{' ' + ' '.join(where) if where else ''} with {', '.join(numeric)} in {names}"
        )
    return sel
