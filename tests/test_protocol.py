"""The generalization protocol: level pools kept apart, reward-free (D-REX) ranking that
never reads the true reward, and the metrics that tell a learned reward from a survival bonus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file

from tests.test_train_reward import TINY, synth_demo
from trex.common.envs import level_pool, training_pool
from trex.common.errors import UserError
from trex.demos.store import DemoIndex, append_index, load_npz, write_demo
from trex.reward.metrics import (
    model_agreement,
    partial_correlation,
    pearson_distance,
    reward_metrics,
    window_correlation,
    window_sums,
)
from trex.reward.model_file import read_metadata
from trex.reward.pairs import split_train_val
from trex.reward.registry import rm_id_from_seed

NOISES = (0.0, 0.25, 0.5, 1.0)


# ----------------------------------------------------------------------------- metrics


def _episodes(seed: int = 0, n: int = 60):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(40, 200, size=n)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    true = (rng.random(offsets[-1]) < 0.05).astype(np.float64)
    return rng, lengths, offsets, true


def test_partial_correlation_tells_survival_from_content():
    rng, lengths, offsets, true = _episodes()
    constant = np.full(offsets[-1], 0.7)  # a survival bonus: +0.7 every step
    m_const = reward_metrics(constant, true, offsets, num_bootstrap=200)
    m_true = reward_metrics(true, true, offsets, num_bootstrap=200)
    assert m_const["partial"] == 0.0 and m_const["partial_lo"] == 0.0  # reported, not NaN
    assert m_true["partial"] == pytest.approx(1.0)
    # the survival bonus gets the length baseline's correlation exactly
    assert m_const["pearson"] == pytest.approx(m_const["baseline_pearson"])
    assert m_const["window_pearson"] == 0.0
    returns = np.add.reduceat(true, offsets[:-1])
    assert partial_correlation(lengths * 2.0, returns, lengths) == 0.0
    assert partial_correlation(returns, returns, lengths) == pytest.approx(1.0)


def test_window_metric_ignores_a_constant_per_frame():
    rng, _, offsets, true = _episodes(1)
    pred = true + rng.normal(0, 0.3, len(true))
    base = window_correlation(pred, true, offsets, 25)
    assert np.isfinite(base) and base > 0.3
    assert window_correlation(pred + 5.0, true, offsets, 25) == pytest.approx(base, abs=1e-9)
    m1 = reward_metrics(pred, true, offsets, 25, num_bootstrap=100)
    m2 = reward_metrics(pred - 3.0, true, offsets, 25, num_bootstrap=100)
    for key in ("window_pearson", "window_pearson_lo", "window_pearson_hi", "partial"):
        assert m1[key] == pytest.approx(m2[key], abs=1e-9)


def test_window_flag_reaches_the_per_epoch_metric():
    """--window sets the windows of train_log.csv's per-epoch window_pearson too, not only
    rm_infos' final one."""
    from trex.reward.config import TrainRewardConfig

    assert TrainRewardConfig(window=80).trex_config().window == 80


