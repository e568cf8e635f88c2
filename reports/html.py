"""Assemble the sections into one self-contained HTML file and write it atomically.

Plotly's JavaScript is embedded once, in a single ``<script>`` in the head (from
``plotly.offline.get_plotlyjs()``); every figure is ``fig.to_html(full_html=False,
include_plotlyjs=False)``. Images are inline data URIs. Nothing is fetched from the network.
"""
from __future__ import annotations

import datetime
import html
import os
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple

import plotly
from plotly.offline import get_plotlyjs
from pneumo_models.atomic import write_text

from . import data_view, diagnostics, gallery, model_eval, summary
from ._blocks import FigureBlock, HtmlBlock, NoticeBlock, Section
from .inputs import ReportInputs

# Section order of the page (and of the navigation bar).
SECTION_BUILDERS: tuple[tuple[str, str, Callable[[ReportInputs], Section]], ...] = (
    ("summary", "Summary", summary.build_section),
    ("diagnostics", "Search diagnostics", diagnostics.build_section),
    ("model", "Exported model", model_eval.build_section),
    ("errors", "Error analysis", gallery.build_section),
    ("data", "Data", data_view.build_section),
)
_PLOT_CONFIG = {"displaylogo": False, "responsive": True,
                "modeBarButtonsToRemove": ["select2d", "lasso2d"],
                "toImageButtonOptions": {"format": "png", "scale": 2}}

_CSS = """
:root{--fg:#1d2329;--muted:#5f6b76;--line:#d9dee3;--bg:#fff;--soft:#f4f6f8;--warn:#fff4e5;--warnline:#f0a531}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:var(--fg);background:var(--bg)}
header{padding:18px 28px 8px}
header h1{margin:0;font-size:22px}
header p{margin:4px 0;color:var(--muted)}
nav{position:sticky;top:0;z-index:10;background:#fff;border-bottom:1px solid var(--line);padding:8px 28px;display:flex;gap:20px;flex-wrap:wrap}
nav a{color:#0b5cad;text-decoration:none;font-weight:600}
nav a:hover{text-decoration:underline}
main{padding:0 28px 40px;max-width:1280px}
section{padding-top:8px;border-bottom:1px solid var(--line);padding-bottom:20px;scroll-margin-top:48px}
section>h2{font-size:20px;margin:18px 0 4px}
h3{font-size:17px;margin:20px 0 6px}
h4{font-size:15px;margin:10px 0 4px}
.muted{color:var(--muted)}
.intro{color:var(--muted);margin-top:0}
.notice{background:var(--soft);border-left:4px solid #8aa4bf;padding:8px 12px;margin:10px 0}
.notice.missing{background:var(--warn);border-left-color:var(--warnline)}
.notice.warning{background:#fdecea;border-left-color:#c5221f;font-size:15.5px}
.notice.selection{border-left-color:#1f77b4}
.incomplete{background:var(--warn);border:1px solid var(--warnline);padding:10px 16px;margin:12px 0}
.incomplete ul{margin:4px 0 0 18px;padding:0}
table{border-collapse:collapse;font-size:14px}
table.kv th{text-align:left;font-weight:600;padding:3px 16px 3px 0;color:var(--muted);vertical-align:top}
table.kv td{padding:3px 0}
table.grid th,table.grid td{border:1px solid var(--line);padding:4px 8px}
table.grid thead th{background:var(--soft);text-align:left;white-space:nowrap}
table.sortable thead th{cursor:pointer;user-select:none}
table.sortable thead th[data-dir=asc]::after{content:" \\25B2";font-size:10px}
table.sortable thead th[data-dir=desc]::after{content:" \\25BC";font-size:10px}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.headline{font-weight:700;font-size:16px}
.scroll{overflow:auto;max-height:560px;border:1px solid var(--line)}
.scroll table.grid{border:none}
.scroll thead th{position:sticky;top:0}
.cols{display:flex;gap:40px;flex-wrap:wrap}
.figure{margin:14px 0 22px}
.figure .caption{color:var(--muted);font-size:13.5px;margin:2px 0 0}
.gallery{display:flex;flex-wrap:wrap;gap:14px}
figure.case{margin:0;border:1px solid var(--line);padding:6px;background:var(--soft)}
figure.case .pair{display:flex;gap:4px}
figure.case img{display:block;image-rendering:auto}
figure.case figcaption{font-size:13px;margin-top:4px}
.noimg{width:160px;height:160px;display:flex;align-items:center;justify-content:center;color:var(--muted);border:1px dashed var(--line)}
code{font-size:12.5px}
details{margin:8px 0}
"""

