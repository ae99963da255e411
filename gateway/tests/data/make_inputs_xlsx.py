#!/usr/bin/env python3
"""Generates the XLSX fixtures of gateway/tests/api.rs (run once; the outputs are checked in).

    pip install openpyxl
    python3 gateway/tests/data/make_inputs_xlsx.py

inputs.xlsx: a valid import. The header is in another order than the EconomicInputs fields, the
table starts at B2 (so rows are numbered as the spreadsheet shows them), one value is an
integer cell, one is text, some cells are empty, and there is an empty row in between.

inputs-bad.xlsx: the same layout with problems in rows 3 and 4 (a date cell instead of RFC 3339
text, a boolean, a formula error); nothing of it may be stored.
"""
import datetime
import os

from openpyxl import Workbook

HERE = os.path.dirname(os.path.abspath(__file__))
HEADER = ["entity", "to", "from", "value_added_cny", "employees_avg",
          "solid_waste_generated_t", "solid_waste_utilized_t", "unmetered_water_m3"]


def sheet(rows, name):
    wb = Workbook()
    ws = wb.active
    ws.title = "inputs"
    for c, h in enumerate(HEADER):
        ws.cell(row=2, column=2 + c, value=h)
    for r, row in enumerate(rows):
        for c, v in enumerate(row):
            if v is not None:
                ws.cell(row=3 + r, column=2 + c, value=v)
    # A second sheet that must be ignored (only the first sheet is read).
    other = wb.create_sheet("notes")
    other["A1"] = "ignored"
    wb.save(os.path.join(HERE, name))


sheet([
    ["p1/e1", "2026-02-01T00:00:00+08:00", "2026-01-01T00:00:00+08:00", 41000000, 420.5, 300, 270, None],
    [None] * len(HEADER),
    ["p1/e1/w1", "2026-02-01T00:00:00+08:00", "2026-01-01T00:00:00+08:00", "1250000.5", None, None, None, 812],
], "inputs.xlsx")

sheet([
    ["p1/e1", "2026-02-01T00:00:00+08:00", "2026-01-01T00:00:00+08:00", 41000000, 420, None, None, None],
    ["p1/e1", datetime.datetime(2026, 3, 1), "2026-02-01T00:00:00+08:00", 42000000, True, None, None, None],
    ["p1/e1/w1", "2026-02-01T00:00:00+08:00", "2026-01-01T00:00:00+08:00", "#DIV/0!", None, None, None, None],
], "inputs-bad.xlsx")
