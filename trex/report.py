"""Render the results tables of README.md and docs/ from the committed rows CSVs.

    python -m trex.report            # rewrite every table block in place
    python -m trex.report --check    # exit 1, naming the doc and table, if any is out of date

A table block is ``<!-- table: CSV[,CSV...] kind=KIND key=value ... -->`` ... ``<!-- /table
-->`` (syntax and kinds: :mod:`trex.plotting.tables`). Every document is rendered before any
is written, so a bad marker (unknown kind, missing CSV or column) ends with one ``error:``
line and leaves every document as it was; each document is replaced atomically.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from trex.common.cli import cli_entry
from trex.common.errors import UserError

log = logging.getLogger("trex.report")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trex-report",
        description="Render the markdown results tables from the rows CSVs in figures/.",
    )
    p.add_argument(
        "--root", default=".", help="repository root: CSV paths in the markers are relative to it"
    )
    p.add_argument(
        "--docs",
        nargs="+",
        default=None,
        metavar="FILE.md",
        help="markdown files to render (default: README.md and docs/**/*.md)",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="change nothing; exit 1 if any table differs from its CSV",
    )
    return p


def default_docs(root: Path) -> list[Path]:
    """README.md and every markdown file under docs/, sorted."""
    docs = [root / "README.md"] if (root / "README.md").is_file() else []
    return docs + sorted((root / "docs").rglob("*.md"))


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from trex.common.cli import setup_logging
    from trex.common.files import write_text_atomic
    from trex.plotting.tables import render_document

    setup_logging()
    root = Path(args.root)
    if not root.is_dir():
        raise UserError(f"--root {root} is not a directory")
    docs = [Path(d) for d in args.docs] if args.docs else default_docs(root)
    rendered: list[tuple[Path, str, list[int]]] = []
    for doc in docs:
        if not doc.is_file():
            raise UserError(f"no markdown file at {doc}")
        text, changed = render_document(doc.read_text(), root, doc)
        rendered.append((doc, text, changed))
    stale = [(doc, n) for doc, _, changed in rendered for n in changed]
    n_tables = sum(text.count("<!-- /table -->") for _, text, _ in rendered)
    if args.check:
        if stale:
            doc, n = stale[0]
            more = f" (and {len(stale) - 1} more)" if len(stale) > 1 else ""
            sys.stderr.write(
                f"out of date: {doc} table {n} differs from its CSV{more}; "
                f"run python -m trex.report\n"
            )
            return 1
        print(f"{n_tables} tables in {len(docs)} documents match their CSVs")
        return 0
    for doc, text, changed in rendered:
        if changed:
            write_text_atomic(doc, text)
            log.info("%s: rendered table(s) %s", doc, ", ".join(map(str, changed)))
    print(f"{n_tables} tables in {len(docs)} documents; {len(stale)} rewritten")
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
