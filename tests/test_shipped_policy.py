"""Weights-only .safetensors policy checkpoints (export_policy): round trip, no pickle,
one-line errors, fine-tuning into a new directory, and the stages that read them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_PPO_FLAGS

from trex.common.envs import make_procgen_env
from trex.common.errors import UserError
from trex.rl.checkpoints import (
    MANIFEST_COLUMNS,
    WEIGHTS_FORMAT,
    load_policy,
    read_checkpoint_meta,
    read_manifest,
    save_policy_weights,
)
from trex.rl.export import select_checkpoints
from trex.rl.policy import action_logits


@pytest.fixture(scope="module")
def shipped(tiny_expert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny coinrun run's checkpoints at 32 and 96 steps exported into
    ``<root>/coinrun/easy`` (so ``--log_dir <root>`` would make it train_policy's run dir)."""
    from trex.export_policy import main

    out = tmp_path_factory.mktemp("shipped") / "coinrun" / "easy"
    assert (
        main(["--models_dir", str(tiny_expert), "--out_dir", str(out), "--timesteps", "32", "96"])
        == 0
    )
    return out


def _run(stage, argv, capsys):
    status = stage(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return status, err[-1] if err else ""


def _last(folder: Path) -> Path:
    return folder / read_manifest(folder).sort_values("timesteps")["file"].iloc[-1]


# ----------------------------------------------------------------------------- the format


def test_export_round_trip(tiny_expert, shipped):
    manifest = pd.read_csv(shipped / "checkpoints.csv")
    assert list(manifest.columns[:3]) == MANIFEST_COLUMNS
    assert list(manifest["file"]) == [
        "checkpoint_0000000032.safetensors",
        "checkpoint_0000000096.safetensors",
    ]
    assert list(manifest["timesteps"]) == [32, 96]
    assert list(manifest["source"]) == ["checkpoint_0000000032.zip", "checkpoint_0000000096.zip"]
    assert not list(shipped.glob(".*tmp*")) and not list(shipped.glob("*.lock"))
    for name in manifest["file"]:
        src = tiny_expert / name.replace(".safetensors", ".zip")
        dst = shipped / name
        assert dst.stat().st_size < 3.5e6 < src.stat().st_size  # weights only, no optimizer state
        assert read_checkpoint_meta(dst) == {**read_checkpoint_meta(src), "exported_from": src.name}
        zip_policy, _ = load_policy(src, device="cpu", precision="fp32")
        st_policy, meta = load_policy(dst, device="cpu", precision="fp32")
        assert meta["env_name"] == "coinrun" and meta["timesteps"] == int(name[11:21])
        obs = make_procgen_env("coinrun", 4, seed=3).reset()
        assert torch.equal(action_logits(zip_policy, obs), action_logits(st_policy, obs))
    # the fast path (channels_last + bf16) loads the same file
    fast, _ = load_policy(dst, device="cpu", precision="bf16")
    assert fast.features_extractor.channels_last


def test_file_holds_each_weight_once_in_fp32(shipped):
    from safetensors import safe_open

    with safe_open(str(shipped / "checkpoint_0000000096.safetensors"), framework="pt") as f:
        header = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    assert (
        header["format"] == WEIGHTS_FORMAT
        and json.loads(header["trex_checkpoint"])["timesteps"] == 96
    )
    assert not any(
        k.startswith(("pi_features_extractor.", "vf_features_extractor.")) for k in tensors
    )
    assert all(t.dtype == torch.float32 and t.is_contiguous() for t in tensors.values())
    assert 600_000 < sum(t.numel() for t in tensors.values()) < 700_000


def test_weights_load_with_no_pickle(shipped, monkeypatch):
    import pickle

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)
    policy, meta = load_policy(shipped / "checkpoint_0000000096.safetensors", device="cpu")
    assert meta["timesteps"] == 96 and policy.action_net.weight.shape == (15, 256)


