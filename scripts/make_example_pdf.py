#!/usr/bin/env python3
"""Writes examples/tide-mills.pdf, the example corpus's PDF (three pages of original text, CC0).

Run by hand when the text changes; needs fpdf2 (`pip install fpdf2`), which `make` never needs.
usage: scripts/make_example_pdf.py [OUT]
"""
import datetime
import pathlib
import sys

from fpdf import FPDF

ROOT = pathlib.Path(__file__).resolve().parent.parent

PAGES = [
    (
        "Tide Mills",
        [
            "A tide mill is a water mill driven by the rise and fall of the tide instead of by a river. "
            "At high tide the sea fills a storage pond behind a dam through gates that open inward. "
            "When the tide turns, the gates close under the pressure of the pond, and the trapped water "
            "is held until the sea outside has fallen low enough to give a useful head.",
            "The miller then opens a sluice and lets the pond drain through the wheel back to the sea. "
            "Because the work depends on the tide, a tide mill runs for a few hours twice a day, and the "
            "miller's working hours move by about fifty minutes each day with the tides.",
        ],
    ),
    (
        "Where Tide Mills Were Built",
        [
            "Tide mills were built on sheltered estuaries and creeks with a large tidal range, where a "
            "short dam could enclose a wide pond. They were common on the coasts of western Europe from "
            "the middle ages and in colonial North America, grinding grain for towns far from any river "
            "with enough fall to drive an ordinary mill.",
            "The largest ponds covered many acres. Silt carried in by every tide slowly filled them, and "
            "keeping the pond deep by dredging was one of the main costs of running a tide mill.",
        ],
    ),
    (
        "Tidal Power Today",
        [
            "The idea of the tide mill survives in tidal barrage power stations, which hold back the sea "
            "behind a dam and generate electricity through turbines as the water returns. The barrage at "
            "La Rance in France, opened in 1966, works on the same principle as the old mills at a far "
            "larger scale.",
            "A few historic tide mills have been restored as museums, and some grind flour on open days "
            "when the tide allows, so visitors can see the pond fill and the wheel turn.",
        ],
    ),
]


def main() -> None:
    out = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "examples" / "tide-mills.pdf"
    pdf = FPDF()
    pdf.set_title("Tide Mills")
    pdf.set_author("millrace examples (CC0)")
    # A fixed date: the file is the same on every run.
    pdf.set_creation_date(datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc))
    for heading, paragraphs in PAGES:
        pdf.add_page()
        pdf.set_font("Helvetica", style="B", size=18)
        pdf.multi_cell(0, 10, heading)
        pdf.ln(4)
        pdf.set_font("Helvetica", size=12)
        for paragraph in paragraphs:
            pdf.multi_cell(0, 7, paragraph)
            pdf.ln(4)
    pdf.output(str(out))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
