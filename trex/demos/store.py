"""The demo store: ``demo_infos.csv`` (one row per demo) plus one ``<demo_id>.npz`` per demo.

Formats (DESIGN.md): each ``.npz`` (``np.savez_compressed``'s format, read with
``allow_pickle=False``) holds ``observations`` uint8 (T, 64, 64, 3), ``actions`` int64 (T,),
``rewards`` float32 (T,). The index row of a demo names its file relative to the CSV, so a
demo directory can be moved or copied as a whole.

Reading is lazy: :class:`DemoIndex` holds only the CSV rows; :meth:`DemoIndex.load` and
:meth:`DemoIndex.iter_demos` read one ``.npz`` at a time. Several index CSVs can be
combined (``--demo_csv a.csv b.csv`` in later stages); a demo id must be unique across them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trex.common.errors import UserError
from trex.common.runs import fault_point

log = logging.getLogger(__name__)

#: the columns DESIGN.md fixes, in order; a CSV must have all of them
REQUIRED_COLUMNS: list[str] = [
    "demo_id",
    "env_name",
    "mode",
    "length",
    "return",
    "set_name",
    "sequential",
    "level_seed",
    "policy",
    "noise",
    "file",
]
#: extra columns gen_demos writes after the required ones: ``done`` = the episode ended by
#: itself (False: cut at --max_ep_len), ``seed`` = gen_demos' --seed, ``policy_timesteps`` =
#: training steps of the checkpoint (-1 for the random policy); the level pool the demo was
#: drawn from, [start_level, start_level + num_levels), and whether backgrounds were drawn
EXTRA_COLUMNS: list[str] = [
    "done",
    "seed",
    "policy_timesteps",
    "start_level",
    "num_levels",
    "use_backgrounds",
    "run_key",
]
#: ``run_key``: a hash of the gen_demos run's arguments and seed (a retried run finds its demos)
#: the columns that say which level pool a demo comes from
POOL_COLUMNS: list[str] = ["start_level", "num_levels", "use_backgrounds"]
DEMO_COLUMNS: list[str] = REQUIRED_COLUMNS + EXTRA_COLUMNS
#: column DemoIndex adds: the absolute path of the demo's .npz
PATH_COLUMN = "path"
#: column DemoIndex adds: the index CSV a row came from
CSV_COLUMN = "csv"
DEFAULT_INDEX_NAME = "demo_infos.csv"
DEFAULT_FILES_DIR = "demo_files"
OBS_SHAPE: tuple[int, int, int] = (64, 64, 3)
#: deflate level of demo files: measured on starpilot demos, level 1 compresses as well as
#: np.savez_compressed's level 6 (~6 kB/frame) at twice the speed (72 vs 33 MB/s)
NPZ_COMPRESSLEVEL = 1

_DTYPES: dict[str, Any] = {
    "demo_id": str,
    "env_name": str,
    "mode": str,
    "set_name": str,
    "policy": str,
    "file": str,
    "run_key": str,
}


@dataclass
class Demo:
    """One demonstration: observations uint8 (T, 64, 64, 3), actions int64 (T,),
    rewards float32 (T,), and ``info``, its index row (with the absolute ``path``)."""

    demo_id: str
    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(len(self.actions))

    @property
    def ret(self) -> float:
        """The demo's return, the sum of its rewards."""
        return float(self.rewards.sum(dtype=np.float64))


# ----------------------------------------------------------------------------- writing