def test_window_sums_match_a_naive_loop():
    rng, lengths, offsets, true = _episodes(2, n=7)
    sums, demo = window_sums(true, offsets, 30)
    naive = [
        (true[a + k * 30 : a + (k + 1) * 30].sum(), i)
        for i, (a, b) in enumerate(zip(offsets[:-1], offsets[1:]))
        for k in range((b - a) // 30)
    ]
    assert np.allclose(sums[:, 0], [s for s, _ in naive]) and list(demo) == [i for _, i in naive]


def test_model_agreement_is_epic_pearson_distance():
    rng, _, offsets, _ = _episodes(3)
    f = rng.normal(size=offsets[-1])
    assert pearson_distance(f, 3.0 * f + 2.0) == pytest.approx(0.0, abs=1e-7)
    assert pearson_distance(f, -f) == pytest.approx(1.0)
    agree = model_agreement(np.stack([f, 0.5 * f - 1.0, -f]), offsets, num_bootstrap=50)
    d = agree["distance"]
    assert d[0, 1] == pytest.approx(0.0, abs=1e-6) and d[0, 2] == pytest.approx(1.0)
    assert agree["mean_distance"] == pytest.approx(2 / 3, abs=1e-6)


def test_bootstrap_intervals_bracket_the_estimate():
    rng, _, offsets, true = _episodes(4)
    pred = true + rng.normal(0, 1.0, len(true))
    m = reward_metrics(pred, true, offsets, num_bootstrap=300, seed=1)
    for key in ("pearson", "spearman", "partial", "window_pearson", "baseline_pearson"):
        assert m[f"{key}_lo"] <= m[key] <= m[f"{key}_hi"], key
        assert m[f"{key}_hi"] - m[f"{key}_lo"] > 0.01, key
    assert m == reward_metrics(pred, true, offsets, num_bootstrap=300, seed=1)  # seeded


def test_ranks_and_correlations_are_scipys():
    """Average ranks (ties averaged, a NaN row all NaN) and Pearson/Spearman agree with
    scipy.stats, which the toolkit no longer imports for them."""
    from scipy import stats

    from trex.reward.metrics import average_ranks, correlations

    rng = np.random.default_rng(0)
    for trial in range(50):
        n = int(rng.integers(2, 30))
        shape = (5, n)
        a = rng.integers(0, 4, shape).astype(float) if trial % 2 else rng.normal(size=shape)
        np.testing.assert_allclose(average_ranks(a), stats.rankdata(a, axis=1))
        t = rng.normal(size=n)
        if np.ptp(a[0]) > 0:
            r, rho = correlations(a[0], t)
            assert r == pytest.approx(stats.pearsonr(a[0], t)[0], abs=1e-12)
            assert rho == pytest.approx(stats.spearmanr(a[0], t)[0], abs=1e-12)
    assert np.isnan(average_ranks(np.array([[1.0, np.nan, 2.0]]))).all()


# ----------------------------------------------------------------------------- split and pools


def test_stratified_split_keeps_two_returns_in_validation():
    # coinrun-like returns: the original project's split leaves only 10s in validation
    keys = np.array([0, 10, 0, 10, 0, 10, 0, 10, 0, 10, 10, 10], dtype=float)
    train, val = split_train_val(keys)
    assert len(train) == 9 and len(val) == 3
    assert len(set(keys[val])) == 2 and len(set(keys[train])) == 2
    assert not set(train) & set(val) and sorted([*train, *val]) == list(range(12))
    # already fine: the original project's split unchanged
    tr, va = split_train_val(np.arange(12.0))
    assert list(tr) == list(range(9)) and list(va) == [9, 10, 11]


def test_level_pools_stay_inside_their_range():
    assert training_pool(0, None) == (0, 10**9)
    assert level_pool(None, None, test_set=True) == (10**9, 10**9)
    assert level_pool(10, 200) == (10, 200)
    for bad in ((0, 0, False), (10**9 - 5, 10, False), (5, 10, True)):
        with pytest.raises(UserError):
            level_pool(*bad[:2], test_set=bad[2])


def test_gen_demos_pool_gives_only_its_levels(tmp_path):
    from trex.gen_demos import main

    assert (
        main(
            [
                "--policy",
                "random",
                "--num_dems",
                "6",
                "--num_envs",
                "3",
                "--start_level",
                "10",
                "--num_levels",
                "3",
                "--max_ep_len",
                "20",
                "--log_dir",
                str(tmp_path / "d"),
                "--seed",
                "3",
                "--progress",
                "false",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "--policy",
                "random",
                "--num_dems",
                "4",
                "--num_envs",
                "2",
                "--test_set",
                "--num_levels",
                "2",
                "--max_ep_len",
                "20",
                "--log_dir",
                str(tmp_path / "d"),
                "--seed",
                "4",
                "--progress",
                "false",
            ]
        )
        == 0
    )
    df = DemoIndex.read(tmp_path / "d" / "demo_infos.csv").df
    train, test = df[df["set_name"] == "train"], df[df["set_name"] == "test"]
    assert train["level_seed"].between(10, 12).all()
    assert (train["start_level"] == 10).all() and (train["num_levels"] == 3).all()
    assert train["use_backgrounds"].all()
    assert test["level_seed"].between(10**9, 10**9 + 1).all()
    assert (test["start_level"] == 10**9).all() and (test["num_levels"] == 2).all()


def test_gen_demos_refuses_a_pool_outside_its_range(tmp_path, capsys):
    from trex.gen_demos import main

    assert (
        main(
            [
                "--policy",
                "random",
                "--num_dems",
                "2",
                "--test_set",
                "--start_level",
                "5",
                "--num_levels",
                "3",
                "--log_dir",
                str(tmp_path / "d"),
            ]
        )
        == 2
    )
    assert "test range" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_old_indexes_get_the_range_pools(tmp_path):
    csv = tmp_path / "demo_infos.csv"
    obs, rew = synth_demo(5, 0.5, np.random.default_rng(0))
    write_demo(tmp_path / "demo_files", "a", obs, np.zeros(5, int), rew)
    base = {
        "env_name": "starpilot",
        "mode": "easy",
        "length": 5,
        "return": float(rew.sum()),
        "sequential": 0,
        "policy": "x",
        "noise": 0.0,
        "file": "demo_files/a.npz",
    }
    append_index(
        csv,
        [
            {**base, "demo_id": "a", "set_name": "train", "level_seed": 3},
            {**base, "demo_id": "b", "set_name": "test", "level_seed": 10**9 + 3},
        ],
    )
    df = DemoIndex.read(csv).df.set_index("demo_id")
    assert (df.loc["a", "start_level"], df.loc["a", "num_levels"]) == (0, 10**9)
    assert (df.loc["b", "start_level"], df.loc["b", "num_levels"]) == (10**9, 10**9)
    assert bool(df.loc["a", "use_backgrounds"]) is True


# ----------------------------------------------------------------------------- train_reward


def make_pool_store(
    root: Path,
    pools=((0, 200),),
    n_per_pool: int = 12,
    n_test: int = 8,
    nan_rewards: bool = False,
    seed: int = 0,
    test_levels_from: int = 10**9,
) -> Path:
    """Synthetic demos from several training pools; noise and checkpoint age go with skill
    (less noise, later checkpoint: more bright frames = more reward)."""
    rng = np.random.default_rng(seed)
    rows = []
    jobs = [("train", s, n) for s, n in pools for _ in range(n_per_pool)] + [
        ("test", test_levels_from, 10**9) for _ in range(n_test)
    ]
    for k, (set_name, start, num) in enumerate(jobs):
        noise = NOISES[k % len(NOISES)]
        t = int(14 + rng.integers(0, 6))
        obs, rew = synth_demo(t, 0.7 * (1.0 - noise) + 0.05, rng)
        ret = float(rew.sum())
        if nan_rewards:
            rew[:] = np.nan
            ret = float("nan")
        demo_id = f"{set_name}_{k}"
        write_demo(root / "demo_files", demo_id, obs, rng.integers(0, 15, t), rew)
        rows.append(
            {
                "demo_id": demo_id,
                "env_name": "starpilot",
                "mode": "easy",
                "length": t,
                "return": ret,
                "set_name": set_name,
                "sequential": 0,
                "level_seed": int(start + k % min(num, 7)),
                "policy": f"ckpt_{k % 4}",
                "noise": noise,
                "file": f"demo_files/{demo_id}.npz",
                "done": True,
                "seed": 0,
                "policy_timesteps": int(1000 * (4 - k % 4)),
                "start_level": start,
                "num_levels": num,
                "use_backgrounds": True,
            }
        )
    append_index(root / "demo_infos.csv", rows)
    return root / "demo_infos.csv"


def _train(tmp: Path, csv: Path, *extra: str, seed: int = 1234567, name: str = "rm") -> int:
    from trex.train_reward import main

    return main(
        [
            *TINY,
            "--demo_csv",
            str(csv),
            "--save_dir",
            str(tmp / name),
            "--log_dir",
            str(tmp / f"{name}_logs"),
            "--seed",
            str(seed),
            "--num_bootstrap",
            "50",
            "--window",
            "5",
            *extra,
        ]
    )


def test_rank_by_noise_never_reads_the_true_reward(tmp_path):
    real = make_pool_store(tmp_path / "real", seed=5)
    blind = make_pool_store(tmp_path / "blind", seed=5, nan_rewards=True)
    assert pd.read_csv(blind)["return"].isna().all()
    assert np.isnan(load_npz(tmp_path / "blind" / "demo_files" / "train_0.npz")[2]).all()
    assert _train(tmp_path, real, "--rank_by", "noise", name="a") == 0
    assert _train(tmp_path, blind, "--rank_by", "noise", name="b") == 0
    rm_id = rm_id_from_seed(1234567)
    wa = load_file(str(tmp_path / "a" / "model_files" / f"{rm_id}.safetensors"))
    wb = load_file(str(tmp_path / "b" / "model_files" / f"{rm_id}.safetensors"))
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)
    row = pd.read_csv(tmp_path / "a" / "rm_infos.csv", dtype={"rm_id": str}).iloc[0]
    assert row["rank_by"] == "noise" and row["method"] == "drex-noise"
    assert np.isfinite(row["pearson"])  # the real run is still evaluated on true returns
    # ... and the ranking really is not the return: a return ranking gives another model
    assert _train(tmp_path, real, name="c") == 0
    wc = load_file(str(tmp_path / "c" / "model_files" / f"{rm_id}.safetensors"))
    assert not all((wa[k] == wc[k]).all() for k in wa)


