"""Markdown tables for Dagster metadata and reports."""

from __future__ import annotations

import polars as pl


def markdown_table(frame: pl.DataFrame, max_chars: int = 80) -> str:
    """A GitHub-flavoured markdown table; long cells are shortened, pipes escaped."""

    def cell(value) -> str:
        text = "" if value is None else str(value)
        text = text.replace("|", "\\|").replace("\n", " ")
        return text if len(text) <= max_chars else text[: max_chars - 1] + "…"

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join(lines)
