"""trex.report: the results tables in README.md and docs/ are views of the committed CSVs."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from trex.plotting.tables import rm_group_summary
from trex.report import main

REPO = Path(__file__).resolve().parents[1]
METRICS = ["test_acc", "pearson", "partial", "window_pearson"]


def _rm_rows() -> pd.DataFrame:
    """Five runs in two groups, with known means and counts."""
    return pd.DataFrame(
        {
            "rm_id": ["a", "b", "c", "d", "e"],
            "num_dems": [12, 12, 50, 50, 50],
            "test_acc": [0.5, 0.7, 0.6, 0.8, 1.0],
            "pearson": [0.2, 0.4, 0.9, 0.3, 0.6],
            "baseline_pearson": [0.5, 0.5, 0.5, 0.5, 0.5],
            "partial": [0.1, 0.3, -0.1, 0.2, 0.4],
            "partial_lo": [-0.1, 0.05, -0.3, 0.01, 0.2],
            "window_pearson": [0.0, 0.2, 0.1, 0.1, 0.1],
            "window_pearson_lo": [-0.1, 0.1, -0.05, 0.02, 0.03],
        }
    )


def _doc(tmp_path: Path, marker: str) -> Path:
    doc = tmp_path / "docs" / "study.md"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(f"# a study\n\n<!-- table: {marker} -->\n<!-- /table -->\n\nThe end.\n")
    return doc


def test_committed_docs_are_up_to_date(capsys):
    assert main(["--root", str(REPO), "--check"]) == 0, capsys.readouterr().err
    assert "match their CSVs" in capsys.readouterr().out


def test_check_fails_when_a_number_in_a_doc_is_edited(tmp_path, capsys):
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    shutil.copytree(REPO / "figures", tmp_path / "figures", ignore=shutil.ignore_patterns("*.png"))
    doc = tmp_path / "docs" / "results" / "starpilot_demos.md"
    assert main(["--root", str(tmp_path), "--docs", str(doc), "--check"]) == 0
    text = doc.read_text()
    body = text[text.index("<!-- table: ") :]
    number = re.search(r"\| (\d\.\d\d) ", body)
    assert number is not None
    start = text.index("<!-- table: ") + number.start(1)
    edited = f"{float(number[1]) + 0.01:.2f}"
    doc.write_text(text[:start] + edited + text[start + 4 :])
    capsys.readouterr()
    assert main(["--root", str(tmp_path), "--docs", str(doc), "--check"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(doc) in err[0] and "table 1" in err[0]
    # without --check it renders the table again and the check passes
    assert main(["--root", str(tmp_path), "--docs", str(doc)]) == 0
    assert doc.read_text() == text


def test_group_summary_means_spreads_and_counts():
    table = rm_group_summary(_rm_rows(), ["num_dems"], METRICS)
    assert list(table["demos"]) == ["12", "50"]
    assert list(table["runs"]) == ["2", "3"]
    assert list(table["test acc (unseen-level pairs)"]) == [
        "0.60 (0.50 to 0.70)",
        "0.80 (0.60 to 1.00)",
    ]
    assert list(table["runs with Pearson > length"]) == ["0/2", "2/3"]
    assert list(table["runs with partial interval > 0"]) == ["1/2", "2/3"]
    assert list(table["runs with window interval > 0"]) == ["1/2", "2/3"]
    assert list(table["fixed-window Pearson"]) == ["0.10 (0.00 to 0.20)", "0.10"]


def test_rendered_from_a_tiny_csv(tmp_path):
    _rm_rows().to_csv(tmp_path / "rows.csv", index=False)
    doc = _doc(tmp_path, "rows.csv kind=rm_groups by=num_dems metrics=pearson,partial")
    assert main(["--root", str(tmp_path), "--docs", str(doc)]) == 0
    text = doc.read_text()
    assert "| 50 | 3 | 0.60 (0.30 to 0.90) | 0.50 | 2/3 | 0.17 (-0.10 to 0.40) | 2/3 |" in text
    assert "Rows: [rows.csv](../rows.csv)." in text
    assert text.endswith("<!-- /table -->\n\nThe end.\n")
    assert main(["--root", str(tmp_path), "--docs", str(doc), "--check"]) == 0


def _test_policy_rows(load_paths, rewards, means) -> pd.DataFrame:
    """test_policy rows on unseen levels: 100 episodes of 100 steps each, no spread."""
    n = len(load_paths)
    return pd.DataFrame(
        {
            "load_path": load_paths,
            "reward": rewards,
            "level_set": ["test"] * n,
            "episodes": [100] * n,
            "return_mean": means,
            "return_std": [0.0] * n,
            "length_mean": [100.0] * n,
        }
    )


def test_policy_groups_pool_episodes_and_share_of_true(tmp_path):
    rows = _test_policy_rows(
        ["a/t1/c.zip", "a/t2/c.zip", "a/r1/c.zip", "random"],
        ["true", "true", "learned:123_4567", "true"],
        [4.0, 6.0, 2.5, 1.0],
    ).assign(timesteps=[10, 10, 10, None])
    rows.to_csv(tmp_path / "loop.csv", index=False)
    doc = _doc(tmp_path, "loop.csv kind=policy_groups")
    assert main(["--root", str(tmp_path), "--docs", str(doc)]) == 0
    text = doc.read_text()
    assert "| true reward | 2 | n/a | 5.00 [4.86, 5.14] | 4.00 to 6.00 | 100 | 100% |" in text
    assert "| learned reward (T-REX 123_4567) | 1 | n/a | 2.50 [2.50, 2.50] | one run" in text
    assert "| 50% |" in text and "| 20% |" in text


def test_policy_groups_relabel_splits_runs_of_one_reward_kind(tmp_path):
    pref = "preferences:5000:uniform"
    rows = _test_policy_rows(
        ["a/true_s1/c.zip", "a/pref_s1/c.zip", "a/cheap_s1/c.zip"],
        ["true", pref, pref],
        [4.0, 3.0, 2.0],
    )
    rows.to_csv(tmp_path / "loop.csv", index=False)
    doc = _doc(tmp_path, 'loop.csv kind=policy_groups "relabel=cheap_:preferences, small fit"')
    assert main(["--root", str(tmp_path), "--docs", str(doc)]) == 0
    text = doc.read_text()
    assert "| preferences (5000 queries, uniform) | 1 | n/a | 3.00 [3.00, 3.00] |" in text
    assert "| preferences, small fit | 1 | n/a | 2.00 [2.00, 2.00] | one run | 100 | 50% |" in text
    bad = _doc(tmp_path, "loop.csv kind=policy_groups relabel=cheap_")
    assert main(["--root", str(tmp_path), "--docs", str(bad)]) == 2


def test_policy_groups_reads_a_true_only_reward_column_as_text(tmp_path):
    # a loop with only true-reward runs so far: pandas would parse the column as bool True
    rows = _test_policy_rows(["a/t1/c.zip"], ["true"], [4.0])
    rows.to_csv(tmp_path / "loop.csv", index=False)
    doc = _doc(tmp_path, "loop.csv kind=policy_groups")
    assert main(["--root", str(tmp_path), "--docs", str(doc)]) == 0
    assert "| true reward | 1 |" in doc.read_text()


@pytest.mark.parametrize(
    "marker, message",
    [
        ("missing.csv kind=rm_groups by=num_dems", "no rows CSV at"),
        ("rows.csv kind=no_such_kind", "unknown kind 'no_such_kind'"),
        ("rows.csv kind=rm_groups by=no_such_column", "missing column(s) no_such_column"),
    ],
)
def test_bad_marker_is_one_error_line_and_changes_nothing(tmp_path, capsys, marker, message):
    _rm_rows().to_csv(tmp_path / "rows.csv", index=False)
    good = _doc(tmp_path, f"rows.csv kind=rm_groups by=num_dems metrics={','.join(METRICS)}")
    bad = tmp_path / "docs" / "z_bad.md"
    bad.write_text(f"<!-- table: {marker} -->\nold body\n<!-- /table -->\n")
    before = {p: p.read_text() for p in (good, bad)}
    capsys.readouterr()
    assert main(["--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert str(bad) in err[0] and "table 1" in err[0]
    assert {p: p.read_text() for p in (good, bad)} == before


def test_preference_runs_are_labelled_and_the_best_setting_headlines():
    import pandas as pd

    from trex.plotting.tables import _best_preferences, reward_label

    assert (
        reward_label("preferences:5000:uniform", "x.zip") == "preferences (5000 queries, uniform)"
    )
    assert (
        reward_label("preferences:5000:uniform+ties_equal+centered", "x.zip")
        == "preferences (5000 queries, uniform, ties equal, centered)"
    )
    assert (
        reward_label("preferences:1000:uniform:249_9619", "x.zip")
        == "T-REX 249_9619 + preferences (1000 queries, uniform)"
    )
    loop = pd.DataFrame(
        {
            "reward": ["preferences:5000:uniform"] * 2 + ["preferences:1000:disagreement"] * 2,
            "load_path": ["a", "b", "c", "d"],
            "return_mean": [6.0, 4.0, 1.0, 2.0],
        }
    )
    cell = _best_preferences(loop)
    assert cell == "5.00 (4.00 to 6.00), 2 seeds (5000 queries, uniform)"
    loop["reward"] = ["preferences:5000:uniform"] * 2 + ["preferences:1000:uniform:249_9619"] * 2
    loop["return_mean"] = [1.0, 2.0, 6.0, 4.0]
    assert (
        _best_preferences(loop)
        == "5.00 (4.00 to 6.00), 2 seeds (T-REX 249_9619 + 1000 queries, uniform)"
    )
    one_seed = {"reward": "preferences:1000:disagreement", "load_path": "e", "return_mean": 9.0}
    loop = pd.concat([loop, pd.DataFrame([one_seed])], ignore_index=True)
    assert _best_preferences(loop).startswith("5.00 (4.00 to 6.00), 2 seeds")  # not the 1-seed 9.0
