"""One table model, rendered as Markdown and LaTeX (booktabs).

Tables are built once as cells (text + bold flag) and rendered per format, so the Markdown a
reader skims and the LaTeX a paper includes can never disagree on a number or a bold mark.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field

DIGITS = 3
MISSING = "missing"  # a run we expected has not finished (or was never run)
UNDEFINED = "undefined"  # the run finished but the metric has no value (e.g. constant predictions)
NOT_AVAILABLE = "not available"  # a published number nobody has recorded
NOT_GIVEN = "not given"  # the source prints the method but not this number

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    "↑": r"$\uparrow$",
    "↓": r"$\downarrow$",
    "−": "-",
    "Å": r"\AA{}",
    "≥": r"$\geq$",
}


@dataclass(frozen=True)
class Cell:
    text: str
    bold: bool = False


@dataclass
class Table:
    """Header, rows of cells, and where a horizontal rule separates row groups."""

    header: list[str]
    label_columns: int = 2  # leading columns that name the row (left-aligned in LaTeX)
    rows: list[list[Cell]] = field(default_factory=list)
    rules_before: set[int] = field(default_factory=set)

    def add_row(self, cells: list[Cell | str], rule_before: bool = False) -> None:
        if len(cells) != len(self.header):
            raise ValueError(f"row has {len(cells)} cells, the header {len(self.header)}: {cells}")
        if rule_before and self.rows:
            self.rules_before.add(len(self.rows))
        self.rows.append([c if isinstance(c, Cell) else Cell(c) for c in cells])


def number(value: float, signed: bool = False) -> str:
    """A metric value at the report's fixed precision (``signed`` for differences)."""
    return f"{value:+.{DIGITS}f}" if signed else f"{value:.{DIGITS}f}"


def mean_std(mean: float, std: float) -> str:
    """``mean ± std``; one seed has no spread to show (its std is undefined, not zero)."""
    if math.isnan(std):
        return number(mean)
    return f"{number(mean)} ± {number(std)}"


def _markdown_text(cell: Cell) -> str:
    text = cell.text.replace("|", "\\|")
    return f"**{text}**" if cell.bold and text else text


def to_markdown(table: Table) -> str:
    """GitHub-flavoured Markdown; row-group rules have no Markdown form and are dropped."""
    lines = ["| " + " | ".join(table.header) + " |", "|" + "|".join(["---"] * len(table.header)) + "|"]
    lines += ["| " + " | ".join(_markdown_text(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines) + "\n"


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def _latex_text(cell: Cell) -> str:
    text = latex_escape(cell.text)
    return f"\\textbf{{{text}}}" if cell.bold and text else text


def to_latex(table: Table, caption: str, label: str) -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``)."""
    spec = "l" * table.label_columns + "r" * (len(table.header) - table.label_columns)
    lines = [
        "\\begin{table}[ht]",
        "\\centering",
        f"\\caption{{{latex_escape(caption)}}}",
        f"\\label{{{label}}}",
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(latex_escape(h) for h in table.header) + " \\\\",
        "\\midrule",
    ]
    for i, row in enumerate(table.rows):
        if i in table.rules_before:
            lines.append("\\midrule")
        lines.append(" & ".join(_latex_text(c) for c in row) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


# A report page is a list of blocks, rendered to Markdown (README, review) or HTML (Snakemake's
# report shows HTML, while it only offers Markdown and CSV files as downloads).
Block = tuple[str, object]  # ("h1" | "h2" | "p", text), ("list", [text]), ("table", Table)

_HTML_STYLE = (
    "body{font-family:sans-serif;margin:1.5em;max-width:110em}table{border-collapse:collapse;margin:1em 0}"
    "th,td{border-top:1px solid #bbb;border-bottom:1px solid #bbb;padding:.25em .6em;text-align:right}"
    "th:nth-child(-n+3),td:nth-child(-n+3){text-align:left}tr.rule td{border-top:2px solid #444}"
    "code{background:#f3f3f3}"
)


def page_markdown(blocks: list[Block]) -> str:
    out = []
    for kind, content in blocks:
        if kind == "table":
            out.append(to_markdown(content).rstrip())
        elif kind == "list":
            out.append("\n".join(f"- {item}" for item in content))
        else:
            out.append({"h1": "# ", "h2": "## ", "p": ""}[kind] + str(content))
    return "\n\n".join(out) + "\n"


def _inline_html(text: str) -> str:
    """HTML-escape, then the two Markdown marks the pages use: **bold** and `code`."""
    escaped = html.escape(text, quote=False)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", escaped)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", escaped)


def _cell_html(cell: Cell) -> str:
    text = html.escape(cell.text)
    return f"<b>{text}</b>" if cell.bold and text else text


def to_html(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = []
    for i, row in enumerate(table.rows):
        cells = "".join(f"<td>{_cell_html(c)}</td>" for c in row)
        opening = '<tr class="rule">' if i in table.rules_before else "<tr>"
        body.append(f"{opening}{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def page_html(blocks: list[Block]) -> str:
    """A self-contained HTML page (inline style, no external resources)."""
    title = next((str(c) for k, c in blocks if k == "h1"), "report")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_HTML_STYLE}</style></head>\n<body>\n" + html_body(blocks) + "\n</body></html>\n")


def html_body(blocks: list[Block]) -> str:
    """The blocks as HTML elements only: for a page of ours, or inside another page (the front
    page of Snakemake's HTML report, which brings its own style)."""
    parts = []
    for kind, content in blocks:
        if kind == "table":
            parts.append(to_html(content))
        elif kind == "list":
            parts.append("<ul>" + "".join(f"<li>{_inline_html(item)}</li>" for item in content) + "</ul>")
        else:
            parts.append(f"<{kind}>{_inline_html(str(content))}</{kind}>")
    return "\n".join(parts)