def test_rank_by_checkpoint_and_snippet_rewards_need_return(tmp_path, capsys):
    csv = make_pool_store(tmp_path / "d")
    assert _train(tmp_path, csv, "--rank_by", "checkpoint") == 0
    meta = read_metadata(next((tmp_path / "rm" / "model_files").glob("*.safetensors")))
    assert meta["rank_by"] == "checkpoint"
    assert _train(tmp_path, csv, "--rank_by", "noise", "--use_snippet_rewards", name="x") == 2
    assert "needs --rank_by return" in capsys.readouterr().err


def test_mixed_pools_are_refused_and_pool_travels_with_the_model(tmp_path, capsys):
    csv = make_pool_store(tmp_path / "d", pools=((0, 10), (500, 200)))
    assert _train(tmp_path, csv) == 2
    err = capsys.readouterr().err
    assert "2 level pools" in err and "--mix_pools" in err
    assert not (tmp_path / "rm").exists()
    assert _train(tmp_path, csv, "--start_level", "500", "--num_levels", "200") == 0
    row = pd.read_csv(tmp_path / "rm" / "rm_infos.csv", dtype={"rm_id": str}).iloc[0]
    assert (row["start_level"], row["num_levels"]) == (500, 200)
    assert 1 <= row["n_train_levels"] <= 7
    meta = read_metadata(tmp_path / "rm" / row["model_file"])
    assert (meta["start_level"], meta["num_levels"], meta["use_backgrounds"]) == (500, 200, True)
    assert meta["n_train_levels"] == row["n_train_levels"]
    for key in ("partial", "partial_lo", "partial_hi", "window_pearson", "pearson_lo"):
        assert key in row.index
    assert _train(tmp_path, csv, "--mix_pools", seed=7654321) == 0


