"""The ``rm_infos.csv`` registry of trained reward models: ids, file locations, lookups."""

from __future__ import annotations

import logging
import os
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
