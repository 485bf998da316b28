"""The HTML report: executed notebooks as offline pages, and the index that ties them together.

- :func:`export_html` turns an executed notebook into a standalone page that needs no
  network: LaTeX in markdown cells becomes MathML at export (browsers draw it natively;
  no MathJax from a CDN), the page is titled after the notebook's first heading and links
  back to the index, and no script is fetched from anywhere.
- :func:`write_index` writes ``index.html`` and ``metrics.json``: each notebook with its
  time and status, every number with its meaning and unit (from ``stkit.report.catalog``), flags
  for chance-level results and for baselines that beat the method, and the papers'
  numbers beside this run's, with the data they came from said at the column.

Running notebooks is ``stkit.report.runner``'s job; this module only renders.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import nbformat

from ..engine.checkpoint import write_json
from . import catalog as declared
from .compare import comparison_rows

TEMPLATES = Path(__file__).resolve().parent / "templates"
_FENCE = re.compile(r"(```.*?```|~~~.*?~~~|`[^`\n]*`)", re.S)  # code: left alone
_MATH = re.compile(r"\$\$(.+?)\$\$|(?<![\\$])\$(?!\s)([^$\n]+?)(?<![\s\\])\$", re.S)


def math_to_mathml(markdown: str) -> str:
    """Replace ``$$...$$`` (display) and ``$...$`` (inline) LaTeX by MathML, outside code."""
    from latex2mathml.converter import convert

    def one(m: re.Match) -> str:
        display = m.group(1) is not None
        tex = (m.group(1) if display else m.group(2)).strip()
        return convert(tex, display="block" if display else "inline").replace("\n", "")

    parts = _FENCE.split(markdown)  # odd indices are code
    return "".join(p if i % 2 else _MATH.sub(one, p) for i, p in enumerate(parts))


def notebook_title(nb) -> str:
    """The text of the first ``# heading`` in a markdown cell (else the empty string)."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            m = re.search(r"^#\s+(.+)$", cell.source, re.M)
            if m:
                return re.sub(r"[`*_]", "", m.group(1)).strip()
    return ""


def export_html(ipynb: str | Path) -> Path:
    """Write ``<name>.html`` beside an executed notebook; returns its path."""
    from nbconvert import HTMLExporter

    ipynb = Path(ipynb)
    nb = nbformat.read(ipynb, as_version=4)
    nb.metadata["title"] = notebook_title(nb) or ipynb.stem
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = math_to_mathml(cell.source)
    exporter = HTMLExporter(template_name="stkit_html", extra_template_basedirs=[str(TEMPLATES)])
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": nb.metadata["title"]}})
    out = ipynb.with_suffix(".html")
    out.write_text(body, encoding="utf-8")
    return out


# ----------------------------------------------------------------------------- index page
def _fmt(v, unit: str = "") -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return html.escape(str(v))
    text = f"{v:.4g}" if isinstance(v, float) else str(v)
    return f"{text} {html.escape(unit)}" if unit and unit not in ("AUC", "AP", "fraction") else text


def flags(section: str, key: str, values: dict) -> list[str]:
    """Warnings a reader must see beside a number: chance level, a baseline that beats it."""
    try:
        m = declared.find(section, key)
    except KeyError:
        return []
    v, out = values.get(key), []
    if m.chance is not None and isinstance(v, (int, float)) and abs(v - m.chance) <= 0.05:
        out.append(f"at chance level ({m.chance:g})")
    base = values.get(m.compare_to) if m.compare_to else None
    if isinstance(v, (int, float)) and isinstance(base, (int, float)) and base > v:
        out.append(f"the baseline does better ({m.compare_to} = {base:.4g})")
    return out


