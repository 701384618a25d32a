"""A report rendered: one self-contained HTML page (Vega's JavaScript bundled in by
vl-convert, sample images inline, nothing fetched from a network), a PNG per chart, a PDF
of the same sections and charts, and every number as JSON. No browser is involved.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import json
import math
from typing import Any

import altair as alt
import msgspec
import vl_convert as vlc
from PIL import Image, ImageDraw

from cvops.reporter.charts import WIDTH, Spec, chart_specs
from cvops.reporter.content import Cell, Report, Section, Table, Thumbnail

PNG_SCALE = 1.0
THUMB_CELL = 72  # px per sample in the contact sheet


class Rendered(msgspec.Struct, frozen=True, kw_only=True):
    """The files of a report: HTML, PDF, data JSON and one PNG per chart (by chart name)."""

    html: bytes
    pdf: bytes
    data: bytes
    pngs: dict[str, bytes]

    def html_parts(self) -> list[bytes]:
        """The page as the blobs it is stored as: what precedes Vega's JavaScript, the
        JavaScript, what follows. The middle one (~0.85 MB, 97 % of a page) is the same in
        every report this process renders, so the object store keeps it once."""
        bundle = javascript_bundle().encode()
        head, found, tail = self.html.partition(bundle)
        return [head, bundle, tail] if found else [self.html]


@functools.cache
def vl_version() -> str | None:
    """The Vega-Lite version vl-convert should use: Altair's, when vl-convert has it."""
    major_minor = ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])
    return major_minor if major_minor in vlc.get_vegalite_versions() else None


@functools.cache
def javascript_bundle() -> str:
    """Vega, Vega-Lite and vega-embed as one script (built once per process: ~1.5 s)."""
    snippet = "window.vegaEmbed = vegaEmbed; window.vega = vega; window.vegaLite = vegaLite;"
    return str(vlc.javascript_bundle(snippet, vl_version=vl_version()))


def fmt(value: Cell) -> str:
    """How a cell reads: floats to 4 significant digits, None as a dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return f"{value:.4g}"
    return str(value)


def _exact(value: Cell) -> str:
    """The exact value behind a cell (``data-value``), as JSON writes it."""
    return json.dumps(value)


# -- HTML -------------------------------------------------------------------------------------

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1100px;color:#222;padding:0 1em}
h1{margin-bottom:.2em}.meta{color:#666;margin-top:0}
section{border-top:1px solid #ddd;margin-top:1.5em;padding-top:.5em}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.missing{background:#fff6e0;border-left:4px solid #f0a000;padding:.4em .8em}
.chart{margin:.8em 0}.samples{display:flex;flex-wrap:wrap;gap:8px}
.samples figure{margin:0;text-align:center;font-size:12px}
.samples img{width:64px;height:64px;image-rendering:pixelated;border:1px solid #ccc}
"""


def _td(value: Cell) -> str:
    cls = ' class="num"' if isinstance(value, int | float) and not isinstance(value, bool) else ""
    return f'<td{cls} data-value="{html.escape(_exact(value))}">{html.escape(fmt(value))}</td>'


def _table(t: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in t.columns)
    body = "".join("<tr>" + "".join(_td(v) for v in row) + "</tr>" for row in t.rows)
    return (
        f"<h3>{html.escape(t.title)}</h3>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def _facts(facts: list[tuple[str, Cell]]) -> str:
    if not facts:
        return ""
    rows = "".join(f"<tr><th>{html.escape(k)}</th>{_td(v)}</tr>" for k, v in facts)
    return f'<table class="facts"><tbody>{rows}</tbody></table>'


def _png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _samples(thumbs: list[Thumbnail]) -> str:
    figs = "".join(
        f'<figure><img alt="{html.escape(t.label)}" src="{_png_uri(t.png)}">'
        f"<figcaption>{html.escape(t.label)}</figcaption></figure>"
        for t in thumbs
    )
    return f'<div class="chart samples" id="chart-samples" data-chart="samples">{figs}</div>'


def _section(s: Section, report: Report, specs: dict[str, Spec]) -> str:
    parts = [
        f'<section id="{s.name}" data-present="{str(s.present).lower()}">',
        f"<h2>{html.escape(s.title)}</h2>",
    ]
    if not s.present:
        parts.append(f'<p class="missing">Missing: {html.escape(s.missing)}</p>')
    parts.append(_facts(s.facts))
    for name in s.charts:
        if name == "samples":
            parts.append("<h3>Samples</h3>" + _samples(report.thumbnails))
        elif name in specs:
            parts.append(f'<div class="chart" id="chart-{name}" data-chart="{name}"></div>')
    parts.extend(_table(t) for t in s.tables)
    parts.append("</section>")
    return "".join(parts)


def _script_json(value: Any) -> str:
    # inside <script>: no "</" may close the tag early
    return json.dumps(value, separators=(",", ":")).replace("</", "<\\/")


def render_html(report: Report, specs: dict[str, Spec]) -> str:
    """The report as one HTML page that works offline."""
    title = f"cvops report — {report.key}"
    missing = "".join(
        f"<li><b>{html.escape(m.section)}</b>: {html.escape(m.reason)}</li>" for m in report.missing
    )
    summary = (
        f'<div class="missing"><p>Not in this report yet:</p><ul>{missing}</ul></div>'
        if missing
        else ""
    )
    body = "".join(_section(s, report, specs) for s in report.sections)
    embed = (
        "const specs = JSON.parse(document.getElementById('cvops-specs').textContent);"
        "for (const [name, spec] of Object.entries(specs)) {"
        "vegaEmbed('#chart-' + name, spec, {renderer: 'svg', actions: false})"
        ".catch(console.error);}"
    )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style>"
        f'<script type="text/javascript">{javascript_bundle()}</script></head><body>'
        f"<h1>{html.escape(title)}</h1>"
        f'<p class="meta" data-last-seq="{report.last_seq}">Built from the event log up to '
        f"sequence {report.last_seq}; regenerated as new results arrive.</p>"
        f"{_facts(report.header)}{summary}{body}"
        f'<script type="application/json" id="cvops-specs">{_script_json(specs)}</script>'
        f'<script type="text/javascript">{embed}</script></body></html>'
    )