def test_levels_shared_by_train_and_test_are_refused(tmp_path, capsys):
    csv = make_pool_store(tmp_path / "d", test_levels_from=0)
    assert _train(tmp_path, csv) == 2
    assert "unseen levels" in capsys.readouterr().err


def test_train_reward_config_json_repeats_the_run(tmp_path):
    csv = make_pool_store(tmp_path / "d")
    assert _train(tmp_path, csv) == 0
    config = next((tmp_path / "rm_logs").rglob("config.json"))
    from trex.train_reward import main

    assert (
        main(
            [
                "-c",
                str(config),
                "--save_dir",
                str(tmp_path / "again"),
                "--log_dir",
                str(tmp_path / "again_logs"),
            ]
        )
        == 0
    )
    rm_id = rm_id_from_seed(1234567)
    a = load_file(str(tmp_path / "rm" / "model_files" / f"{rm_id}.safetensors"))
    b = load_file(str(tmp_path / "again" / "model_files" / f"{rm_id}.safetensors"))
    assert all((a[k] == b[k]).all() for k in a)


def test_gen_demos_config_json_repeats_the_run(tmp_path):
    from trex.gen_demos import main

    assert (
        main(
            [
                "--policy",
                "random",
                "--num_dems",
                "3",
                "--num_envs",
                "3",
                "--max_ep_len",
                "10",
                "--log_dir",
                str(tmp_path / "a"),
                "--seed",
                "2",
                "--num_levels",
                "50",
                "--progress",
                "false",
            ]
        )
        == 0
    )
    config = next((tmp_path / "a").rglob("config.json"))
    assert main(["-c", str(config), "--log_dir", str(tmp_path / "b")]) == 0
    a = pd.read_csv(tmp_path / "a" / "demo_infos.csv").sort_values("demo_id")
    b = pd.read_csv(tmp_path / "b" / "demo_infos.csv").sort_values("demo_id")
    assert list(a["demo_id"]) == list(b["demo_id"]) and list(a["return"]) == list(b["return"])