def test_bad_safetensors_give_one_line_and_exit_2(shipped, tmp_path, capsys):
    from safetensors.torch import save_file

    from trex.test_policy import main

    good = (shipped / "checkpoint_0000000096.safetensors").read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good[: len(good) // 2])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 100)
    foreign = tmp_path / "foreign.safetensors"  # a valid safetensors file, not a policy
    save_file({"w": torch.zeros(3)}, str(foreign), metadata={"format": "trex-reward-model"})
    policy, meta = load_policy(shipped / "checkpoint_0000000096.safetensors", device="cpu")
    misfit = tmp_path / "misfit.safetensors"  # policy metadata, weights of another shape
    save_file(
        {"action_net.weight": torch.zeros(3, 3)},
        str(misfit),
        metadata={
            "format": WEIGHTS_FORMAT,
            "format_version": "1",
            "trex_checkpoint": json.dumps(meta),
        },
    )
    newer = tmp_path / "newer.safetensors"
    save_file(
        {"w": torch.zeros(3)},
        str(newer),
        metadata={
            "format": WEIGHTS_FORMAT,
            "format_version": "99",
            "trex_checkpoint": json.dumps(meta),
        },
    )
    cases = [
        (truncated, "corrupt or truncated"),
        (garbage, "not a procgen-trex policy checkpoint"),
        (foreign, "not a procgen-trex policy checkpoint"),
        (misfit, "weights do not fit"),
        (newer, "format version 99"),
        (tmp_path / "missing.safetensors", "checkpoint not found"),
    ]
    for path, expected in cases:
        status, line = _run(
            main,
            ["--load_path", str(path), "--num_runs", "1", "--out_csv", str(tmp_path / "r.csv")],
            capsys,
        )
        assert status == 2, (path, line)
        assert line.startswith("error:") and expected in line, (path, line)
    assert not (tmp_path / "r.csv").exists()


def test_save_policy_weights_needs_a_safetensors_name(shipped, tmp_path):
    policy, meta = load_policy(shipped / "checkpoint_0000000032.safetensors", device="cpu")
    with pytest.raises(UserError, match=".safetensors"):
        save_policy_weights(policy, tmp_path / "x.zip", meta)


# ----------------------------------------------------------------------------- choosing checkpoints


def _manifest(returns, steps=None):
    steps = steps or [100 * (i + 1) for i in range(len(returns))]
    return pd.DataFrame(
        {"file": [f"c{s}.zip" for s in steps], "timesteps": steps, "mean_return": returns}
    )


def test_select_by_timesteps_and_best():
    m = _manifest([1.0, 3.0, 7.0, 6.0, 7.0])
    sel = select_checkpoints(m, timesteps=[240, 90, "best", 300])
    assert list(sel["timesteps"]) == [100, 200, 300]
    assert list(sel["selected_by"]) == ["timesteps 90", "timesteps 240", "best; timesteps 300"]
    assert list(select_checkpoints(m, timesteps=[580])["timesteps"]) == [
        500
    ]  # within one save interval
    with pytest.raises(UserError, match="near 1000 timesteps"):
        select_checkpoints(m, timesteps=[1000])


def test_pick_spreads_over_skill():
    m = _manifest([0.5, 1.0, 2.0, 4.6, 5.0, 7.0, 10.0, 8.5])
    sel = select_checkpoints(m, pick=4)
    # earliest 0.5, best 10.0, targets 3.67 and 6.83 -> returns 4.6 and 7.0 (nearest, unused)
    assert list(sel["mean_return"]) == [0.5, 4.6, 7.0, 10.0]
    assert list(sel["selected_by"]) == ["earliest", "return 3.67", "return 6.83", "best"]
    assert list(select_checkpoints(m, pick=1)["mean_return"]) == [10.0]
    assert list(select_checkpoints(m, pick=2)["mean_return"]) == [0.5, 10.0]
    assert len(select_checkpoints(m, pick=8)) == 8
    with pytest.raises(UserError, match="only 8"):
        select_checkpoints(m, pick=9)
    nan_first = _manifest([np.nan, 1.0, 3.0, 2.0])
    assert list(select_checkpoints(nan_first, pick=2)["timesteps"]) == [200, 300]
    with pytest.raises(UserError, match="mean_return"):
        select_checkpoints(_manifest([np.nan, np.nan]), pick=2)
    with pytest.raises(UserError, match="earliest checkpoint .* is the best"):
        select_checkpoints(_manifest([5.0, 1.0, 2.0]), pick=2)


def test_export_errors_are_one_line_and_write_nothing(tiny_expert, shipped, tmp_path, capsys):
    from trex.export_policy import main

    out = tmp_path / "out"
    cases = [
        (
            ["--models_dir", str(tmp_path / "nope"), "--out_dir", str(out), "--pick", "2"],
            "no checkpoints.csv",
        ),
        (
            ["--models_dir", str(tiny_expert), "--out_dir", str(out), "--timesteps", "5000"],
            "near 5000",
        ),
        (["--models_dir", str(tiny_expert), "--out_dir", str(out), "--pick", "4"], "has only"),
        (
            ["--models_dir", str(tiny_expert), "--out_dir", str(tiny_expert), "--timesteps", "32"],
            "must differ",
        ),
        (
            ["--models_dir", str(shipped), "--out_dir", str(tiny_expert), "--timesteps", "32"],
            "training run's directory",
        ),
        (
            [
                "--models_dir",
                str(tiny_expert),
                "--out_dir",
                str(out),
                "--timesteps",
                "32",
                "--env_name",
                "bigfish",
            ],
            "checkpoint of 'coinrun'",
        ),
    ]
    before = sorted(p.name for p in tiny_expert.iterdir())
    for argv, expected in cases:
        status, line = _run(main, argv, capsys)
        assert status == 2, (argv, line)
        assert line.startswith("error:") and expected in line, (argv, line)
    assert not out.exists()
    assert sorted(p.name for p in tiny_expert.iterdir()) == before
    with pytest.raises(SystemExit) as exc:
        main(["--models_dir", str(tiny_expert), "--out_dir", str(out), "--timesteps", "abc"])
    assert exc.value.code == 2


def test_export_adds_to_a_folder_of_the_same_game_only(shipped, tiny_expert, tmp_path, capsys):
    from trex.export_policy import main

    folder = tmp_path / "ship"
    shutil.copytree(shipped, folder)
    assert (
        main(
            ["--models_dir", str(tiny_expert), "--out_dir", str(folder), "--timesteps", "64", "96"]
        )
        == 0
    )
    assert list(read_manifest(folder)["timesteps"]) == [32, 64, 96]
    # a starpilot checkpoint (coinrun's weights, relabelled) cannot join the coinrun folder
    policy, meta = load_policy(folder / "checkpoint_0000000032.safetensors", device="cpu")
    other = tmp_path / "starpilot_run"
    save_policy_weights(policy, other / "sp.safetensors", {**meta, "env_name": "starpilot"})
    pd.DataFrame([{"file": "sp.safetensors", "timesteps": 10, "mean_return": 1.0}]).to_csv(
        other / "checkpoints.csv", index=False
    )
    status, line = _run(
        main, ["--models_dir", str(other), "--out_dir", str(folder), "--pick", "1"], capsys
    )
    assert status == 2 and "would mix" in line
    assert not (folder / "sp.safetensors").exists()


# ----------------------------------------------------------------------------- stages reading them


def test_fine_tuning_continues_into_a_new_directory(shipped, tmp_path, capsys):
    from trex.rl.training import find_resume_checkpoint
    from trex.train_policy import main

    before = {p.name: p.stat().st_mtime_ns for p in shipped.iterdir()}
    assert find_resume_checkpoint(shipped) == shipped / "checkpoint_0000000096.safetensors"
    assert (
        main(
            [
                "--env_name",
                "coinrun",
                *TINY_PPO_FLAGS,
                "--timesteps_per_proc",
                "128",
                "--log_dir",
                str(tmp_path),
                "--load_path",
                str(shipped),
            ]
        )
        == 0
    )
    run = tmp_path / "coinrun" / "easy" / "finetune_checkpoint_0000000096"  # a new run of its own
    assert list(read_manifest(run)["timesteps"]) == [128]
    meta = read_checkpoint_meta(_last(run))
    assert meta["timesteps"] == 128
    assert meta["fine_tuned_from"] == str((shipped / "checkpoint_0000000096.safetensors").resolve())
    assert {p.name: p.stat().st_mtime_ns for p in shipped.iterdir()} == before
    # never into the shipped folder itself
    status, line = _run(
        main,
        [
            "--env_name",
            "coinrun",
            *TINY_PPO_FLAGS,
            "--timesteps_per_proc",
            "128",
            "--log_dir",
            str(shipped.parent.parent),
            "--load_path",
            str(shipped / "checkpoint_0000000032.safetensors"),
        ],
        capsys,
    )
    assert status == 2 and "its own folder" in line
    assert {p.name: p.stat().st_mtime_ns for p in shipped.iterdir()} == before


def test_restore_from_weights_starts_a_fresh_optimizer(shipped):
    from trex.rl.checkpoints import policy_weights, restore_training_state
    from trex.rl.policy import build_ppo

    model = build_ppo(
        make_procgen_env("coinrun", 2),
        nsteps=16,
        nminibatches=2,
        ppo_epochs=1,
        learning_rate=5e-4,
        gamma=0.999,
        lam=0.95,
        clip_range=0.2,
        ent_coef=0.01,
        device=torch.device("cpu"),
    )
    path = shipped / "checkpoint_0000000096.safetensors"
    meta = restore_training_state(model, path)
    assert model.num_timesteps == 96 and meta["ret_rms"]["count"] > 0
    assert model.policy.optimizer.state_dict()["state"] == {}
    loaded, _ = load_policy(path, device="cpu", precision="fp32")
    want, got = policy_weights(loaded), policy_weights(model.policy)
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


def test_gen_demos_reads_an_exported_folder(shipped, tmp_path):
    from trex.demos.store import DemoIndex
    from trex.gen_demos import main

    assert (
        main(
            [
                "--env_name",
                "coinrun",
                "--models_dir",
                str(shipped),
                "--num_dems",
                "2",
                "--num_envs",
                "2",
                "--max_ep_len",
                "15",
                "--log_dir",
                str(tmp_path / "demos"),
                "--seed",
                "0",
                "--progress",
                "false",
            ]
        )
        == 0
    )
    index = DemoIndex.read(tmp_path / "demos" / "demo_infos.csv")
    assert len(index) == 2
    assert set(index.df["policy"].map(lambda p: Path(p).suffix)) == {".safetensors"}
    assert set(index.df["policy_timesteps"]) <= {32, 96}


def test_visualize_policy_reads_safetensors(shipped, tmp_path):
    from trex.common.video import read_mp4
    from trex.visualize_policy import main

    out = tmp_path / "v.mp4"
    assert (
        main(
            [
                "--load_path",
                str(shipped / "checkpoint_0000000096.safetensors"),
                "--video_length",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert read_mp4(out).shape[0] == 3