# -- PNG and PDF ------------------------------------------------------------------------------


def contact_sheet(thumbs: list[Thumbnail]) -> bytes:
    """The sample images on one PNG, labelled."""
    cols = min(8, max(1, len(thumbs)))
    rows = math.ceil(len(thumbs) / cols)
    cell, label = THUMB_CELL, 14
    sheet = Image.new("RGB", (cols * cell, rows * (cell + label)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, t in enumerate(thumbs):
        img = (
            Image.open(io.BytesIO(t.png))
            .convert("RGB")
            .resize((cell - 8, cell - 8), Image.Resampling.NEAREST)
        )
        x, y = (i % cols) * cell, (i // cols) * (cell + label)
        sheet.paste(img, (x + 4, y + 4))
        draw.text((x + 4, y + cell - 2), t.label[:10], fill="black")
    out = io.BytesIO()
    sheet.save(out, format="PNG")
    return out.getvalue()


def render_png(spec: Spec) -> bytes:
    return bytes(vlc.vegalite_to_png(spec, vl_version=vl_version(), scale=PNG_SCALE))


def _text_block(lines: list[str], *, title: str | None = None, size: int = 11) -> Spec:
    values = [{"i": i, "line": line} for i, line in enumerate(lines)]
    chart = (
        alt.Chart(alt.Data(values=values), title=title or "")
        .mark_text(align="left", baseline="top", fontSize=size, limit=WIDTH + 260)
        .encode(y=alt.Y("i:O", axis=None), text="line:N", x=alt.value(0))
        .properties(width=WIDTH + 260, height=max(14, (size + 4) * len(lines)))
    )
    return chart.to_dict()


def _lines(table: Table, limit: int = 40) -> list[str]:
    out = [" | ".join(table.columns)]
    out += [" | ".join(fmt(v) for v in row) for row in table.rows[:limit]]
    if len(table.rows) > limit:
        out.append(f"… {len(table.rows) - limit} more rows (see the HTML or the JSON)")
    return out


def _pdf_spec(report: Report, specs: dict[str, Spec]) -> Spec:
    """The whole report as one vertical Vega-Lite concatenation: text blocks and charts."""
    blocks: list[Spec] = [
        _text_block(
            [f"{k}: {fmt(v)}" for k, v in report.header]
            + [f"built from the event log up to sequence {report.last_seq}"],
            title=f"cvops report — {report.key}",
            size=12,
        )
    ]
    for s in report.sections:
        lines = [f"{k}: {fmt(v)}" for k, v in s.facts]
        if not s.present:
            lines.insert(0, f"Missing: {s.missing}")
        blocks.append(_text_block(lines or [""], title=s.title, size=11))
        for name in s.charts:
            if name in specs:
                blocks.append(_strip(specs[name]))
        for t in s.tables:
            blocks.append(_text_block(_lines(t), title=t.title, size=9))
    return {"$schema": blocks[0].get("$schema"), "vconcat": blocks, "spacing": 18}


def _strip(spec: Spec) -> Spec:
    """A top-level spec as a member of a concatenation (no ``$schema`` or ``config``)."""
    return {k: v for k, v in spec.items() if k not in ("$schema", "config")}


def render(report: Report) -> Rendered:
    """Every file of a report."""
    specs = chart_specs(report)
    pngs = {name: render_png(spec) for name, spec in specs.items()}
    if report.thumbnails and "samples" in report.charts:
        pngs["samples"] = contact_sheet(report.thumbnails)
    pdf = bytes(vlc.vegalite_to_pdf(_pdf_spec(report, specs), vl_version=vl_version()))
    return Rendered(
        html=render_html(report, specs).encode(),
        pdf=pdf,
        data=msgspec.json.encode(report),
        pngs=pngs,
    )
