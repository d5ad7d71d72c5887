"""Figures: the correlation and prediction plots write PNGs headless, from the library and
from the two stages; bad input gives a clear error and no file."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train_reward import make_store  # noqa: E402

from trex.common.files import append_csv_rows
from trex.plotting.correlations import (
    DemoPrediction,
    correlation_summary,
    plot_correlations,
    plot_reward_predictions,
    prediction_scale,
)
from trex.reward.model_file import save_reward_model
from trex.reward.nets import RM_COLUMNS, CnnRewardNet, prepare_net

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 1000


def _rm_rows(env="starpilot"):
    rng = np.random.default_rng(0)
    rows = []
    for n in (12, 25, 50):
        for s in range(3):
            rows.append(
                {
                    "rm_id": f"{n}_{s}",
                    "method": "trex",
                    "env_name": env,
                    "mode": "easy",
                    "num_dems": n,
                    "sequential": 0,
                    "pearson": float(rng.uniform(0.3, 0.9)),
                    "spearman": float(rng.uniform(0.3, 0.9)),
                    "baseline_pearson": 0.95,
                    "baseline_spearman": 0.9,
                }
            )
    return rows


def test_plot_correlations_png(tmp_path):
    rm = pd.DataFrame(_rm_rows())
    summary = correlation_summary(rm)
    assert summary["runs"].tolist() == [3, 3, 3]
    out = plot_correlations(rm, tmp_path / "fig" / "c.png", title="t", baseline=(0.95, 0.9))
    assert _is_png(out)
    one = rm.iloc[:1]  # one run: std 0, still a figure
    assert _is_png(plot_correlations(one, tmp_path / "one.png"))
    assert (
        "matplotlib.pyplot" not in sys.modules or not sys.modules["matplotlib.pyplot"].get_fignums()
    )


def test_plot_reward_predictions_png(tmp_path):
    rng = np.random.default_rng(0)
    preds = [
        DemoPrediction(f"d{i}", rng.random(30).astype(np.float32), rng.random(30) * 3)
        for i in range(5)
    ]
    out = plot_reward_predictions(preds, tmp_path / "p.png", title="model x")
    assert _is_png(out)
    exact = [
        DemoPrediction("a", np.ones(4), 2 * np.ones(4)),
        DemoPrediction("b", np.ones(6), 2 * np.ones(6)),
    ]
    assert prediction_scale(exact) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        plot_reward_predictions([], tmp_path / "none.png")


def test_plot_correlations_stage(tmp_path, capsys):
    from trex.plot_correlations import main

    csv = tmp_path / "rm_infos.csv"
    append_csv_rows(csv, _rm_rows(), columns=RM_COLUMNS)
    out = tmp_path / "corr.png"
    assert main(["--rm_csv_path", str(csv), "--env_name", "starpilot", "--out", str(out)]) == 0
    assert _is_png(out)
    assert "pearson_mean" in capsys.readouterr().out
    demo_csv = make_store(tmp_path / "demos", n_train=2, n_test=4)
    out2 = tmp_path / "corr2.png"
    assert (
        main(
            [
                "--rm_csv_path",
                str(csv),
                "--env_name",
                "starpilot",
                "--demo_csv",
                str(demo_csv),
                "--out",
                str(out2),
            ]
        )
        == 0
    )
    assert _is_png(out2)
    # bad input: nothing matches, a missing CSV
    assert (
        main(["--rm_csv_path", str(csv), "--env_name", "coinrun", "--out", str(tmp_path / "x.png")])
        == 2
    )
    assert main(["--rm_csv_path", str(tmp_path / "no.csv"), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "no reward models for coinrun" in err and "not found" in err and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()


@pytest.fixture()
def model_and_demos(tmp_path):
    demo_csv = make_store(tmp_path / "demos", n_train=2, n_test=6, length=12)
    torch.manual_seed(0)
    net = prepare_net(CnnRewardNet(), torch.device("cpu"))
    save_dir = tmp_path / "rm"
    save_reward_model(
        save_dir / "model_files" / "111_222.safetensors",
        net,
        env_name="starpilot",
        mode="easy",
        num_dems=12,
        seed=111222,
        rm_id="111_222",
    )
    append_csv_rows(
        save_dir / "rm_infos.csv",
        [
            {
                "rm_id": "111_222",
                "method": "trex",
                "env_name": "starpilot",
                "mode": "easy",
                "num_dems": 12,
                "sequential": 0,
                "pearson": 0.5,
                "spearman": 0.4,
                "model_file": "model_files/111_222.safetensors",
            }
        ],
        columns=RM_COLUMNS,
    )
    return demo_csv, save_dir / "rm_infos.csv"


def test_plot_reward_predictions_stage(tmp_path, model_and_demos, capsys):
    from trex.plot_reward_predictions import main

    demo_csv, rm_csv = model_and_demos
    out = tmp_path / "pred.png"
    base = [
        "--env_name",
        "starpilot",
        "--demo_csv",
        str(demo_csv),
        "--reward_csv",
        str(rm_csv),
        "--min_length",
        "5",
        "--num_demos",
        "4",
    ]
    assert main([*base, "--rm_id", "111_222", "--out", str(out)]) == 0
    assert _is_png(out)
    bad = tmp_path / "bad.png"
    assert main([*base, "--rm_id", "999_999", "--out", str(bad)]) == 2
    assert "not in" in capsys.readouterr().err
    # a reward model of another game
    args = ["--env_name", "coinrun", *base[2:], "--rm_id", "111_222", "--out", str(bad)]
    assert main(args) == 2
    assert "trained on starpilot, not coinrun" in capsys.readouterr().err
    # a missing, then a corrupt model file
    model = rm_csv.parent / "model_files" / "111_222.safetensors"
    data = model.read_bytes()
    model.unlink()
    assert main([*base, "--rm_id", "111_222", "--out", str(bad)]) == 2
    assert "not found" in capsys.readouterr().err
    model.write_bytes(data[: len(data) // 2])
    assert main([*base, "--rm_id", "111_222", "--out", str(bad)]) == 2
    assert "corrupt" in capsys.readouterr().err
    assert not bad.exists()