def check_demo_arrays(
    observations: np.ndarray, actions: np.ndarray, rewards: np.ndarray, where: str = "demo"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate and cast a demo's arrays: (T,64,64,3) uint8, (T,) int64, (T,) float32, T >= 1.

    Raises UserError naming ``where`` when shapes or dtypes do not fit.
    """
    obs = np.asarray(observations)
    act = np.asarray(actions)
    rew = np.asarray(rewards)
    if obs.dtype != np.uint8 or obs.ndim != 4 or obs.shape[1:] != OBS_SHAPE:
        raise UserError(
            f"{where}: observations must be uint8 (T, 64, 64, 3), got {obs.dtype} {obs.shape}"
        )
    t = obs.shape[0]
    if t == 0:
        raise UserError(f"{where}: a demo needs at least one step")
    if act.shape != (t,) or not np.issubdtype(act.dtype, np.integer):
        raise UserError(
            f"{where}: actions must be integers of shape ({t},), got {act.dtype} {act.shape}"
        )
    if rew.shape != (t,) or not (
        np.issubdtype(rew.dtype, np.floating) or np.issubdtype(rew.dtype, np.integer)
    ):
        raise UserError(
            f"{where}: rewards must be numbers of shape ({t},), got {rew.dtype} {rew.shape}"
        )
    return obs, act.astype(np.int64, copy=False), rew.astype(np.float32, copy=False)


def savez_compressed(
    file: Any, compresslevel: int = NPZ_COMPRESSLEVEL, **arrays: np.ndarray
) -> None:
    """``np.savez_compressed`` with a chosen deflate level: the same .npz container (a zip of
    ``<name>.npy`` members, deflated), read back by ``np.load(allow_pickle=False)``."""
    if compresslevel == 6:
        np.savez_compressed(file, **arrays)
        return
    with zipfile.ZipFile(
        file, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=compresslevel, allowZip64=True
    ) as zf:
        for name, arr in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(arr), allow_pickle=False)


def demo_file_path(demo_dir: str | os.PathLike, demo_id: str) -> Path:
    """``<demo_dir>/<demo_id>.npz``; UserError for ids that are not plain file names."""
    check_demo_id(demo_id)
    return Path(demo_dir) / f"{demo_id}.npz"


def check_demo_id(demo_id: str) -> str:
    """A demo id must be a non-empty plain name (no path separators, no comma, no newline)."""
    if (
        not isinstance(demo_id, str)
        or not demo_id
        or demo_id in {".", ".."}
        or any(c in demo_id for c in '/\\,\n\r"')
        or demo_id != demo_id.strip()
    ):
        raise UserError(f"invalid demo id {demo_id!r}")
    return demo_id


def write_demo(
    demo_dir: str | os.PathLike,
    demo_id: str,
    observations: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    overwrite: bool = False,
    compresslevel: int = NPZ_COMPRESSLEVEL,
) -> Path:
    """Write ``<demo_dir>/<demo_id>.npz`` atomically (the ``np.savez_compressed`` format);
    returns its path.

    observations uint8 (T, 64, 64, 3), actions int (T,), rewards float (T,). Without
    ``overwrite`` an existing file is never replaced (a UserError instead); the check and
    the final link are one atomic step, so two writers cannot both claim an id.
    """
    path = demo_file_path(demo_dir, demo_id)
    if not overwrite and path.exists():
        raise UserError(f"demo file already exists: {path}")
    tmp = compress_demo(demo_dir, demo_id, observations, actions, rewards, compresslevel)
    try:
        claim_demo_file(tmp, path, overwrite)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path


def _tmp_prefix(demo_id: str) -> str:
    """Temporary demo files are ``.<demo_id>.<host>.<pid>.<random>.tmp.npz``: a later run can
    tell the leftovers of a killed writer (its process is gone) from a live one's."""
    return f".{demo_id}.{socket.gethostname()}.{os.getpid()}."


def compress_demo(
    demo_dir: str | os.PathLike,
    demo_id: str,
    observations: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    compresslevel: int = NPZ_COMPRESSLEVEL,
) -> Path:
    """Validate and compress a demo into a temporary file in ``demo_dir``; returns its path
    (the caller claims it with :func:`claim_demo_file` or removes it)."""
    path = demo_file_path(demo_dir, demo_id)
    obs, act, rew = check_demo_arrays(observations, actions, rewards, where=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=_tmp_prefix(demo_id), suffix=".tmp.npz", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            savez_compressed(f, compresslevel, observations=obs, actions=act, rewards=rew)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return tmp


def claim_demo_file(tmp: Path, path: Path, overwrite: bool = False) -> None:
    """Give a compressed temporary file its final name; without ``overwrite`` never clobber an
    existing file (an atomic no-clobber hard link; UserError "already exists")."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails if path exists: never clobbers a concurrent writer
    except FileExistsError:
        raise UserError(f"demo file already exists: {path}") from None
    except OSError:  # file systems without hard links
        if path.exists():
            raise UserError(f"demo file already exists: {path}") from None
        os.replace(tmp, path)


def commit_demo(csv_path: str | os.PathLike, tmp: Path, path: Path, row: dict) -> None:
    """Make a compressed demo visible: its file under its final name and its index row, both
    under the index lock (the commit point). A process killed inside leaves at most a file
    without a row, which :func:`remove_orphans` recognises because no writer holds the lock."""
    with _index_lock(Path(csv_path)):
        claim_demo_file(tmp, path)
        try:
            fault_point("demo_between_file_and_row")
            _append_index_locked(Path(csv_path), [row])
        except BaseException:
            path.unlink(missing_ok=True)  # no demo file without its index row
            raise


def remove_orphans(csv_path: str | os.PathLike, demo_dir: str | os.PathLike) -> list[Path]:
    """Delete what killed writers left in ``demo_dir``: demo files without an index row (a kill
    between claiming the file and appending the row) and temporary files of processes that no
    longer run on this host. Done under the index lock, so no live writer is mid-commit.
    Returns the removed paths."""
    demo_dir = Path(demo_dir)
    if not demo_dir.is_dir():
        return []
    removed: list[Path] = []
    host = socket.gethostname()
    with _index_lock(Path(csv_path)):
        ids = read_index_ids(csv_path)
        for f in demo_dir.iterdir():
            name = f.name
            if name.startswith(".") and name.endswith(".tmp.npz"):
                parts = name[1:].split(".")
                # .<id>.<host...>.<pid>.<rand>.tmp.npz: the pid is the third field from the end
                if (
                    len(parts) >= 5
                    and host in name
                    and parts[-4].isdigit()
                    and not _alive(int(parts[-4]))
                ):
                    f.unlink(missing_ok=True)
                    removed.append(f)
            elif name.endswith(".npz") and f.stem not in ids:
                f.unlink(missing_ok=True)
                removed.append(f)
    if removed:
        log.warning("removed %d file(s) left by an interrupted run in %s", len(removed), demo_dir)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _index_lock(path: Path):
    """The lock append_csv_rows uses too (``<csv>.lock``), so all CSV writers agree."""
    from filelock import FileLock

    return FileLock(str(path) + ".lock", timeout=600)


def read_index_ids(csv_path: str | os.PathLike) -> set[str]:
    """Demo ids already in an index CSV (empty set if the file does not exist)."""
    p = Path(csv_path)
    if not p.exists() or p.stat().st_size == 0:
        return set()
    return set(_read_csv(p)["demo_id"])


def append_index(csv_path: str | os.PathLike, rows: list[dict]) -> None:
    """Append demo rows to an index CSV under a file lock (header written if new).

    Columns: :data:`DEMO_COLUMNS` for a new file; an existing file keeps its header.
    Refuses (UserError, nothing written) rows whose ``demo_id`` is already in the file or
    repeated within ``rows``, and rows missing a required column.
    """
    p = Path(csv_path)
    if not rows:
        return
    for row in rows:
        missing = [c for c in REQUIRED_COLUMNS if c not in row]
        if missing:
            raise UserError(
                f"{p}: demo row {row.get('demo_id')!r} lacks column(s) {', '.join(missing)}"
            )
        check_demo_id(str(row["demo_id"]))
    ids = [str(r["demo_id"]) for r in rows]
    dup_in_rows = sorted({i for i in ids if ids.count(i) > 1})
    if dup_in_rows:
        raise UserError(
            f"{p}: duplicate demo id(s) among the new rows: {', '.join(dup_in_rows[:5])}"
        )
    p.parent.mkdir(parents=True, exist_ok=True)
    with _index_lock(p):
        _append_index_locked(p, rows)


def _append_index_locked(p: Path, rows: list[dict]) -> None:
    """:func:`append_index`'s checks and write; the caller holds the index lock."""
    ids = [str(r["demo_id"]) for r in rows]
    header: list[str] | None = None
    if p.exists() and p.stat().st_size > 0:
        existing = _read_csv(p)
        header = list(existing.columns)
        taken = sorted(set(ids) & set(existing["demo_id"]))
        if taken:
            raise UserError(
                f"{p} already has demo id(s) {', '.join(taken[:5])}"
                + (" ..." if len(taken) > 5 else "")
            )
    columns = header or DEMO_COLUMNS + sorted({k for r in rows for k in r} - set(DEMO_COLUMNS))
    extra = sorted({k for r in rows for k in r} - set(columns))
    if extra:
        raise UserError(f"{p}: rows have columns the file does not ({', '.join(extra)})")
    frame = pd.DataFrame([{c: r.get(c, "") for c in columns} for r in rows], columns=columns)
    text = frame.to_csv(index=False, header=header is None, lineterminator="\n")
    with p.open("a", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


# ----------------------------------------------------------------------------- reading


def _read_csv(path: Path) -> pd.DataFrame:
    """Read one index CSV with the right dtypes; UserError naming it for any problem."""
    if not path.is_file():
        raise UserError(f"demo index not found: {path}")
    try:
        df = pd.read_csv(path, dtype=_DTYPES, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise UserError(f"demo index {path} is empty (no header)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise UserError(
            f"demo index {path} is not a valid CSV ({str(err).splitlines()[0]})"
        ) from None
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"demo index {path} lacks column(s) {', '.join(missing)}")
    if df["demo_id"].isna().any() or df["file"].isna().any():
        raise UserError(f"demo index {path} has rows without demo_id or file")
    try:
        df["length"] = df["length"].astype(np.int64)
        df["level_seed"] = df["level_seed"].astype(np.int64)
        df["return"] = df["return"].astype(np.float64)
        df["noise"] = df["noise"].astype(np.float64)
        df["sequential"] = df["sequential"].map(_as_int).astype(np.int64)
        if "done" in df.columns:
            df["done"] = df["done"].map(_as_bool)
        _fill_pool_columns(df)
    except (ValueError, TypeError) as err:
        raise UserError(
            f"demo index {path} has a malformed value ({str(err).splitlines()[0]})"
        ) from None
    dups = df["demo_id"][df["demo_id"].duplicated()]
    if len(dups):
        raise UserError(
            f"demo index {path} repeats demo id(s) {', '.join(map(str, dups.iloc[:5]))}"
        )
    return df


def _fill_pool_columns(df: pd.DataFrame) -> None:
    """Pool columns as int64/bool; rows of indexes written before pools were recorded get the
    pools every demo then came from: the whole training or test range, backgrounds on."""
    from trex.common.envs import TEST_LEVELS, TRAIN_LEVELS

    test = (df["set_name"] == "test").to_numpy()
    for col, i in (("start_level", 0), ("num_levels", 1)):
        default = np.where(test, TEST_LEVELS[i], TRAIN_LEVELS[i])
        if col not in df.columns:
            df[col] = default
        else:
            v = pd.to_numeric(df[col], errors="raise")
            df[col] = np.where(v.isna(), default, v).astype(np.int64)
    if "use_backgrounds" not in df.columns:
        df["use_backgrounds"] = True
    else:
        df["use_backgrounds"] = [
            True if isinstance(v, float) and np.isnan(v) else _as_bool(v)
            for v in df["use_backgrounds"]
        ]


def _as_int(v: Any) -> int:
    if isinstance(v, str):
        low = v.strip().lower()
        if low in {"true", "false"}:
            return int(low == "true")
    if isinstance(v, float) and np.isnan(v):
        raise ValueError("missing sequential value")
    return int(v)


def _as_bool(v: Any) -> bool:
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, float) and np.isnan(v):
        return True  # rows written without the column: treated as complete episodes
    low = str(v).strip().lower()
    if low in {"true", "1", "1.0", "t", "yes"}:
        return True
    if low in {"false", "0", "0.0", "f", "no"}:
        return False
    raise ValueError(f"not a boolean: {v!r}")


class DemoIndex:
    """The rows of one or more ``demo_infos.csv`` files; demos are loaded on demand.

    ``df`` has one row per demo with the CSV columns plus ``path`` (absolute path of the
    .npz) and ``csv`` (the index file the row came from).
    """

    def __init__(self, df: pd.DataFrame, sources: Sequence[Path] = ()) -> None:
        self.df = df.reset_index(drop=True)
        self.sources = [Path(s) for s in sources]
        self._pos = {d: i for i, d in enumerate(self.df["demo_id"])} if len(self.df) else {}

    @classmethod
    def read(cls, csv_paths: str | os.PathLike | Iterable[str | os.PathLike]) -> DemoIndex:
        """Read and combine index CSVs; ``file`` is resolved relative to its CSV.

        UserError for a missing/malformed CSV, missing columns, or an id in two CSVs.
        """
        if isinstance(csv_paths, (str, os.PathLike)):
            csv_paths = [csv_paths]
        paths = [Path(p) for p in csv_paths]
        if not paths:
            raise UserError("no demo index CSV given")
        frames = []
        for p in paths:
            df = _read_csv(p)
            base = p.resolve().parent
            df[PATH_COLUMN] = [str(base / f) for f in df["file"]]
            df[CSV_COLUMN] = str(p)
            frames.append(df)
        if len(frames) == 1:
            df = frames[0]
        else:
            df = pd.concat(frames, ignore_index=True, sort=False)
            dup = df["demo_id"].duplicated(keep=False)
            if dup.any():
                first = df.loc[dup, "demo_id"].iloc[0]
                where = sorted(set(df.loc[df["demo_id"] == first, CSV_COLUMN]))
                raise UserError(f"demo id {first} is in more than one index: {', '.join(where)}")
        if "done" in df.columns:
            df["done"] = df["done"].map(_as_bool).astype(bool)
        return cls(df, paths)

    def _where(self) -> str:
        return ", ".join(str(s) for s in self.sources) or "the demo index"

    def __len__(self) -> int:
        return len(self.df)

    def __contains__(self, demo_id: object) -> bool:
        return demo_id in self._pos

    def ids(self) -> list[str]:
        """Demo ids in index order."""
        return list(self.df["demo_id"])

    def filter(
        self,
        env_name: str | None = None,
        mode: str | None = None,
        set_name: str | None = None,
        sequential: int | bool | None = None,
        min_length: int | None = None,
    ) -> DemoIndex:
        """The demos matching every given criterion (None = any).

        ``sequential``: an int matches that value; True/False match nonzero/zero.
        """
        mask = np.ones(len(self.df), dtype=bool)
        if env_name is not None:
            mask &= (self.df["env_name"] == env_name).to_numpy()
        if mode is not None:
            mask &= (self.df["mode"] == mode).to_numpy()
        if set_name is not None:
            if set_name not in ("train", "test"):
                raise UserError(f"set_name must be train or test, got {set_name!r}")
            mask &= (self.df["set_name"] == set_name).to_numpy()
        if sequential is not None:
            seq = self.df["sequential"].to_numpy()
            if isinstance(sequential, (bool, np.bool_)):
                mask &= (seq != 0) if sequential else (seq == 0)
            else:
                mask &= seq == int(sequential)
        if min_length is not None:
            mask &= (self.df["length"] >= int(min_length)).to_numpy()
        return DemoIndex(self.df[mask], self.sources)

    def row(self, demo_id: str) -> dict:
        """The index row of ``demo_id`` as a dict (with ``path``); UserError if absent."""
        i = self._pos.get(demo_id)
        if i is None:
            raise UserError(f"demo id {demo_id!r} is not in {self._where()}")
        return {k: _plain(v) for k, v in self.df.iloc[i].to_dict().items()}

    def load(self, demo_id: str) -> Demo:
        """Read one demo's .npz (``allow_pickle=False``); UserError naming the file if it is
        missing, corrupt, or its arrays do not fit the index row."""
        info = self.row(demo_id)
        path = Path(info[PATH_COLUMN])
        obs, act, rew = load_npz(path)
        if len(act) != int(info["length"]):
            raise UserError(
                f"demo file {path} has {len(act)} steps but the index "
                f"({info.get(CSV_COLUMN)}) says length {info['length']}"
            )
        return Demo(demo_id, obs, act, rew, info)

    def iter_demos(self, ids: Iterable[str] | None = None) -> Iterator[Demo]:
        """Yield demos one at a time (lazy: one .npz in memory at once), in index order
        or in the order of ``ids``."""
        for demo_id in self.ids() if ids is None else ids:
            yield self.load(demo_id)


def load_npz(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a demo file: (observations uint8 (T,64,64,3), actions int64 (T,), rewards float32 (T,)).

    UserError naming the file if it is missing, not a valid npz, or holds wrong arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"demo file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("observations", "actions", "rewards") if k not in data.files]
            if missing:
                raise UserError(f"demo file {path} lacks array(s) {', '.join(missing)}")
            obs, act, rew = data["observations"], data["actions"], data["rewards"]
    except UserError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as err:
        raise UserError(
            f"demo file {path} is corrupt or not a demo ({type(err).__name__})"
        ) from None
    return check_demo_arrays(obs, act, rew, where=f"demo file {path}")


def _plain(v: Any) -> Any:
    """numpy scalars -> Python scalars (rows are handed to JSON, CSV and users)."""
    if isinstance(v, np.generic):
        return v.item()
    return v
