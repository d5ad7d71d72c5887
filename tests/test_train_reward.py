"""train_reward end to end on a tiny synthetic demo store: outputs and their formats, same
seed -> same model, and a clear error with nothing written for each kind of bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from trex.demos.store import append_index, write_demo
from trex.reward.model_file import read_metadata
from trex.reward.nets import UPSTREAM_RM_COLUMNS
from trex.reward.registry import lookup_rm, rm_id_from_seed
from trex.train_reward import main

ROOT = Path(__file__).resolve().parents[1]


def synth_demo(
    length: int, p_hit: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Dim random frames; a frame shows a bright 8x8 square with probability ``p_hit`` and
    then has true reward 1 (else 0): a reward the network can learn from pixels."""
    obs = rng.integers(0, 60, size=(length, 64, 64, 3), dtype=np.uint8)
    hit = rng.random(length) < p_hit
    obs[hit, 20:28, 20:28, :] = 255
    return obs, hit.astype(np.float32)


def make_store(
    root: str | Path,
    n_train: int = 12,
    n_test: int = 8,
    length: int = 12,
    env_name: str = "starpilot",
    seed: int = 0,
    equal_returns: bool = False,
    csv_name: str = "demo_infos.csv",
) -> Path:
    """A demo store of synthetic demos (train and test sets); returns the index CSV path."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    rows = []
    for set_name, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            t = int(length + rng.integers(0, length // 2 + 1))
            p = 0.3 if equal_returns else float(rng.uniform(0.05, 0.7))
            obs, rew = synth_demo(t, p, rng)
            if equal_returns:
                rew[:] = 0
                rew[:3] = 1
            demo_id = f"{env_name[:3]}{seed}_{set_name}_{i}"
            write_demo(root / "demo_files", demo_id, obs, rng.integers(0, 15, t), rew)
            rows.append(
                {
                    "demo_id": demo_id,
                    "env_name": env_name,
                    "mode": "easy",
                    "length": t,
                    "return": float(rew.sum()),
                    "set_name": set_name,
                    "sequential": 0,
                    "level_seed": int(i + (10**9 if set_name == "test" else 0)),
                    "policy": "synthetic",
                    "noise": 0.0,
                    "file": f"demo_files/{demo_id}.npz",
                }
            )
    csv = root / csv_name
    append_index(csv, rows)
    return csv


TINY = [
    "--env_name",
    "starpilot",
    "--num_dems",
    "8",
    "--num_snippets",
    "100",
    "--min_snippet_length",
    "3",
    "--max_snippet_length",
    "8",
    "--epoch_size",
    "32",
    "--max_num_epochs",
    "2",
    "--patience",
    "2",
    "--batch_size",
    "16",
    "--num_val_snippets",
    "32",
    "--num_test_snippets",
    "32",
]


def tiny_args(tmp: Path, csv: Path, *extra: str, seed: int = 1234567) -> list[str]:
    return [
        *TINY,
        "--demo_csv",
        str(csv),
        "--save_dir",
        str(tmp / "rm"),
        "--log_dir",
        str(tmp / "logs"),
        "--seed",
        str(seed),
        *extra,
    ]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("demos"))


def test_outputs(tmp_path, store, capsys):
    assert main(tiny_args(tmp_path, store)) == 0
    rm_id = rm_id_from_seed(1234567)
    assert rm_id == "123_4567"
    csv = tmp_path / "rm" / "rm_infos.csv"
    df = pd.read_csv(csv, dtype={"rm_id": str})
    assert list(df.columns[: len(UPSTREAM_RM_COLUMNS)]) == UPSTREAM_RM_COLUMNS
    for col in (
        "seed",
        "n_test_demos",
        "baseline_pearson",
        "baseline_spearman",
        "gt_snippet_acc",
        "wall_s",
    ):
        assert col in df.columns
    row = df.iloc[0]
    assert row["rm_id"] == rm_id and row["method"] == "trex" and row["num_dems"] == 8
    assert row["n_test_demos"] == 8 and 0 <= row["gt_snippet_acc"] <= 1
    assert 0 <= row["val_acc"] <= 1 and np.isfinite(row["pearson"])
    # the model file and its metadata
    _, path = lookup_rm(rm_id, csv)
    assert path == tmp_path / "rm" / "model_files" / f"{rm_id}.safetensors" and path.exists()
    meta = read_metadata(path)
    assert meta["env_name"] == "starpilot" and meta["mode"] == "easy" and meta["num_dems"] == 8
    assert meta["seed"] == 1234567 and meta["architecture"] == "seed_cnn"
    assert meta["training"]["lr"] == 5e-5 and meta["training"]["batch_size"] == 16
    assert meta["format_version"] == 1
    # the run directory
    runs = list((tmp_path / "logs" / rm_id).iterdir())
    assert len(runs) == 1
    run = runs[0]
    assert {"config.json", "train_log.csv", "log.txt"} <= {p.name for p in run.iterdir()}
    log = pd.read_csv(run / "train_log.csv")
    assert len(log) == row["epochs"] and {
        "train_acc",
        "val_acc",
        "test_acc",
        "pearson",
        "spearman",
        "window_pearson",
        "n_train_samples",
    } <= set(log.columns)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["args"]["seed"] == 1234567 and len(cfg["chosen_demos"]) == 8
    assert not set(cfg["train_demo_ids"]) & set(cfg["val_demo_ids"])
    assert "val_acc" in capsys.readouterr().out
    # the same run again: already complete, nothing added, nothing retrained
    mtime = (tmp_path / "rm" / row["model_file"]).stat().st_mtime_ns
    assert main(tiny_args(tmp_path, store)) == 0
    assert len(pd.read_csv(csv)) == 1 and len(list((tmp_path / "logs" / rm_id).iterdir())) == 1
    assert (tmp_path / "rm" / row["model_file"]).stat().st_mtime_ns == mtime
    assert "already complete" in capsys.readouterr().err
    # the same rm_id from other flags: refused without --overwrite, nothing added
    assert main(tiny_args(tmp_path, store, "--lam_l1", "0.01")) == 2
    assert "other lam_l1" in capsys.readouterr().err
    assert len(pd.read_csv(csv)) == 1
    # --overwrite retrains and replaces the row: still one row
    assert main(tiny_args(tmp_path, store, "--lam_l1", "0.01", "--overwrite")) == 0
    df = pd.read_csv(csv, dtype={"rm_id": str})
    assert len(df) == 1 and df["rm_id"].iloc[0] == rm_id


def test_same_seed_same_model(tmp_path, store):
    from safetensors.torch import load_file

    paths = []
    for k in range(2):
        out = tmp_path / f"r{k}"
        assert main(tiny_args(out, store, seed=42)) == 0
        paths.append(out / "rm" / "model_files" / f"{rm_id_from_seed(42)}.safetensors")
    a, b = load_file(str(paths[0])), load_file(str(paths[1]))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    c = tmp_path / "r2"
    assert main(tiny_args(c, store, "--max_num_epochs", "1", seed=43)) == 0
    d = load_file(str(c / "rm" / "model_files" / f"{rm_id_from_seed(43)}.safetensors"))
    assert not all(torch.equal(a[k], d[k]) for k in a)


def test_save_name_and_config_file(tmp_path, store):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("num_dems: 6\nuse_clip_heuristic: false\nprecision: fp32\n")
    args = tiny_args(tmp_path, store, "-c", str(cfg), "--save_name", "sweep", seed=7654321)
    i = args.index("--num_dems")
    del args[i : i + 2]  # num_dems from the config file
    assert main(args) == 0
    csv = tmp_path / "rm" / "rm_infos_sweep.csv"
    row, path = lookup_rm("765_4321", csv)
    assert row["num_dems"] == 6 and row["precision"] == "fp32"
    assert path.parent.name == "model_files_sweep" and path.exists()
    assert read_metadata(path)["training"]["use_clip_heuristic"] is False


def _nothing_written(tmp: Path) -> bool:
    return not (tmp / "rm").exists() and not (tmp / "logs").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--num_dems", "50"], "only 12"),
        (["--min_snippet_length", "30", "--max_snippet_length", "40"], "no training demos"),
        (["--min_snippet_length", "8", "--max_snippet_length", "5"], "must be smaller"),
        (["--env_name", "coinrun"], "no training demos"),
        (["--env_name", "nosuchgame"], "unknown env_name"),
        (["--num_dems", "3"], "validation demos"),
        (["--num_dems", "2"], "training demos"),
        (["--num_dems", "1"], "at least 2"),
        (["--max_return", "0.01"], "--max_return"),
        (["--select_by", "test_acc"], "--select_by must be one of"),
    ],
)
def test_bad_input(tmp_path, store, capsys, extra, message):
    assert main(tiny_args(tmp_path, store, *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert _nothing_written(tmp_path)


def test_equal_returns(tmp_path, capsys):
    csv = make_store(tmp_path / "d", equal_returns=True)
    assert main(tiny_args(tmp_path, csv)) == 2
    assert "same return" in capsys.readouterr().err
    assert _nothing_written(tmp_path)


def test_missing_or_corrupt_demos(tmp_path, store, capsys):
    assert main(tiny_args(tmp_path, tmp_path / "nope.csv")) == 2
    assert "not found" in capsys.readouterr().err
    csv = make_store(tmp_path / "d", n_train=10, n_test=4)
    victim = next((tmp_path / "d" / "demo_files").glob("*train_0.npz"))
    victim.write_bytes(b"not a zip file")
    # every training demo is chosen when num_dems equals the number available
    assert main(tiny_args(tmp_path, csv, "--num_dems", "10")) == 2
    assert "corrupt" in capsys.readouterr().err
    assert _nothing_written(tmp_path)


def test_no_test_demos(tmp_path, capsys):
    csv = make_store(tmp_path / "d", n_test=0)
    assert main(tiny_args(tmp_path, csv)) == 2
    assert "test demos" in capsys.readouterr().err
    assert _nothing_written(tmp_path)


def test_cli_runs_as_module_and_script():
    for cmd in (
        [sys.executable, "-m", "trex.train_reward", "--help"],
        [sys.executable, str(ROOT / "trex" / "train_reward.py"), "--help"],
    ):
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert out.returncode == 0, out.stderr
        for flag in (
            "--num_dems",
            "--max_return",
            "--use_clip_heuristic",
            "--lam_l1",
            "--save_name",
            "--demo_csv",
            "--precision",
            "--batch_size",
        ):
            assert flag in out.stdout