def _metric_rows(metrics: dict) -> str:
    rows = []
    for section, values in metrics.items():
        if section == "report" or not isinstance(values, dict):
            continue
        for key, v in values.items():
            try:
                m = declared.find(section, key)
                meaning, unit = m.meaning, m.unit
            except KeyError:
                meaning, unit = "(not declared in stkit/report/catalog.tsv)", ""
            warn = "".join(f"<div class='flag'>&#9888; {html.escape(f)}</div>" for f in flags(section, key, values))
            rows.append(f"<tr><td>{html.escape(section)}</td><td>{html.escape(meaning)}<br><code>{html.escape(key)}</code></td>"
                        f"<td>{html.escape(unit)}</td><td>{_fmt(v, unit)}{warn}</td></tr>")
    return "".join(rows)


def _paper_rows(metrics: dict) -> str:
    return "".join(
        f"<tr><td>{html.escape(r['quantity'])}</td><td>{html.escape(r['paper'])}</td><td>{html.escape(r['source'])}</td>"
        f"<td>{html.escape(r['this_run'])}</td></tr>"
        for r in comparison_rows(metrics)
    )


def size_banner(size: str) -> str:
    """The index page's banner: which data a report of this run size ran on."""
    if size == "paper":
        return "Run size <code>paper</code>: the notebooks read the real datasets you prepared (see each notebook's data cell)."
    return (f"Run size <code>{html.escape(size)}</code>: every number below comes from the kit's <b>built-in synthetic data</b>. "
            "It shows what the code does on a controlled task; it is not a reproduction of the papers, "
            "whose numbers come from CheXpert and the BUV videos (run size <code>paper</code>).")


def write_index(out_root: Path, metrics: dict, status: list) -> None:
    """``metrics.json`` and ``index.html``; ``status`` rows are (notebook, executed copy, seconds, error or None)."""
    out_root.mkdir(parents=True, exist_ok=True)
    write_json(out_root / "metrics.json", metrics, indent=2)
    size = metrics["report"]["size"]
    nb_rows = "".join(
        f"<tr><td><a href='{html.escape(ex.with_suffix('.html').name)}'>{html.escape(_title_of(ex, p))}</a></td>"
        f"<td>{sec:.0f} s</td><td>{'ok' if err is None else '<b>failed</b>: ' + html.escape(err)}</td></tr>"
        for p, ex, sec, err in status
    )
    env = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in metrics["report"].get("environment", {}).items())
    column = "this run" if size == "paper" else "this run (synthetic data: not comparable)"
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>stkit report ({html.escape(size)})</title>
<style>body{{font-family:sans-serif;max-width:64em;margin:2em auto;line-height:1.4}}table{{border-collapse:collapse;margin-bottom:2em}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}}th{{background:#eee}}
.banner{{background:#fff4d6;border:1px solid #e0b84c;padding:.6em 1em;margin:1em 0}}.flag{{color:#a33;font-size:.9em}}
code{{font-size:.85em;color:#555}}</style></head><body>
<h1>stkit report: run size <code>{html.escape(size)}</code></h1>
<div class="banner">{size_banner(size)}</div>
<h2>Notebooks</h2><table><tr><th>notebook (executed, as HTML)</th><th>time</th><th>status</th></tr>{nb_rows}</table>
<h2>Key numbers</h2><p>AUC and AP are between 0 and 1 (1 is perfect; AUC 0.5 and AP 0 are what guessing gets).</p>
<table><tr><th>notebook section</th><th>what it measures</th><th>unit</th><th>value</th></tr>{_metric_rows(metrics)}</table>
<h2>The papers and this run</h2>
<p>Paper numbers come from the sources named; "unverified" marks numbers nobody could check against the paper's PDF.
"not run" means this report did not produce that number.</p>
<table><tr><th>quantity</th><th>paper</th><th>source</th><th>{column}</th></tr>{_paper_rows(metrics)}</table>
<h2>Environment</h2><table>{env}</table>
<p>Machine-readable: <a href="metrics.json">metrics.json</a></p></body></html>"""
    (out_root / "index.html").write_text(page, encoding="utf-8")


def _title_of(executed: Path, source: Path) -> str:
    try:
        return notebook_title(nbformat.read(source, as_version=4)) or source.name
    except (OSError, ValueError):
        return source.name