# Click a header to sort; numbers sort numerically (data-v), blanks always last.
_SORT_JS = """
document.querySelectorAll('table.sortable thead th').forEach(function (th) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0];
    var col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var asc = th.getAttribute('data-dir') !== 'asc';
    th.parentNode.querySelectorAll('th').forEach(function (h) { h.removeAttribute('data-dir'); });
    th.setAttribute('data-dir', asc ? 'asc' : 'desc');
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].getAttribute('data-v'), y = b.cells[col].getAttribute('data-v');
      if (x === '' || x === null) return (y === '' || y === null) ? 0 : 1;
      if (y === '' || y === null) return -1;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny) && String(nx) !== 'NaN') ? nx - ny : x.localeCompare(y);
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


class _PageInfo(NamedTuple):
    title: str
    subtitle: str
    sections: list[Section]
    missing: list[tuple[str, str, str]]     # (section id, block key, sentence)
    timings: dict[str, float]               # seconds per section


def _get_page_info(inputs: ReportInputs, progress: bool = False) -> _PageInfo:
    sections: list[Section] = []
    timings: dict[str, float] = {}
    for sid, title, build in SECTION_BUILDERS:
        t0 = time.perf_counter()
        try:
            section = build(inputs)
        except Exception as exc:  # noqa: BLE001 - one broken section must not cost the whole report
            first = str(exc).splitlines()[0] if str(exc) else ""
            section = Section(sid, title, [NoticeBlock(sid, f"This section could not be drawn: "
                                                       f"{exc.__class__.__name__}: {first}")])
        timings[sid] = time.perf_counter() - t0
        if progress:
            print(f"report: {title.lower()} ({timings[sid]:.1f} s)", file=sys.stderr, flush=True)
        sections.append(section)
    missing = [(s.id, b.key, b.message) for s in sections for b in s.missing]
    study = inputs.study
    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return _PageInfo(f"Pneumonia model search report: {study.study_name}",
                     f"Generated {now}", sections, missing, timings)


def _figure_html(block: FigureBlock) -> str:
    div = block.figure.to_html(full_html=False, include_plotlyjs=False, config=_PLOT_CONFIG,
                               div_id=f"fig-{block.key}", default_width="100%",
                               default_height=f"{block.height}px")
    cap = f'<p class="caption">{html.escape(block.caption)}</p>' if block.caption else ""
    return f'<div class="figure" data-figure="{html.escape(block.key)}">{div}{cap}</div>'


def _block_html(block) -> str:
    if isinstance(block, FigureBlock):
        return _figure_html(block)
    if isinstance(block, HtmlBlock):
        return f'<div class="block" data-block="{html.escape(block.key)}">{block.html}</div>'
    if isinstance(block, NoticeBlock):
        cls = "notice missing" if block.missing else "notice"
        attr = "data-missing" if block.missing else "data-notice"
        return f'<p class="{cls}" {attr}="{html.escape(block.key)}">{html.escape(block.message)}</p>'
    raise TypeError(type(block))


def _draw_page(info: _PageInfo) -> str:
    e = html.escape
    nav = "".join(f'<a href="#{e(s.id)}">{e(s.title)}</a>' for s in info.sections)
    incomplete = ""
    if info.missing:
        titles = {s.id: s.title for s in info.sections}
        items = "".join(f'<li data-missing-item="{e(key)}"><strong>{e(titles[sid])}</strong>: {e(msg)}</li>'
                        for sid, key, msg in info.missing)
        incomplete = (f'<div class="incomplete" id="missing"><strong>This report is incomplete.</strong> '
                      f"Missing parts:<ul>{items}</ul></div>")
    body = []
    for s in info.sections:
        intro = f'<p class="intro">{e(s.intro)}</p>' if s.intro else ""
        blocks = "\n".join(_block_html(b) for b in s.blocks)
        body.append(f'<section id="{e(s.id)}" data-section="{e(s.id)}"><h2>{e(s.title)}</h2>{intro}\n{blocks}</section>')
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<meta name=\"generator\" content=\"pneumo-search reports, plotly {e(plotly.__version__)}\">"
        f"<title>{e(info.title)}</title><style>{_CSS}</style>\n"
        f"<script type=\"text/javascript\">{get_plotlyjs()}</script>\n</head><body>"
        f"<header><h1>{e(info.title)}</h1><p>{e(info.subtitle)}. Self-contained: opens offline.</p></header>"
        f"<nav>{nav}</nav><main>{incomplete}\n" + "\n".join(body)
        + f"</main><script>{_SORT_JS}</script></body></html>\n"
    )


def _write_page(inputs: ReportInputs, out_path: str | os.PathLike, *, progress: bool = False) -> Path:
    """Draw every section from ``inputs`` and write the page to ``out_path`` atomically."""
    t0 = time.perf_counter()
    info = _get_page_info(inputs, progress=progress)
    path = write_text(out_path, _draw_page(info), permissions=0o644)
    if progress:
        size = path.stat().st_size / 1e6
        print(f"report: wrote {path} ({size:.1f} MB) in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr, flush=True)
    return path
