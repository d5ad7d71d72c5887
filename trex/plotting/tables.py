"""Markdown tables rendered from the committed rows CSVs, so that a results table in the
docs is a view of its CSV and cannot drift from it.

A table lives in a markdown file between two markers::

    <!-- table: figures/starpilot_study_rm_infos.csv kind=rm_groups by=num_dems -->
    ...rendered table, rewritten by ``python -m trex.report``...
    <!-- /table -->

The marker holds, shell-quoted: the CSV path(s) relative to the repository root (several
joined by commas), ``kind=KIND`` (a key of :data:`TABLE_KINDS`) and the kind's options as
``key=value``; ``where=COLUMN:VALUE`` (repeatable) keeps matching rows only. Numbers are
means (or single values) with the spread over runs as ``(min to max)``, and bootstrap
intervals over demos (train_reward's ``*_lo``/``*_hi`` columns) as ``[lo, hi]``.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from trex.common.errors import UserError

__all__ = [
    "COLUMN_HEADINGS",
    "DEFAULT_METRICS",
    "MARKER_RE",
    "METRICS",
    "PICK_NAMES",
    "TABLE_KINDS",
    "VARIANT_LABELS",
    "WHOLE_RANGE",
    "TableBlock",
    "TableSpec",
    "find_tables",
    "fmt",
    "fmt_group_value",
    "fmt_interval",
    "fmt_spread",
    "parse_spec",
    "render_document",
    "render_table",
    "rm_group_summary",
    "to_markdown",
]

#: one table block: the opening marker's spec, the rendered body, the closing marker
MARKER_RE = re.compile(
    r"<!-- table: (?P<spec>[^\n]*?) -->\n(?P<body>.*?)<!-- /table -->", re.DOTALL
)

#: the whole training range as a ``num_levels`` value
WHOLE_RANGE = 1_000_000_000

#: rm_infos metric columns, their table headings and their episode-length baseline column
METRICS = {
    "train_acc": ("train acc", None),
    "val_acc": ("val acc", None),
    "test_acc": ("test acc (unseen-level pairs)", None),
    "pearson": ("Pearson", "baseline_pearson"),
    "spearman": ("Spearman", "baseline_spearman"),
    "partial": ("partial given length", None),
    "window_pearson": ("fixed-window Pearson", None),
}
DEFAULT_METRICS = ("test_acc", "pearson", "spearman", "partial", "window_pearson")

#: train_reward variant names (and the variant studies' labels) as the flags that make them
VARIANT_LABELS = {
    "seed": "none (the original project's procedure)",
    "seed (study rows)": "none (the study's own rows)",
    "noclip": "`--use_clip_heuristic false`",
    "snip": "`--use_snippet_rewards`",
    "snippetrew": "`--use_snippet_rewards`",
    "stack4": "`--frame_stack 4`",
    "scale": "`--scale_frames`",
    "scaled": "`--scale_frames`",
    "shift": "`--augment shift`",
    "impala": "`--architecture impala`",
    "impscale": "`--architecture impala --scale_frames`",
    "scaled+impala": "`--architecture impala --scale_frames`",
    "ens5": "`--ensemble 5`",
    "sellast": "`--select_by last`",
    "sel_last": "`--select_by last`",
    "selloss": "`--select_by val_loss`",
    "sel_val_loss": "`--select_by val_loss`",
    "long": "12 epochs of 1000 pairs, `--select_by val_loss`",
}

#: what the headline's ``pick=`` column is called in its heading
PICK_NAMES = {
    "test_acc": "unseen-pair accuracy",
    "partial": "partial correlation",
    "pearson": "Pearson",
    "window_pearson": "fixed-window Pearson",
}

COLUMN_HEADINGS = {
    "num_dems": "demos",
    "num_levels": "training pool (levels)",
    "variant": "variant",
    "variant_label": "variant",
    "budget": "budget",
    "n_train_levels": "distinct training levels",
    "rm_id": "rm_id",
}


@dataclass(frozen=True)
class TableSpec:
    """A parsed marker: CSV paths (relative to the repository root), kind and options."""

    csvs: tuple[str, ...]
    kind: str
    options: dict[str, list[str]] = field(default_factory=dict)

    def get(self, key: str, default: str | None = None) -> str | None:
        """The last value given for ``key``, or ``default``."""
        values = self.options.get(key)
        return values[-1] if values else default

    def get_list(self, key: str, default: Sequence[str] = ()) -> list[str]:
        """Comma-separated values of ``key`` as a list (``default`` when absent)."""
        value = self.get(key)
        return [v for v in value.split(",") if v] if value else list(default)


@dataclass(frozen=True)
class TableBlock:
    """One table block of a document: its spec text, its current body, its number (1-based)."""

    number: int
    spec_text: str
    body: str
    start: int
    end: int


def parse_spec(text: str) -> TableSpec:
    """Parse a marker's text, e.g. ``figures/x.csv kind=rm_groups by=num_dems``."""
    try:
        tokens = shlex.split(text)
    except ValueError as err:
        raise UserError(f"table marker {text!r}: {err}") from None
    if not tokens or "=" in tokens[0]:
        raise UserError(f"table marker {text!r}: expected the CSV path(s) first")
    csvs = tuple(p for p in tokens[0].split(",") if p)
    options: dict[str, list[str]] = {}
    for tok in tokens[1:]:
        key, sep, value = tok.partition("=")
        if not sep or not key:
            raise UserError(f"table marker {text!r}: expected key=value, got {tok!r}")
        options.setdefault(key, []).append(value)
    kind = options.pop("kind", [None])[-1]
    if kind is None:
        raise UserError(f"table marker {text!r}: no kind=... (one of {', '.join(TABLE_KINDS)})")
    if kind not in TABLE_KINDS:
        raise UserError(
            f"table marker {text!r}: unknown kind {kind!r} (one of {', '.join(TABLE_KINDS)})"
        )
    return TableSpec(csvs, kind, options)