def test_train_policy_config_json_repeats_the_run(tmp_path):
    from tests.conftest import TINY_PPO_FLAGS
    from trex.train_policy import main

    assert (
        main(
            [
                "--env_name",
                "coinrun",
                *TINY_PPO_FLAGS,
                "--timesteps_per_proc",
                "32",
                "--log_dir",
                str(tmp_path / "a"),
                "--num_levels",
                "5",
            ]
        )
        == 0
    )
    config = tmp_path / "a" / "coinrun" / "easy" / "config.json"
    assert json.loads(config.read_text())["args"]["norm_gamma"] == 0.99
    assert main(["-c", str(config), "--log_dir", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "coinrun" / "easy" / "checkpoints.csv").is_file()


# ----------------------------------------------------------------------------- eval_reward, plots


def test_eval_reward_on_any_demo_set(tmp_path, capsys):
    csv = make_pool_store(tmp_path / "d")
    for seed in (1111111, 2222222):
        assert _train(tmp_path, csv, seed=seed) == 0
    from trex.eval_reward import main

    out = tmp_path / "eval" / "e.csv"
    assert (
        main(
            [
                "--rm_id",
                rm_id_from_seed(1111111),
                rm_id_from_seed(2222222),
                "--reward_csv",
                str(tmp_path / "rm" / "rm_infos.csv"),
                "--demo_csv",
                str(csv),
                "--window",
                "5",
                "--num_bootstrap",
                "50",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    df = pd.read_csv(out, dtype={"rm_id": str})
    assert len(df) == 2 and df["n_demos"].eq(8).all()
    for key in ("pearson", "partial", "partial_lo", "window_pearson", "baseline_pearson"):
        assert key in df.columns
    agree = pd.read_csv(tmp_path / "eval" / "e_agreement.csv")
    assert len(agree) == 1 and 0.0 <= agree["distance"].iloc[0] <= 1.0
    # the train_reward row and eval_reward agree on the same test demos
    rm = pd.read_csv(tmp_path / "rm" / "rm_infos.csv", dtype={"rm_id": str}).set_index("rm_id")
    for _, r in df.iterrows():
        assert r["pearson"] == pytest.approx(rm.loc[r["rm_id"], "pearson"], abs=0.02)
    assert (
        main(
            [
                "--rm_id",
                "999_9999",
                "--reward_csv",
                str(tmp_path / "rm" / "rm_infos.csv"),
                "--demo_csv",
                str(csv),
                "--out",
                str(tmp_path / "x.csv"),
            ]
        )
        == 2
    )
    assert (
        main(
            [
                "--reward_model",
                str(next((tmp_path / "rm" / "model_files").iterdir())),
                "--demo_csv",
                str(csv),
                "--use_backgrounds",
                "false",
                "--out",
                str(tmp_path / "x.csv"),
            ]
        )
        == 2
    )
    assert "fewer than 2" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


def test_plot_correlations_any_metric_by_any_column(tmp_path):
    from trex.plot_correlations import main

    rows = [
        {
            "rm_id": f"{i}",
            "env_name": "starpilot",
            "mode": "easy",
            "sequential": 0,
            "num_dems": 50,
            "num_levels": n,
            "pearson": 0.5,
            "spearman": 0.4,
            "partial": 0.1 * i,
            "window_pearson": 0.2,
            "baseline_pearson": 0.6,
            "baseline_spearman": 0.5,
        }
        for i, n in enumerate([10, 10, 200, 10**9])
    ]
    csv = tmp_path / "rm_infos.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    out = tmp_path / "f.png"
    assert (
        main(
            [
                "--rm_csv_path",
                str(csv),
                "--env_name",
                "starpilot",
                "--metric",
                "partial",
                "window_pearson",
                "--by",
                "num_levels",
                "--where",
                "num_dems=50",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert (
        main(
            [
                "--rm_csv_path",
                str(csv),
                "--env_name",
                "starpilot",
                "--metric",
                "nope",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert (
        main(
            [
                "--rm_csv_path",
                str(csv),
                "--env_name",
                "starpilot",
                "--where",
                "num_dems=7",
                "--out",
                str(tmp_path / "g.png"),
            ]
        )
        == 2
    )
