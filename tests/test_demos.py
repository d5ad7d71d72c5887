"""The demo store: round trip, filters, appends without duplicates, combined indexes, and a
clear error naming the file for every kind of bad input."""

from __future__ import annotations

import multiprocessing as mp
import os
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trex.common.errors import UserError
from trex.demos.store import (
    DEMO_COLUMNS,
    REQUIRED_COLUMNS,
    Demo,
    DemoIndex,
    append_index,
    load_npz,
    read_index_ids,
    write_demo,
)


def make_arrays(t: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    obs = rng.integers(0, 256, size=(t, 64, 64, 3), dtype=np.uint8)
    act = rng.integers(0, 15, size=t).astype(np.int64)
    rew = rng.integers(0, 3, size=t).astype(np.float32)
    return obs, act, rew


def make_row(demo_id: str, t: int, ret: float, **kw) -> dict:
    row = {
        "demo_id": demo_id,
        "env_name": "starpilot",
        "mode": "easy",
        "length": t,
        "return": ret,
        "set_name": "train",
        "sequential": 0,
        "level_seed": 5,
        "policy": "random",
        "noise": 0.0,
        "file": f"demo_files/{demo_id}.npz",
        "done": True,
        "seed": 0,
        "policy_timesteps": -1,
    }
    row.update(kw)
    return row


def add_demo(
    root: Path, demo_id: str, t: int = 5, seed: int = 0, csv_name: str = "demo_infos.csv", **kw
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    obs, act, rew = make_arrays(t, seed)
    write_demo(root / "demo_files", demo_id, obs, act, rew)
    append_index(root / csv_name, [make_row(demo_id, t, float(rew.sum()), **kw)])
    return obs, act, rew


def test_round_trip(tmp_path: Path) -> None:
    obs, act, rew = add_demo(tmp_path, "0_000_000_001", t=7)
    index = DemoIndex.read(tmp_path / "demo_infos.csv")
    assert len(index) == 1 and index.ids() == ["0_000_000_001"]
    assert list(index.df.columns[: len(DEMO_COLUMNS)]) == DEMO_COLUMNS
    demo = index.load("0_000_000_001")
    assert isinstance(demo, Demo)
    assert demo.observations.dtype == np.uint8 and demo.observations.shape == (7, 64, 64, 3)
    assert demo.actions.dtype == np.int64 and demo.rewards.dtype == np.float32
    np.testing.assert_array_equal(demo.observations, obs)
    np.testing.assert_array_equal(demo.actions, act)
    np.testing.assert_array_equal(demo.rewards, rew)
    assert demo.info["length"] == 7 and demo.info["return"] == pytest.approx(rew.sum())
    assert demo.info["demo_id"] == "0_000_000_001"  # read as a string, not a number
    assert Path(demo.info["path"]).is_absolute()
    assert demo.info["done"] is True
    with np.load(tmp_path / "demo_files" / "0_000_000_001.npz", allow_pickle=False) as f:
        assert sorted(f.files) == ["actions", "observations", "rewards"]


def test_write_demo_is_atomic_and_never_clobbers(tmp_path: Path) -> None:
    obs, act, rew = make_arrays(3)
    p = write_demo(tmp_path, "a", obs, act, rew)
    with pytest.raises(UserError, match="already exists"):
        write_demo(tmp_path, "a", obs[:2], act[:2], rew[:2])
    assert load_npz(p)[0].shape[0] == 3
    write_demo(tmp_path, "a", obs[:2], act[:2], rew[:2], overwrite=True)
    assert load_npz(p)[0].shape[0] == 2
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.npz"]  # no temp files left


@pytest.mark.parametrize("bad", ["obs_dtype", "obs_shape", "act_len", "empty", "rew_shape"])
def test_write_demo_rejects_bad_arrays(tmp_path: Path, bad: str) -> None:
    obs, act, rew = make_arrays(4)
    if bad == "obs_dtype":
        obs = obs.astype(np.float32)
    elif bad == "obs_shape":
        obs = obs[:, :32]
    elif bad == "act_len":
        act = act[:3]
    elif bad == "empty":
        obs, act, rew = obs[:0], act[:0], rew[:0]
    elif bad == "rew_shape":
        rew = rew[:, None]
    with pytest.raises(UserError):
        write_demo(tmp_path, "x", obs, act, rew)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("demo_id", ["", "a/b", "..", "a,b", " a"])
def test_bad_demo_ids(tmp_path: Path, demo_id: str) -> None:
    obs, act, rew = make_arrays(2)
    with pytest.raises(UserError, match="invalid demo id"):
        write_demo(tmp_path, demo_id, obs, act, rew)


def test_append_refuses_duplicates(tmp_path: Path) -> None:
    csv = tmp_path / "demo_infos.csv"
    append_index(csv, [make_row("a", 1, 0.0), make_row("b", 1, 0.0)])
    before = csv.read_text()
    with pytest.raises(UserError, match=r"already has demo id\(s\) a"):
        append_index(csv, [make_row("c", 1, 0.0), make_row("a", 1, 0.0)])
    with pytest.raises(UserError, match="duplicate demo id"):
        append_index(csv, [make_row("d", 1, 0.0), make_row("d", 1, 0.0)])
    assert csv.read_text() == before  # nothing half-appended
    append_index(csv, [make_row("c", 1, 0.0)])
    assert read_index_ids(csv) == {"a", "b", "c"}
    with pytest.raises(UserError, match="lacks column"):
        append_index(csv, [{"demo_id": "e"}])


def _append_worker(args: tuple[str, int]) -> None:
    csv, k = args
    for i in range(5):
        append_index(csv, [make_row(f"w{k}_{i}", 1, 0.0)])


def test_concurrent_appends_keep_every_row(tmp_path: Path) -> None:
    csv = str(tmp_path / "demo_infos.csv")
    ctx = mp.get_context("fork")
    with ctx.Pool(3) as pool:
        pool.map(_append_worker, [(csv, k) for k in range(3)])
    index = DemoIndex.read(csv)
    assert sorted(index.ids()) == sorted(f"w{k}_{i}" for k in range(3) for i in range(5))


def test_filters(tmp_path: Path) -> None:
    add_demo(tmp_path, "a", t=3)
    add_demo(tmp_path, "b", t=8, set_name="test", level_seed=1_000_000_005)
    add_demo(tmp_path, "c", t=9, env_name="coinrun")
    add_demo(tmp_path, "d", t=4, mode="hard", sequential=3)
    index = DemoIndex.read(tmp_path / "demo_infos.csv")
    assert index.filter().ids() == ["a", "b", "c", "d"]
    assert index.filter(env_name="starpilot").ids() == ["a", "b", "d"]
    assert index.filter(mode="hard").ids() == ["d"]
    assert index.filter(set_name="test").ids() == ["b"]
    assert index.filter(set_name="train", env_name="starpilot").ids() == ["a", "d"]
    assert index.filter(sequential=0).ids() == ["a", "b", "c"]
    assert index.filter(sequential=3).ids() == ["d"]
    assert index.filter(sequential=True).ids() == ["d"]
    assert index.filter(sequential=False).ids() == ["a", "b", "c"]
    assert index.filter(min_length=8).ids() == ["b", "c"]
    assert index.filter(env_name="maze").ids() == []
    sub = index.filter(min_length=4)
    assert len(sub) == 3 and sub.load("c").info["length"] == 9  # a filtered index still loads
    with pytest.raises(UserError):
        sub.row("a")
    with pytest.raises(UserError, match="set_name"):
        index.filter(set_name="validation")


def test_combines_csvs_with_relative_files(tmp_path: Path) -> None:
    add_demo(tmp_path / "one", "a", t=3, seed=1)
    add_demo(tmp_path / "two" / "deep", "b", t=4, seed=2, csv_name="demo_infos_x.csv")
    index = DemoIndex.read(
        [tmp_path / "one" / "demo_infos.csv", tmp_path / "two" / "deep" / "demo_infos_x.csv"]
    )
    assert index.ids() == ["a", "b"]
    assert len(index.load("b")) == 4 and len(index.load("a")) == 3
    assert index.row("b")["csv"].endswith("demo_infos_x.csv")
    # moving a whole store keeps it readable: files are relative to the CSV
    os.rename(tmp_path / "one", tmp_path / "moved")
    assert len(DemoIndex.read(tmp_path / "moved" / "demo_infos.csv").load("a")) == 3


def test_duplicate_id_across_csvs_names_both(tmp_path: Path) -> None:
    add_demo(tmp_path / "one", "a")
    add_demo(tmp_path / "two", "a")
    with pytest.raises(UserError, match=r"demo id a is in more than one index: .*one.*two"):
        DemoIndex.read([tmp_path / "one" / "demo_infos.csv", tmp_path / "two" / "demo_infos.csv"])


def test_iter_demos_is_lazy(tmp_path: Path) -> None:
    for i, d in enumerate("abc"):
        add_demo(tmp_path, d, t=2 + i, seed=i)
    index = DemoIndex.read(tmp_path / "demo_infos.csv")
    (tmp_path / "demo_files" / "c.npz").unlink()
    it = index.iter_demos()
    assert isinstance(it, types.GeneratorType)
    assert [len(next(it)), len(next(it))] == [2, 3]  # earlier demos load before c is touched
    with pytest.raises(UserError, match="c.npz"):
        next(it)
    assert [d.demo_id for d in index.iter_demos(["b", "a"])] == ["b", "a"]


# ----------------------------------------------------------------------------- bad input


def test_missing_csv(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="demo index not found: .*nope.csv"):
        DemoIndex.read(tmp_path / "nope.csv")
    with pytest.raises(UserError, match="no demo index"):
        DemoIndex.read([])


def test_csv_missing_columns(tmp_path: Path) -> None:
    csv = tmp_path / "demo_infos.csv"
    pd.DataFrame([make_row("a", 1, 0.0)]).drop(columns=["level_seed", "noise"]).to_csv(
        csv, index=False
    )
    with pytest.raises(UserError, match=r"demo_infos.csv lacks column\(s\) level_seed, noise"):
        DemoIndex.read(csv)


def test_empty_and_malformed_csv(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(UserError, match="empty.csv is empty"):
        DemoIndex.read(empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text(",".join(REQUIRED_COLUMNS) + "\n")
    assert len(DemoIndex.read(header_only)) == 0
    bad = tmp_path / "bad.csv"
    pd.DataFrame([make_row("a", 1, 0.0, length="many")]).to_csv(bad, index=False)
    with pytest.raises(UserError, match="bad.csv has a malformed value"):
        DemoIndex.read(bad)
    dup = tmp_path / "dup.csv"
    pd.DataFrame([make_row("a", 1, 0.0), make_row("a", 1, 0.0)]).to_csv(dup, index=False)
    with pytest.raises(UserError, match="dup.csv repeats demo id"):
        DemoIndex.read(dup)


def test_unknown_id_names_the_csv(tmp_path: Path) -> None:
    add_demo(tmp_path, "a")
    index = DemoIndex.read(tmp_path / "demo_infos.csv")
    with pytest.raises(UserError, match=r"demo id 'zz' is not in .*demo_infos.csv"):
        index.load("zz")


def test_missing_npz(tmp_path: Path) -> None:
    add_demo(tmp_path, "a")
    (tmp_path / "demo_files" / "a.npz").unlink()
    with pytest.raises(UserError, match=r"demo file not found: .*a.npz"):
        DemoIndex.read(tmp_path / "demo_infos.csv").load("a")


@pytest.mark.parametrize(
    "how", ["garbage", "truncated", "missing_array", "bad_shape", "pickled", "length"]
)
def test_corrupt_npz(tmp_path: Path, how: str) -> None:
    obs, act, rew = add_demo(tmp_path, "a", t=6)
    path = tmp_path / "demo_files" / "a.npz"
    if how == "garbage":
        path.write_bytes(b"this is not a zip file at all")
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "missing_array":
        np.savez_compressed(path, observations=obs, actions=act)
    elif how == "bad_shape":
        np.savez_compressed(path, observations=obs[:, :10], actions=act, rewards=rew)
    elif how == "pickled":
        np.savez_compressed(
            path, observations=np.array([{"x": 1}], dtype=object), actions=act, rewards=rew
        )
    elif how == "length":
        np.savez_compressed(path, observations=obs[:5], actions=act[:5], rewards=rew[:5])
    with pytest.raises(UserError, match="a.npz"):
        DemoIndex.read(tmp_path / "demo_infos.csv").load("a")


def test_npz_format_matches_numpy(tmp_path: Path) -> None:
    """Demo files are np.savez_compressed's container (deflated .npy members) at any level."""
    import zipfile

    from trex.demos.store import savez_compressed

    obs, act, rew = make_arrays(4)
    for level in (1, 6):
        path = tmp_path / f"l{level}.npz"
        savez_compressed(path, level, observations=obs, actions=act, rewards=rew)
        with zipfile.ZipFile(path) as zf:
            assert sorted(zf.namelist()) == ["actions.npy", "observations.npy", "rewards.npy"]
            assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in zf.infolist())
        got = load_npz(path)
        for a, b in zip(got, (obs, act, rew)):
            np.testing.assert_array_equal(a, b)
    np.savez_compressed(tmp_path / "ref.npz", observations=obs, actions=act, rewards=rew)
    with zipfile.ZipFile(tmp_path / "ref.npz") as ref, zipfile.ZipFile(tmp_path / "l1.npz") as ours:
        assert sorted(ref.namelist()) == sorted(ours.namelist())