def _fenced(text: str) -> list[tuple[int, int]]:
    """Character ranges of the fenced code blocks (```) of a markdown text."""
    spans, start, pos = [], None, 0
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("```"):
            if start is None:
                start = pos
            else:
                spans.append((start, pos + len(line)))
                start = None
        pos += len(line)
    if start is not None:
        spans.append((start, len(text)))
    return spans


def find_tables(text: str) -> list[TableBlock]:
    """Every table block of a markdown text outside fenced code blocks, in order; a marker
    without its ``<!-- /table -->`` is an error."""
    fences = _fenced(text)

    def outside(pos: int) -> bool:
        return not any(a <= pos < b for a, b in fences)

    matches = [m for m in MARKER_RE.finditer(text) if outside(m.start())]
    blocks = [
        TableBlock(i + 1, m["spec"], m["body"], m.start(), m.end()) for i, m in enumerate(matches)
    ]
    opened = sum(outside(m.start()) for m in re.finditer(r"<!-- table: ", text))
    if opened != len(blocks):
        raise UserError(f"{opened} table marker(s) but {len(blocks)} closed by <!-- /table -->")
    return blocks


# ----------------------------------------------------------------------------- formatting


def fmt(value: float, digits: int = 2) -> str:
    """A number with ``digits`` decimals; NaN as ``n/a``; never ``-0.00``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def fmt_spread(values: pd.Series, digits: int = 2) -> str:
    """Mean of ``values`` and, for more than one distinct value, ``(min to max)``."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    if v.empty:
        return "n/a"
    if len(v) == 1 or v.min() == v.max():
        return fmt(float(v.mean()), digits)
    return f"{fmt(v.mean(), digits)} ({fmt(v.min(), digits)} to {fmt(v.max(), digits)})"


def fmt_interval(row: pd.Series, col: str) -> str:
    """``value [lo, hi]`` from ``col``, ``col_lo``, ``col_hi`` (just the value without them)."""
    value = row.get(col)
    lo, hi = row.get(f"{col}_lo"), row.get(f"{col}_hi")
    if lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
        return fmt(value)
    return f"{fmt(value)} [{fmt(lo)}, {fmt(hi)}]"


