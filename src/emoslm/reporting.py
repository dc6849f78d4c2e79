"""Generic reporting: tables built once and rendered for the terminal (rich), Markdown and HTML; figures as PNG.

Every paper's report is made of these parts: a :class:`TableData` per table, :func:`md_table` /
:func:`html_table` / :func:`rich_table` to render it, :data:`CSS` for a self-contained HTML page, and matplotlib
figures (:func:`new_figure`, :func:`figure_png`, :func:`img`, :func:`plot_confusion`) embedded as base64 PNG.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

#: an empty cell
DASH = "–"


@dataclass
class TableData:
    """A table as strings: built once, rendered by :func:`rich_table`, :func:`md_table` and :func:`html_table`.
    ``sections`` are the row indices where a new group starts (a rule before them)."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    caption: str = ""
    sections: list[int] = field(default_factory=list)
    text_columns: int = 1   # leading columns of text (left-aligned); the others hold numbers
    group_columns: int = 0  # leading columns whose repeats are blanked in the terminal



def md_table(t: TableData) -> str:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = [f"### {t.title}", "", "| " + " | ".join(map(esc, t.columns)) + " |",
             "|" + "|".join("---" if i < t.text_columns else "---:" for i in range(len(t.columns))) + "|"]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in t.rows]
    if t.caption:
        lines += ["", f"*{t.caption}*"]
    return "\n".join(lines) + "\n"



def rich_table(t: TableData):
    from rich.table import Table

    tab = Table(title=t.title, caption=t.caption or None, title_style="bold", caption_justify="left",
                show_lines=False)
    for i, c in enumerate(t.columns):
        text = i < t.text_columns
        width = max([len(r[i]) for r in t.rows] + [1])
        # headers may wrap at "(" (TU+LO(anger) -> TU+LO / (anger)); numbers never wrap
        tab.add_column(c.replace("+LO(", "+LO\n(") if not text else c, justify="left" if text else "right",
                       no_wrap=not text, min_width=None if text else width,
                       overflow="fold" if text else "ellipsis")
    prev: list[str] | None = None
    for i, r in enumerate(t.rows):
        cells = list(r)
        if prev is not None and i not in t.sections:
            for j in range(t.group_columns):
                if cells[j] == prev[j]:
                    cells[j] = ""
        tab.add_row(*cells, end_section=(i + 1) in t.sections)
        prev = list(r)
    return tab



def bootstrap_ci(values: Sequence[float], n_boot: int = 2000, level: float = 0.95, seed: int = 0
                 ) -> tuple[float, float]:
    """Percentile-bootstrap CI of the mean of ``values`` (resampling the values, e.g. speakers)."""
    v = np.asarray(list(values), dtype=float)
    if len(v) < 2:
        return float(v.mean()), float(v.mean())
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))



def new_figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()



CSS = """
body { font-family: -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; border-bottom: 2px solid #2b6cb0; padding-bottom: .2em; }
h2 { font-size: 1.25em; margin-top: 2em; color: #2b6cb0; }
table { border-collapse: collapse; margin: .6em 0 .3em; font-size: .9em; }
th, td { padding: .25em .7em; border-bottom: 1px solid #e2e2e2; }
th { background: #f3f6fa; text-align: left; border-bottom: 2px solid #bbb; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.section td { border-top: 2px solid #999; }
td.best { font-weight: bold; }
.caption { color: #555; font-size: .85em; margin-bottom: 1.2em; max-width: 60em; }
table.meta td:first-child { font-weight: bold; white-space: nowrap; vertical-align: top; }
table.meta td { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .92em; word-break: break-all; }
.figs { display: flex; flex-wrap: wrap; gap: 1em; }
img { max-width: 100%; }
"""


def html_table(t: TableData, best_column: int | None = None) -> str:
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in t.columns)
    body = []
    best = None
    if best_column is not None:
        vals = [float(r[best_column]) for r in t.rows if r[best_column] not in (DASH, "")]
        best = f"{max(vals):.3f}" if vals else None
    for i, r in enumerate(t.rows):
        cls = ' class="section"' if i in t.sections else ""
        cells = []
        for j, c in enumerate(r):
            kinds = ["num"] if j >= t.text_columns else []
            if j == best_column and c == best:
                kinds.append("best")
            attr = f' class="{" ".join(kinds)}"' if kinds else ""
            cells.append(f"<td{attr}>{e(c)}</td>")
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    cap = f'<div class="caption">{e(t.caption)}</div>' if t.caption else ""
    return (f"<h2>{e(t.title)}</h2>\n<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body)
            + f"\n</tbody>\n</table>\n{cap}\n")


def img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def plot_confusion(result: Mapping[str, Any], title: str):
    """Row-normalised confusion heatmap of an ``EvalResult.to_dict()`` (rows: reference; cells: % of the row,
    with counts); ``title`` names the model and setting (the scores are added below it)."""
    from matplotlib.ticker import PercentFormatter

    r = result
    labels = list(r["labels"])
    cm = np.asarray(r["confusion"], dtype=float)
    cols = list(r.get("confusion_columns", labels + ["<invalid>"]))
    if cm.shape[1] > len(labels) and not cm[:, len(labels):].any():
        cm, cols = cm[:, : len(labels)], cols[: len(labels)]
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    n = len(labels)
    fig = new_figure(1.1 + 0.75 * len(cols), 1.0 + 0.62 * n)
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i in range(n):
        for j in range(len(cols)):
            color = "white" if norm[i, j] > 0.55 else ("black" if cm[i, j] else "silver")
            ax.text(j, i, f"{norm[i, j]:.0%}\n({int(cm[i, j])})", ha="center", va="center", fontsize=7,
                    color=color)
    ax.set_xticks(range(len(cols)), cols, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(n), [f"{lab} ({int(rows[i, 0])})" for i, lab in enumerate(labels)], fontsize=8)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("Reference (support)")
    ax.set_title(f"{title}\nUA_spk {r['ua_spk']['mean']:.1%} · WA {r['wa']:.1%} · "
                 f"UA {r['ua']:.1%}", fontsize=9)
    fig.colorbar(im, ax=ax, format=PercentFormatter(1.0, decimals=0), shrink=0.8, label="% of reference row")
    return fig
