"""The report as one self-contained HTML file (images embedded), for a browser or an e-mail."""

from __future__ import annotations

import base64
import datetime
import html
from pathlib import Path

from app.reports.content import DISCLAIMER, CaseSection, Report, card_summary, identity_lines
from app.reports.plots import slice_plot_png
from viewer.io.atomic_files import write_text_atomic

_CSS = """body{font-family:sans-serif;font-size:13px;margin:2em;max-width:60em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #aaa;padding:2px 6px;text-align:left}
th{background:#e5e8e8}.high{background:#f5b7b1}.intermediate{background:#fad7a0}.low{background:#d5f5e3}
.disclaimer{font-weight:bold;color:#922b21}.keys img{width:15em;margin-right:.5em}
section{page-break-before:always}"""


def write_html(report: Report, out: Path) -> Path:
    bands = report.bands
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>LungLens screening report</title>"
             f"<style>{_CSS}</style></head><body><h1>LungLens screening report</h1>",
             f"<p class='disclaimer'>{DISCLAIMER}</p>",
             f"<p>Generated {datetime.datetime.now():%Y-%m-%d %H:%M} from {e(str(report.folder))}. Model: "
             f"{e(report.model)}. Operating threshold {bands.threshold:.2f}; bands: high at or above "
             f"{bands.high:.2f}, low below {bands.low:.2f}.</p>",
             "<table><tr><th>Rank</th><th>Patient ID</th><th>Patient</th><th>Study date</th><th>Case</th>"
             "<th>P(COVID-19)</th><th>Band</th><th>Involvement</th><th>Severity</th><th>Status</th></tr>"]
    for s in report.cases:
        r, p = s.row, s.row.get("probability")
        band = bands.band(p)
        parts.append("<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in (
            r.get("rank") or "", s.study.get("patient_id", r.get("patient_id", "")),
            s.study.get("patient_name", "").replace("^", " "), s.study.get("study_date", ""), r.get("case", ""),
            f"{p:.3f}" if p is not None else "")) + f"<td class='{band}'>{band}</td>" + "".join(
            f"<td>{e(str(v))}</td>" for v in (
                f"{r['involvement_percent']:.1f} %" if r.get("involvement_percent") is not None else "",
                r.get("severity", "") if s.assessed else "", r.get("status", ""))) + "</tr>")
    parts.append("</table>")
    for s in report.cases:
        if s.assessed:
            parts.append(_case_html(s, report))
    if not any(s.assessed for s in report.cases):
        parts.append("<h3>Model card</h3>" + _pairs(card_summary(report.card, report.model)))
    parts.append(f"<p class='disclaimer'>{DISCLAIMER}</p></body></html>")
    write_text_atomic(out, "\n".join(parts))
    return out


def _case_html(section: CaseSection, report: Report) -> str:
    e = html.escape
    pred, row, bands = section.prediction, section.row, report.bands
    p = float(pred.get("probability", 0.0))
    out = [f"<section><h2>Case {e(str(row.get('rank', '')))}: {e(str(row.get('case', '')))}</h2>",
           _pairs(identity_lines(section)),
           f"<p><b>P(COVID-19) = {p:.3f}</b> ({bands.band(p)} band; "
           f"{'positive' if p >= bands.threshold else 'negative'} at the operating threshold "
           f"{bands.threshold:.2f}). Lesion volume {pred.get('lesion_ml', 0):.1f} mL, involvement "
           f"{pred.get('involvement_percent', 0):.1f} % (left {pred.get('involvement_left_percent', 0):.1f} %, "
           f"right {pred.get('involvement_right_percent', 0):.1f} %), severity {pred.get('severity', 0)}/30.</p>"]
    zones = pred.get("zones", [])
    if zones:
        out.append("<table><tr><th>Lung</th><th>Zone</th><th>Lung mL</th><th>Lesion mL</th><th>Involvement</th>"
                   "<th>Score</th></tr>" + "".join(
                       f"<tr><td>{z['lung']}</td><td>{z['zone']}</td><td>{z['lung_ml']:.0f}</td>"
                       f"<td>{z['lesion_ml']:.1f}</td><td>{z['percent']:.1f} %</td><td>{z['score']}</td></tr>"
                       for z in zones) + "</table>")
    images = section.key_images()
    if images:
        out.append("<p>Key images (lung window; heat map; lesion outline in yellow; patient's right on the left)</p>"
                   "<div class='keys'>" + "".join(
                       f"<img alt='axial {k['index']}' src='data:image/png;base64,{_b64(path.read_bytes())}'>"
                       for k, path in images) + "</div>")
    plot = slice_plot_png(pred.get("slices", []), bands.threshold, [k["index"] for k, _ in images])
    if plot:
        out.append(f"<p><img alt='per-slice probability' style='width:100%' "
                   f"src='data:image/png;base64,{_b64(plot)}'></p>")
    timings = pred.get("timings_s", {})
    if timings:
        out.append("<p>Timings: " + ", ".join(f"{e(k)} {v:.2f} s" for k, v in timings.items()) + "</p>")
    out.append("<h4>Model card</h4>" + _pairs(card_summary(report.card, report.model)))
    return "".join(out) + "</section>"


def _pairs(lines: list[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{html.escape(a)}</th><td>{html.escape(str(b))}</td></tr>"
                               for a, b in lines if b) + "</table>"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