def fmt_group_value(col: str, value: object) -> str:
    """A grouping value as a reader wants it: flags for variants, "whole range" for 1e9 levels."""
    if col in ("variant", "variant_label"):
        return VARIANT_LABELS.get(str(value), str(value))
    if col == "num_levels" and pd.notna(value) and int(value) == WHOLE_RANGE:
        return "whole training range"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def to_markdown(df: pd.DataFrame) -> str:
    """A DataFrame of strings as a GitHub markdown table (no trailing newline)."""
    cells = [[str(c) for c in df.columns]] + [[str(v) for v in row] for row in df.to_numpy()]
    lines = ["| " + " | ".join(r).replace("\n", " ") + " |" for r in cells]
    lines.insert(1, "|" + "|".join("---" for _ in df.columns) + "|")
    return "\n".join(lines)


def _count(mask: pd.Series, n: int) -> str:
    return f"{int(mask.sum())}/{n}"


# ----------------------------------------------------------------------------- reading


def _read(root: Path, rel: str) -> pd.DataFrame:
    from trex.common.files import read_csv_checked

    return read_csv_checked(root / rel, "rows CSV", text=("reward", "load_path"))


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise UserError(f"{what}: missing column(s) {', '.join(missing)}")


def _apply_where(df: pd.DataFrame, spec: TableSpec, what: str) -> pd.DataFrame:
    for cond in spec.options.get("where", []):
        col, sep, value = cond.partition(":")
        if not sep or col not in df.columns:
            raise UserError(f"{what}: where={cond!r} needs COLUMN:VALUE with a column of the CSV")
        df = df[df[col].astype(str) == value]
    if df.empty:
        raise UserError(f"{what}: no rows left after {' '.join(spec.options.get('where', []))}")
    return df


def _concat(root: Path, spec: TableSpec) -> pd.DataFrame:
    frames = [_read(root, p) for p in spec.csvs]
    df = pd.concat(frames, ignore_index=True, sort=False)
    return _apply_where(df, spec, ", ".join(spec.csvs))


def _ordered_groups(df: pd.DataFrame, by: list[str]) -> list[tuple]:
    """Group keys: numeric columns ascending, others in order of first appearance."""
    keys = list(dict.fromkeys(tuple(r) for r in df[by].itertuples(index=False)))
    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in by]
    first = [list(dict.fromkeys(df[c])) for c in by]

    def sort_key(key: tuple) -> tuple:
        return tuple(
            (float(k), 0) if num else (0.0, seen.index(k))
            for k, num, seen in zip(key, numeric, first)
        )

    return sorted(keys, key=sort_key)


# ----------------------------------------------------------------------------- rm_infos


