"""Every code block of the README runs, at toy sizes.

The quickstart's shell lines run as written, with each stage's sizes shrunk (``TOY``: flag
values replaced or added, nothing else changed), in a scratch folder where ``pretrained/`` is
the repository's: each ``python -m trex.<stage> ARGS`` as ``trex.<stage>.main(ARGS)`` in this
process (what ``-m`` runs, without a new interpreter's imports for each line; stages that
start processes of their own, such as run_experiments, still do). Then the Python API block
runs in the same folder with its sizes shrunk by the textual replacements in ``PY_TOY`` (each
must occur, so an edit of the README that the test no longer covers fails here). The ``make``
block is the two commands themselves: CI runs ``make test``, and benchmarks/README.md times
``make demo``. Output excerpts are ``text`` blocks and are not run.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_PPO_FLAGS, run_main

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

TINY_REWARD = {
    "--num_snippets": "40", "--epoch_size": "20", "--max_num_epochs": "1",
    "--min_snippet_length": "4", "--max_snippet_length": "8",
    "--num_val_snippets": "10", "--num_test_snippets": "10",
}  # fmt: skip
TINY_PREFERENCES = {
    "--segment_length": "8", "--num_queries": "10", "--fit_pairs": "8",
    "--initial_fit_pairs": "8", "--heldout_pairs": "10",
}  # fmt: skip
TINY_DEMOS = {"--max_ep_len": "100", "--num_envs": "3", "--progress": "false"}
#: per stage: flag -> toy value (str, or a list for several values)
TOY: dict[str, dict[str, str | list[str]]] = {
    "gen_demos": {**TINY_DEMOS},
    "train_reward": {"--num_dems": "10", **TINY_REWARD},
    "plot_correlations": {},
    "train_policy": {
        "--timesteps_per_proc": "256",
        **dict(zip(TINY_PPO_FLAGS[::2], TINY_PPO_FLAGS[1::2], strict=True)),
    },
    "test_policy": {"--num_runs": "4", "--num_envs": "2", "--max_steps": "20"},
    "train_preferences": {
        "--timesteps_per_proc": "64",
        **dict(zip(TINY_PPO_FLAGS[::2], TINY_PPO_FLAGS[1::2], strict=True)),
        **TINY_PREFERENCES,
    },
    "plot_reward_saliency": {"--num_frames": "1", "--stride": "16", "--max_steps": "4"},
    "run_experiments": {
        "--num_dems": ["8", "10"],
        "--num_seeds": "1",
        "--pass_args": " ".join(f"{k} {v}" for k, v in TINY_REWARD.items()),
    },
}
#: gen_demos: the toy demo counts (training demos must outnumber what train_reward asks for)
TOY_NUM_DEMS = {"train": "14", "test": "6"}
#: the README names the 507,904-step checkpoint; the toy run's last one is at 256 steps
TOY_CHECKPOINT = ("checkpoint_0000507904.zip", "checkpoint_0000000256.zip")
#: Python block: (README text, toy text); each must occur in the block
PY_TOY = [
    ("num_snippets=2000", "num_snippets=40, epoch_size=20, min_snippet_length=4, "
     "max_snippet_length=8, num_val_snippets=10, num_test_snippets=10"),
    ("max_num_epochs=5", "max_num_epochs=1"),
    ("range(100)", "range(3)"),
    ("timesteps_per_proc=500_000",
     "timesteps_per_proc=64, num_queries=10, num_envs=2, nsteps=16, nminibatches=2, "
     "ppo_epochs=1, segment_length=8, fit_pairs=8, initial_fit_pairs=8, heldout_pairs=10"),
]  # fmt: skip


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of each fenced block of a markdown text."""
    return [(m.group(1), m.group(2)) for m in re.finditer(r"```(\w*)\n(.*?)```", text, re.S)]


def shell_commands(body: str) -> list[list[str]]:
    """The commands of a shell block: one per line, comments and blank lines skipped,
    backslash continuations joined."""
    body = body.replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in body.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]  # fmt: skip


def toy_command(argv: list[str]) -> list[str]:
    """``python -m trex.<stage> ...`` with the stage's toy sizes."""
    assert argv[:2] == ["python", "-m"] and argv[2].startswith("trex."), argv
    stage = argv[2].removeprefix("trex.")
    assert stage in TOY, f"README runs stage {stage}: add its toy sizes to TOY"
    args = [a.replace(*TOY_CHECKPOINT) for a in argv[3:]]
    overrides = dict(TOY[stage])
    if stage == "gen_demos":
        overrides["--num_dems"] = TOY_NUM_DEMS["test" if "--test_set" in args else "train"]
    out: list[str] = []
    i = 0
    while i < len(args):
        flag = args[i]
        j = i + 1
        while j < len(args) and not args[j].startswith("--"):
            j += 1
        if flag in overrides:
            value = overrides.pop(flag)
            out += [flag, *([value] if isinstance(value, str) else value)]
        else:
            out += args[i:j]
        i = j
    for flag, value in overrides.items():
        out += [flag, *([value] if isinstance(value, str) else value)]
    return [sys.executable, "-m", argv[2], *out]


def test_readme_blocks_run_at_toy_sizes(tmp_path, monkeypatch):
    blocks = code_blocks(README.read_text())
    shell = [body for lang, body in blocks if lang in ("bash", "sh")]
    python = [body for lang, body in blocks if lang == "python"]
    assert python, "the README has no Python API example"
    (tmp_path / "pretrained").symlink_to(REPO / "pretrained")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    ran = 0
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # for the stages' own subprocesses
        monkeypatch.setenv(var, "1")
    for body in shell:
        commands = shell_commands(body)
        if commands and commands[0][0] == "make":
            assert [c[:2] for c in commands] == [["make", "demo"], ["make", "test"]]
            continue
        for argv in commands:
            cmd = toy_command(argv)
            done = run_main(cmd[2], cmd[3:], tmp_path)
            assert done.returncode == 0, f"{shlex.join(argv)}\n{done.stderr[-2000:]}"
            ran += 1
    assert ran >= 5, "the README's quickstart lost its commands"
    for body in python:
        for readme_text, toy_text in PY_TOY:
            if readme_text in body:
                body = body.replace(readme_text, toy_text)
        script = tmp_path / "api_example.py"
        script.write_text(body)
        proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                              capture_output=True, text=True)  # fmt: skip
        assert proc.returncode == 0, f"README Python block failed:\n{proc.stderr[-3000:]}"


def test_python_toy_replacements_match_the_readme():
    """Each toy replacement finds its text: the Python block runs at the sizes meant."""
    python = "\n".join(b for lang, b in code_blocks(README.read_text()) if lang == "python")
    for readme_text, _ in PY_TOY:
        assert readme_text in python, f"README Python block no longer contains {readme_text!r}"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("python -m trex.test_policy --num_runs 500 --load_path a", ["--num_runs", "4"]),
        ("python -m trex.run_experiments --num_dems 12 50 200", ["--num_dems", "8", "10"]),
    ],
)
def test_toy_command_replaces_values(line, expected):
    cmd = toy_command(shlex.split(line))
    text = " ".join(cmd)
    assert " ".join(expected) in text and "500" not in text and "200" not in text
