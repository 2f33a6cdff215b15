"""Tables as self-contained HTML pages, so the Snakemake report shows them inline (a TSV there is only a link).

Ground floor: imports nothing of ours but the atomic writer. Each page is one file with inline CSS and no
scripts or external resources, so it renders offline inside the report's iframe.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from dpmra.shared.atomic import write_atomic

STYLE = """
body { font-family: system-ui, sans-serif; font-size: 14px; margin: 1em; color: #111; background: #fff; }
h1 { font-size: 18px; } h2 { font-size: 15px; margin-top: 1.5em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border-bottom: 1px solid #ccc; padding: 4px 10px; text-align: right; white-space: nowrap; }
th { background: #f2f2f2; } td.text, th.text { text-align: left; }
tr.mark td { background: #fff6d5; } b { font-weight: 700; }
p.note { color: #444; max-width: 60em; }
"""


@dataclass
class Section:
    """One table of a page: a heading, the cells (already formatted text), and optional notes."""

    heading: str
    table: pd.DataFrame
    note: str = ""
    bold: set[tuple[int, str]] = field(default_factory=set)
    """(row position, column) cells to print in bold (e.g. the best value per column)."""
    marked_rows: set[int] = field(default_factory=set)
    """Row positions to highlight (e.g. the selected U-Net setting)."""


def number(value: object, digits: int = 3) -> str:
    """A cell's text: numbers to `digits` significant digits, inf as the infinity sign, missing as a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        if value == int(value) and abs(value) < 1e6:
            return str(int(value))
        return f"{value:.{digits}g}"
    return str(value)


def mean_sd(mean: float, sd: float, spec: str = ".3g", n_inf: int = 0) -> str:
    """`mean (SD)` as the paper prints it, each with a format spec; the SD is a dash where undefined (one value).

    With n_inf > 0 (values left out of the mean because they were infinite) `[n_inf ∞]` follows, so a mean
    over fewer patients is never read as one over all of them.
    """
    if mean is None or math.isnan(mean):
        text = "–"
    else:
        text = f"{mean:{spec}} ({'–' if sd is None or math.isnan(sd) else format(sd, spec)})"
    return f"{text} [{int(n_inf)} ∞]" if n_inf > 0 else text


def cell_class(is_text: bool) -> str:
    """The class attribute of a cell: text columns are left-aligned, numbers right-aligned."""
    return ' class="text"' if is_text else ""


def table_html(section: Section) -> str:
    """One section as a heading, an HTML table and its note."""
    table = section.table
    text = {c: bool(table[c].map(lambda v: isinstance(v, str)).all()) for c in table.columns}
    head = "".join(f"<th{cell_class(text[c])}>{html.escape(str(c))}</th>" for c in table.columns)
    rows = []
    for i, (_, row) in enumerate(table.iterrows()):
        cells = []
        for c in table.columns:
            value = html.escape(number(row[c]))
            cells.append(f"<td{cell_class(text[c])}>{f'<b>{value}</b>' if (i, c) in section.bold else value}</td>")
        mark = ' class="mark"' if i in section.marked_rows else ""
        rows.append(f"<tr{mark}>{''.join(cells)}</tr>")
    note = f'<p class="note">{html.escape(section.note)}</p>' if section.note else ""
    return (
        f"<h2>{html.escape(section.heading)}</h2>\n<table>\n<thead><tr>{head}</tr></thead>\n"
        f"<tbody>\n{chr(10).join(rows)}\n</tbody>\n</table>\n{note}"
    )


def page_html(title: str, sections: list[Section]) -> str:
    """A complete HTML document with the given tables."""
    body = "\n".join(table_html(s) for s in sections)
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n{body}\n</body>\n</html>\n"
    )


def write_page(title: str, sections: list[Section], path: Path) -> None:
    """Write an HTML page of tables atomically."""
    write_atomic(path, lambda tmp: Path(tmp).write_text(page_html(title, sections), encoding="utf-8"))