def rm_group_summary(
    rows: pd.DataFrame,
    by: Sequence[str],
    metrics: Sequence[str] = DEFAULT_METRICS,
    show: Sequence[str] = (),
) -> pd.DataFrame:
    """Summarise rm_infos rows per group of ``by``: runs, each metric's mean (min to max), the
    episode-length baseline, and how many runs beat the baseline (Pearson) or have a bootstrap
    interval above 0 (``partial_lo > 0``, ``window_pearson_lo > 0``).

    Args:
        rows: rm_infos rows (train_reward's columns).
        by: grouping columns, e.g. ``["num_dems"]`` or ``["variant", "num_dems"]``.
        metrics: rm_infos metric columns, keys of :data:`METRICS`.
        show: other numeric columns shown as min to max per group, e.g. ``n_train_levels``.

    Returns:
        One row of display strings per group, in :func:`_ordered_groups` order.
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise UserError(f"unknown metric(s) {', '.join(unknown)} (one of {', '.join(METRICS)})")
    _require(rows, [*by, *metrics, *show], "rm_infos rows")
    out = []
    for key in _ordered_groups(rows, list(by)):
        g = rows[(rows[list(by)] == pd.Series(key, index=list(by))).all(axis=1)]
        n = len(g)
        rec = {COLUMN_HEADINGS.get(c, c): fmt_group_value(c, k) for c, k in zip(by, key)}
        rec["runs"] = str(n)
        for col in show:
            v = pd.to_numeric(g[col], errors="coerce")
            lo, hi = fmt(v.min(), 0), fmt(v.max(), 0)
            rec[COLUMN_HEADINGS.get(col, col)] = lo if lo == hi else f"{lo} to {hi}"
        for m in metrics:
            label, base = METRICS[m]
            rec[label] = fmt_spread(g[m])
            if m == "pearson" and base in g:
                rec["length baseline (Pearson)"] = fmt(pd.to_numeric(g[base]).mean())
                beats = pd.to_numeric(g[m]) > pd.to_numeric(g[base])
                rec["runs with Pearson > length"] = _count(beats, n)
            if m == "spearman" and base in g:
                rec["length baseline (Spearman)"] = fmt(pd.to_numeric(g[base]).mean())
            if m in ("partial", "window_pearson") and f"{m}_lo" in g:
                lo = pd.to_numeric(g[f"{m}_lo"], errors="coerce")
                name = "partial" if m == "partial" else "window"
                rec[f"runs with {name} interval > 0"] = (
                    "n/a" if lo.isna().all() else _count(lo > 0, n)
                )
        out.append(rec)
    return pd.DataFrame(out)


def _kind_rm_groups(root: Path, spec: TableSpec) -> pd.DataFrame:
    df = _concat(root, spec)
    by = spec.get_list("by")
    if not by:
        raise UserError(f"{', '.join(spec.csvs)}: kind=rm_groups needs by=COLUMN[,COLUMN]")
    metrics, show = spec.get_list("metrics", DEFAULT_METRICS), spec.get_list("show")
    _require(df, [*by, *[m for m in metrics if m in METRICS], *show], ", ".join(spec.csvs))
    return rm_group_summary(df, by, metrics, show)


def _kind_rm_runs(root: Path, spec: TableSpec) -> pd.DataFrame:
    """One row per run: its rm_id, metrics with their bootstrap intervals, the kept epoch."""
    df = _concat(root, spec)
    by = spec.get_list("by")
    metrics = spec.get_list(
        "metrics", ("val_acc", "test_acc", "pearson", "partial", "window_pearson")
    )
    _require(df, [*by, "rm_id", *metrics], ", ".join(spec.csvs))
    order = _ordered_groups(df, by) if by else [()]
    out = []
    for key in order:
        g = df if not by else df[(df[by] == pd.Series(key, index=by)).all(axis=1)]
        for _, row in g.sort_values("rm_id", kind="stable").iterrows():
            rec = {COLUMN_HEADINGS.get(c, c): fmt_group_value(c, k) for c, k in zip(by, key)}
            rec["rm_id"] = row["rm_id"]
            for m in metrics:
                label, base = METRICS[m]
                rec[label] = fmt_interval(row, m)
                if base and base in row and m == "pearson":
                    rec["length baseline"] = fmt_interval(row, base)
            if "best_epoch" in row and "epochs" in row:
                rec["kept epoch / epochs run"] = f"{int(row['best_epoch'])}/{int(row['epochs'])}"
            out.append(rec)
    return pd.DataFrame(out)


# ----------------------------------------------------------------------------- policies


#: reward kinds in table order, by the first 4 letters of their label
_KIND_ORDER = {"true": 0, "lear": 1, "pref": 2, "T-RE": 2, "cons": 3, "rand": 4}


def reward_label(reward: str, load_path: str = "") -> str:
    """A reward tag as tables and figures name it (``random`` for a random policy's rows)."""
    if str(load_path) == "random":
        return "random policy"
    kind, _, arg = str(reward).partition(":")
    if kind == "true":
        return "true reward"
    if kind == "learned":
        return f"learned reward (T-REX {arg})"
    if kind == "constant":
        return f"constant reward (+{arg}/step)"
    if kind == "preferences":  # train_preferences: <queries>:<selection>[+...][:<initial>]
        queries, _, rest = arg.partition(":")
        how, _, init = rest.partition(":")
        selection = ", ".join(how.replace("_", " ").split("+"))
        if init:
            return f"T-REX {init} + preferences ({queries} queries, {selection})"
        return f"preferences ({queries} queries, {selection})"
    return str(reward)


def _pooled(g: pd.DataFrame) -> tuple[float, float]:
    """Mean and 95% half-width over all episodes of the rows ``g`` (one row per run)."""
    n = g["episodes"].astype(float)
    m = g["return_mean"].astype(float)
    s = g["return_std"].astype(float)
    total = n.sum()
    mean = float((n * m).sum() / total)
    var = float((((n - 1) * s**2) + n * (m - mean) ** 2).sum() / max(total - 1, 1))
    return mean, 1.96 * math.sqrt(var / total)


_LEVEL_SETS = (("train", "training levels"), ("test", "unseen levels"))


def _kind_policy_groups(root: Path, spec: TableSpec) -> pd.DataFrame:
    """test_policy rows per reward kind: runs, mean return [95% interval over all episodes] on
    training and unseen levels, the runs' range, episode length, fraction of the true reward's.
    ``relabel=PATH_PART:LABEL`` (repeatable) groups the runs whose checkpoint path contains
    PATH_PART under LABEL (settings the reward kind does not name, e.g. the fit's size)."""
    df = _concat(root, spec)
    _require(
        df,
        [
            "load_path",
            "reward",
            "level_set",
            "episodes",
            "return_mean",
            "return_std",
            "length_mean",
        ],
        ", ".join(spec.csvs),
    )
    df = df.assign(label=[reward_label(r, p) for r, p in zip(df["reward"], df["load_path"])])
    for rule in spec.options.get("relabel", []):
        part, sep, label = rule.partition(":")
        if not sep or not part or not label:
            raise UserError(f"relabel={rule!r}: expected PATH_PART:LABEL")
        df.loc[df["load_path"].astype(str).str.contains(part, regex=False), "label"] = label
    labels = sorted(dict.fromkeys(df["label"]), key=lambda s: _KIND_ORDER.get(s[:4], 5))
    means: dict[str, float] = {}
    out = []
    for label in labels:
        g = df[df["label"] == label]
        rec = {"PPO reward": label, "runs": str(g["load_path"].nunique())}
        for ls, name in _LEVEL_SETS:
            s = g[g["level_set"] == ls]
            if s.empty:
                rec[f"{name}: mean [95% interval]"] = "n/a"
                continue
            mean, half = _pooled(s)
            rec[f"{name}: mean [95% interval]"] = (
                f"{fmt(mean)} [{fmt(mean - half)}, {fmt(mean + half)}]"
            )
            if ls == "test":
                means[label] = mean
                rec["unseen levels: runs' range"] = (
                    f"{fmt(s['return_mean'].min())} to {fmt(s['return_mean'].max())}"
                    if len(s) > 1
                    else "one run"
                )
                rec["episode length, unseen"] = fmt(s["length_mean"].mean(), 0)
        out.append(rec)
    true = means.get("true reward")
    for rec in out:
        m = means.get(rec["PPO reward"])
        rec["unseen, share of the true reward's"] = (
            "n/a" if true is None or m is None or true == 0 else f"{100 * m / true:.0f}%"
        )
    return pd.DataFrame(out)


def _run_name(load_path: str) -> str:
    """A checkpoint as the reader wants it: a relative path whole, an absolute one (a folder
    of the machine it ran on) as its run folder and file."""
    if str(load_path) == "random":
        return "random policy"
    p = Path(str(load_path))
    return f"{p.parent.name}/{p.name}" if p.is_absolute() else p.as_posix()


def _kind_policy_runs(root: Path, spec: TableSpec) -> pd.DataFrame:
    """test_policy rows per tested checkpoint: return mean +- s.e. (episode length) per set."""
    df = _concat(root, spec)
    _require(
        df,
        [
            "load_path",
            "timesteps",
            "level_set",
            "episodes",
            "return_mean",
            "return_std",
            "length_mean",
        ],
        ", ".join(spec.csvs),
    )
    first = df.groupby("load_path", sort=False).first()
    labels = {p: reward_label(first.loc[p].get("reward", ""), p) for p in first.index}
    paths = sorted(
        first.index,
        key=lambda p: (
            _KIND_ORDER.get(labels[p][:4], 5),
            labels[p],
            str(Path(str(p)).parent),
            first.loc[p, "timesteps"],
        ),
    )
    out = []
    for path in paths:
        g = df[df["load_path"] == path]
        t = g["timesteps"].iloc[0]
        rec = {"checkpoint": _run_name(path), "steps": "n/a" if pd.isna(t) else f"{int(t):,}"}
        if "reward" in g:
            rec["PPO reward"] = reward_label(g["reward"].iloc[0], path)
        for ls, name in _LEVEL_SETS:
            s = g[g["level_set"] == ls]
            if s.empty:
                rec[name] = "not tested"
                continue
            r = s.iloc[-1]
            se = r["return_std"] / math.sqrt(r["episodes"])
            rec[name] = (
                f"{fmt(r['return_mean'])} +- {fmt(se)} "
                f"({int(r['episodes'])} episodes, length {fmt(r['length_mean'], 0)})"
            )
        out.append(rec)
    return pd.DataFrame(out)


def _kind_manifest(root: Path, spec: TableSpec) -> pd.DataFrame:
    """Shipped checkpoints (export_policy's checkpoints.csv with test scores), one per row."""
    out = []
    for rel in spec.csvs:
        df = _read(root, rel)
        _require(df, ["file", "timesteps", "mean_return", "selected_by"], rel)
        for _, r in df.iterrows():
            rec = {
                "game": Path(rel).parent.name,
                "steps": f"{int(r['timesteps']):,}",
                "chosen as": str(r["selected_by"]),
                "training return (last 100 episodes)": fmt(r["mean_return"]),
            }
            for col, name in (
                ("train_levels", "training levels"),
                ("unseen_levels", "unseen levels"),
            ):
                if f"{col}_return" in df:
                    eps = r.get("train_episodes" if col == "train_levels" else "test_episodes")
                    rec[name] = (
                        f"{fmt(r[f'{col}_return'])} +- {fmt(r[f'{col}_se'])} ({int(eps)} episodes)"
                    )
            out.append(rec)
    return pd.DataFrame(out)


# ----------------------------------------------------------------------------- PPO curves


def _run_title(root: Path, rel: str) -> str:
    config = (root / rel).parent / "config.json"
    name = Path(rel).parent.name
    if config.is_file():
        args = json.loads(config.read_text()).get("args", {})
        return f"{args.get('env_name', name)}, seed {args.get('seed', '?')}"
    return name


def _near(progress: pd.DataFrame, step: float, window: int) -> float:
    """Mean training return of the ``window`` updates nearest ``step``; NaN past the run's end
    (by more than one update)."""
    t = progress["timesteps"]
    update = float(t.diff().median()) if len(t) > 1 else 0.0
    if step > t.max() + update:
        return math.nan
    idx = (t - step).abs().sort_values(kind="stable").index[:window]
    return float(progress.loc[idx, "true_return_mean"].mean())


def _kind_curve(root: Path, spec: TableSpec) -> pd.DataFrame:
    """Training return of PPO runs (progress.csv) at given steps, the mean of the ``window``
    updates nearest each step, beside a reference CSV (game, step, mean, lo, hi)."""
    steps = [float(s) for s in spec.get_list("steps")]
    if not steps:
        raise UserError(f"{', '.join(spec.csvs)}: kind=curve needs steps=S1,S2,...")
    window = int(spec.get("window", "5"))
    runs = [(rel, _read(root, rel)) for rel in spec.csvs]
    for rel, df in runs:
        _require(df, ["timesteps", "true_return_mean"], rel)
    ref = None
    if spec.get("reference"):
        ref = _read(root, spec.get("reference"))
        _require(ref, ["game", "step", "mean", "lo", "hi"], spec.get("reference"))
    label = spec.get("reference_label", "reference")
    out = []
    for step in steps:
        rec = {"step": f"{step / 1e6:g}M" if step >= 1e6 else f"{step / 1e3:g}k"}
        for rel, df in runs:
            title = _run_title(root, rel)
            rec[f"{title} (ours)"] = fmt(_near(df, step, window))
        if ref is not None:
            for game in dict.fromkeys(ref["game"]):
                r = ref[(ref["game"] == game) & (ref["step"] == step)]
                rec[f"{game}, {label}"] = (
                    "n/a"
                    if r.empty
                    else f"{fmt(r['mean'].iloc[0])} "
                    f"({fmt(r['lo'].iloc[0])} to {fmt(r['hi'].iloc[0])})"
                )
        out.append(rec)
    return pd.DataFrame(out)


def _kind_progress_groups(root: Path, spec: TableSpec) -> pd.DataFrame:
    """PPO progress rows per run (column ``by``): steps reached, training return at the first
    update, its peak and its mean over the last 3 updates, last episode length and entropy."""
    df = _concat(root, spec)
    by = spec.get("by", "attempt")
    _require(
        df,
        [by, "timesteps", "true_return_mean", "ep_length_mean", "entropy_loss"],
        ", ".join(spec.csvs),
    )
    out = []
    for key in dict.fromkeys(df[by]):
        g = df[df[by] == key].sort_values("timesteps")
        out.append(
            {
                COLUMN_HEADINGS.get(by, by): str(key),
                "updates": str(len(g)),
                "last step": f"{int(g['timesteps'].iloc[-1]):,}",
                "training return, first update": fmt(g["true_return_mean"].iloc[0]),
                "peak": fmt(g["true_return_mean"].max()),
                "last 3 updates": fmt(g["true_return_mean"].iloc[-3:].mean()),
                "episode length, last 3": fmt(g["ep_length_mean"].iloc[-3:].mean(), 0),
                "policy entropy, last 3": fmt(-g["entropy_loss"].iloc[-3:].mean()),
            }
        )
    return pd.DataFrame(out)


# ----------------------------------------------------------------------------- headline


def _best_preferences(loop: pd.DataFrame) -> str:
    """The train_preferences setting with the highest mean unseen-level return: its mean
    (range over seeds), the seeds and the setting. Settings with at least 2 seeds are
    preferred, so that a single run does not headline."""
    prefs = loop[loop["reward"].astype(str).str.startswith("preferences")]
    seeds = prefs.groupby("reward")["load_path"].nunique()
    if (seeds >= 2).any():
        prefs = prefs[prefs["reward"].isin(seeds.index[seeds >= 2])]
    means = prefs.groupby("reward")["return_mean"].mean()
    best = prefs[prefs["reward"] == means.idxmax()]
    label = reward_label(str(means.idxmax()), "")
    label = label.replace("preferences (", "", 1).removesuffix(")")  # "[T-REX x + ]q queries, s"
    n = best["load_path"].nunique()
    return f"{fmt_spread(best['return_mean'])}, {n} seed{'' if n == 1 else 's'} ({label})"


def _kind_headline(root: Path, spec: TableSpec) -> pd.DataFrame:
    """Per game: the reward setting (variant, demos, pool) with the best mean of ``pick``
    (default test_acc) over its seeds, its unseen-level metrics against the length baseline,
    and, where a test_policy CSV of that game is given (``loops=``), PPO's unseen-level return
    on the learned, true and constant rewards (mean over runs, their range)."""
    df = _concat(root, spec)
    pick = spec.get("pick", "test_acc")
    keys = ["variant", "num_dems", "num_levels"]
    _require(
        df,
        ["env_name", pick, *keys, "pearson", "baseline_pearson", "partial_lo", "window_pearson_lo"],
        ", ".join(spec.csvs),
    )
    loops = {}
    for rel in spec.get_list("loops"):
        loop = _read(root, rel)
        _require(loop, ["env_name", "load_path", "reward", "level_set", "return_mean"], rel)
        for game in dict.fromkeys(loop["env_name"]):
            rows = loop[(loop["env_name"] == game) & (loop["level_set"] == "test")]
            loops[game] = pd.concat([loops[game], rows]) if game in loops else rows
    any_preferences = any(
        loop["reward"].astype(str).str.startswith("preferences").any() for loop in loops.values()
    )
    out = []
    for game in dict.fromkeys(df["env_name"]):
        g = df[df["env_name"] == game]
        means = g.groupby(keys, sort=False)[pick].mean()
        best = means.idxmax()
        b = g[(g[keys] == pd.Series(best, index=keys)).all(axis=1)]
        n = len(b)
        variant = (
            "the original project's CNN"
            if best[0] == "seed"
            else VARIANT_LABELS.get(best[0], best[0])
        )
        pool = "" if int(best[2]) == WHOLE_RANGE else f", {int(best[2])} levels"
        rec = {
            "game": game,
            f"best reward setting (highest mean {PICK_NAMES.get(pick, pick)})": (
                f"{variant}, {int(best[1])} demos{pool}"
            ),
            "seeds": str(n),
            "unseen-pair accuracy": fmt_spread(b["test_acc"]),
            "Pearson / length baseline": f"{fmt_spread(b['pearson'])} / "
            f"{fmt(b['baseline_pearson'].mean())}",
            "partial given length (runs with interval > 0)": (
                f"{fmt_spread(b['partial'])} ({_count(b['partial_lo'] > 0, n)})"
            ),
        }
        lo = pd.to_numeric(b["window_pearson_lo"], errors="coerce")
        rec["fixed-window Pearson (runs with interval > 0)"] = (
            "n/a" if lo.isna().all() else f"{fmt_spread(b['window_pearson'])} ({_count(lo > 0, n)})"
        )
        loop = loops.get(game)
        for kind, name in (
            ("learned", "PPO, unseen levels: learned reward"),
            ("true", "true reward"),
            ("constant", "constant reward"),
        ):
            if loop is None:
                rec[name] = "no loop yet"
                continue
            s = loop[
                (loop["reward"].astype(str).str.split(":").str[0] == kind)
                & (loop["load_path"] != "random")
            ]
            if s.empty:
                rec[name] = "n/a"
                continue
            runs = s["load_path"].nunique()
            cell = f"{fmt_spread(s['return_mean'])}, {runs} seed{'s' if runs != 1 else ''}"
            if kind == "learned":
                cell += f" ({s['reward'].iloc[0].partition(':')[2]})"
            rec[name] = cell
        if any_preferences:
            has = loop is not None and loop["reward"].astype(str).str.startswith("preferences")
            rec["PPO, unseen levels: preferences (best setting)"] = (
                _best_preferences(loop)
                if loop is not None and has.any()
                else ("no run yet" if loop is not None else "no loop yet")
            )
        if loop is not None:
            r = loop[loop["load_path"] == "random"]
            rec["random policy"] = fmt(r["return_mean"].mean()) if len(r) else "n/a"
        else:
            rec["random policy"] = "no loop yet"
        out.append(rec)
    return pd.DataFrame(out)


#: table kinds: name -> renderer(root, spec) returning display strings
TABLE_KINDS: dict[str, Callable[[Path, TableSpec], pd.DataFrame]] = {
    "rm_groups": _kind_rm_groups,
    "rm_runs": _kind_rm_runs,
    "policy_groups": _kind_policy_groups,
    "policy_runs": _kind_policy_runs,
    "manifest": _kind_manifest,
    "curve": _kind_curve,
    "progress_groups": _kind_progress_groups,
    "headline": _kind_headline,
}


# ----------------------------------------------------------------------------- documents


def render_table(spec: TableSpec, root: Path, doc: Path) -> str:
    """The body of one table block: the markdown table and a line linking its CSV(s)
    relative to ``doc`` (both under ``root``), ending with a newline."""
    table = TABLE_KINDS[spec.kind](root, spec)
    sources = [*spec.csvs, *spec.get_list("loops")]
    if spec.get("reference"):
        sources.append(spec.get("reference"))
    links = ", ".join(
        f"[{p}]({Path(os.path.relpath(root / p, doc.parent)).as_posix()})" for p in sources
    )
    return f"\n{to_markdown(table)}\n\nRows: {links}.\n"


def render_document(text: str, root: Path, doc: Path) -> tuple[str, list[int]]:
    """Render every table block of ``text`` (the markdown file ``doc`` under ``root``).

    Returns:
        The new text and the numbers (1-based) of the blocks whose body changed.
    """
    parts: list[str] = []
    changed: list[int] = []
    pos = 0
    for block in find_tables(text):
        try:
            spec = parse_spec(block.spec_text)
            body = render_table(spec, root, doc)
        except UserError as err:
            raise UserError(f"{doc}: table {block.number}: {err}") from None
        if body != block.body:
            changed.append(block.number)
        parts.append(text[pos : block.start])
        parts.append(f"<!-- table: {block.spec_text} -->\n{body}<!-- /table -->")
        pos = block.end
    parts.append(text[pos:])
    return "".join(parts), changed
