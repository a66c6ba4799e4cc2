"""The report as PDF, written by reportlab: no display, no browser engine, text that `pdftotext` reads back."""

from __future__ import annotations

import datetime
import io
from pathlib import Path

from app.reports.content import DISCLAIMER, CaseSection, Report, card_summary, identity_lines
from app.reports.plots import slice_plot_png
from viewer.io.atomic_files import write_bytes_atomic


def write_pdf(report: Report, out: Path) -> Path:
    """Write `report` to `out` (atomically: a failed run leaves no half-written file)."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import Image, PageBreak, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    styles = getSampleStyleSheet()
    body, small = styles["BodyText"], styles["BodyText"].clone("small", fontSize=8, leading=10)
    band_colour = {"high": colors.HexColor("#f5b7b1"), "intermediate": colors.HexColor("#fad7a0"),
                   "low": colors.HexColor("#d5f5e3")}
    grid = TableStyle([("GRID", (0, 0), (-1, -1), 0.25, colors.grey), ("FONTSIZE", (0, 0), (-1, -1), 8),
                       ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e5e8e8")),
                       ("VALIGN", (0, 0), (-1, -1), "TOP")])
    bands = report.bands
    story: list = [Paragraph("LungLens screening report", styles["Title"]),
                   Paragraph(f"<b>{DISCLAIMER}</b>", body),
                   Paragraph(f"Generated {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} from "
                             f"{_esc(str(report.folder))}. Model: {_esc(report.model)}. Operating threshold "
                             f"{bands.threshold:.2f}; bands: high at or above {bands.high:.2f}, low below "
                             f"{bands.low:.2f}.", body), Spacer(1, 4 * mm)]
    header = ["Rank", "Patient ID", "Patient", "Study date", "Case", "P(COVID-19)", "Band", "Involvement",
              "Severity", "Status"]
    rows: list[list] = [header]
    styles_extra = []
    for i, s in enumerate(report.cases, start=1):
        r, p = s.row, s.row.get("probability")
        band = bands.band(p)
        rows.append([str(r.get("rank") or ""), s.study.get("patient_id", r.get("patient_id", "")),
                     Paragraph(_esc(s.study.get("patient_name", "").replace("^", " ")), small),
                     s.study.get("study_date", ""), Paragraph(_esc(str(r.get("case", ""))), small),
                     f"{p:.3f}" if p is not None else "", band,
                     f"{r['involvement_percent']:.1f} %" if r.get("involvement_percent") is not None else "",
                     str(r.get("severity", "")) if s.assessed else "",
                     Paragraph(_esc(str(r.get("status", ""))), small)])
        if band:
            styles_extra.append(("BACKGROUND", (6, i), (6, i), band_colour[band]))
    table = Table(rows, repeatRows=1, colWidths=[10 * mm, 24 * mm, 26 * mm, 16 * mm, 30 * mm, 20 * mm, 18 * mm,
                                                 17 * mm, 13 * mm, 25 * mm])
    table.setStyle(grid)
    table.setStyle(TableStyle(styles_extra))
    story.append(table)
    for section in report.cases:
        if section.assessed:
            story += [PageBreak(), *_case_story(section, report, styles, body, small, grid, mm, Image, Paragraph,
                                                Spacer, Table)]
    if not any(s.assessed for s in report.cases):
        story += [Spacer(1, 6 * mm), Paragraph("Model card", styles["Heading3"]),
                  _pairs(card_summary(report.card, report.model), Table, Paragraph, small, grid, mm)]

    def footer(canvas, doc) -> None:
        canvas.saveState()
        canvas.setFont("Helvetica", 7)
        canvas.drawString(15 * mm, 10 * mm, f"LungLens - {DISCLAIMER}")
        canvas.drawRightString(A4[0] - 15 * mm, 10 * mm, f"page {doc.page}")
        canvas.restoreState()

    buf = io.BytesIO()
    doc = SimpleDocTemplate(buf, pagesize=A4, leftMargin=12 * mm, rightMargin=12 * mm, topMargin=14 * mm,
                            bottomMargin=16 * mm, title="LungLens screening report", author="LungLens",
                            subject=DISCLAIMER)
    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    write_bytes_atomic(out, buf.getvalue())
    return out


def _case_story(section: CaseSection, report: Report, styles, body, small, grid, mm, Image, Paragraph, Spacer,
                Table) -> list:
    pred, row, bands = section.prediction, section.row, report.bands
    p = float(pred.get("probability", row.get("probability") or 0.0))
    verdict = "positive" if p >= bands.threshold else "negative"
    story: list = [Paragraph(f"Case {row.get('rank', '')}: {_esc(str(row.get('case', '')))}", styles["Heading2"]),
                   _pairs(identity_lines(section), Table, Paragraph, small, grid, mm), Spacer(1, 3 * mm),
                   Paragraph(f"<b>P(COVID-19) = {p:.3f}</b> ({bands.band(p)} band; {verdict} at the operating "
                             f"threshold {bands.threshold:.2f}). Lesion volume {pred.get('lesion_ml', 0):.1f} mL "
                             f"({_kinds(pred)}), involvement {pred.get('involvement_percent', 0):.1f} % (left "
                             f"{pred.get('involvement_left_percent', 0):.1f} %, right "
                             f"{pred.get('involvement_right_percent', 0):.1f} %), severity "
                             f"{pred.get('severity', 0)}/30. Lesions: {_esc(pred.get('lesion_method', ''))}.",
                             body), Spacer(1, 2 * mm)]
    zones = [["Lung", "Zone", "Lung mL", "Lesion mL", "Involvement", "Score (0-5)"]]
    zones += [[z["lung"], z["zone"], f"{z['lung_ml']:.0f}", f"{z['lesion_ml']:.1f}", f"{z['percent']:.1f} %",
               str(z["score"])] for z in pred.get("zones", [])]
    if len(zones) > 1:
        t = Table(zones, repeatRows=1)
        t.setStyle(grid)
        story += [t, Spacer(1, 3 * mm)]
    images = section.key_images()
    if images:
        z_of = {s["index"]: s["z_mm"] for s in pred.get("slices", [])}
        width = 58 * mm
        cells = [Image(str(path), width=width, height=width, kind="proportional") for _, path in images]
        captions = [Paragraph(f"axial {k['index']}" + (f", z {z_of[k['index']]:.1f} mm" if k["index"] in z_of
                                                          else "") + f"; lesion {k['lesion_mm2']:.0f} mm2", small)
                    for k, _ in images]
        story += [Paragraph("Key images (lung window; heat map; lesion outline in yellow; patient's right on the "
                            "left)", small), Table([cells, captions])]
    plot = slice_plot_png(pred.get("slices", []), bands.threshold, [k["index"] for k, _ in images])
    if plot:
        story += [Spacer(1, 2 * mm), Image(io.BytesIO(plot), width=180 * mm, height=180 * mm * 2.2 / 6.5)]
    timings = pred.get("timings_s", {})
    if timings:
        story.append(Paragraph("Timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items())
                               + f"; whole case {row.get('seconds', 0):.1f} s on {pred.get('device', '')}.", small))
    from reportlab.platypus import KeepTogether

    story += [Spacer(1, 2 * mm), KeepTogether([Paragraph("Model card", styles["Heading4"]),
                                               _pairs(card_summary(report.card, report.model), Table, Paragraph,
                                                      small, grid, mm)])]
    return story


def _pairs(lines: list[tuple[str, str]], Table, Paragraph, small, grid, mm):
    t = Table([[label, Paragraph(_esc(str(text)), small)] for label, text in lines if text],
              colWidths=[35 * mm, 150 * mm])
    t.setStyle(grid)
    from reportlab.lib import colors
    from reportlab.platypus import TableStyle

    t.setStyle(TableStyle([("BACKGROUND", (0, 0), (0, -1), colors.HexColor("#f2f3f4")),
                           ("BACKGROUND", (1, 0), (-1, 0), colors.white)]))
    return t


def _kinds(pred: dict) -> str:
    kinds = pred.get("lesion_ml_by_kind") or {}
    return ", ".join(f"{k} {v:.1f} mL" for k, v in kinds.items()) or "kinds not separated"


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

