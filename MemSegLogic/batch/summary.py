"""The run's summary: one record a case, written as CSV (for spreadsheets) and JSON (for scripts).

status: done (segmented in this run), skipped (done before with the same inputs: the output was
kept), failed (the message says why, in one line), cancelled (the run was stopped first)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import pathlib
from typing import List, Optional

from ..io.atomic import replace_atomically

STATUSES = ("done", "skipped", "failed", "cancelled")
SUMMARY_CSV = "summary.csv"
SUMMARY_JSON = "summary.json"


@dataclasses.dataclass
class CaseRecord:
    case: str
    row: int
    image: str
    output: str
    status: str
    seconds: Optional[float] = None  # this run's time on the case (a worker's wall time)
    voxels: Optional[int] = None
    volume_ml: Optional[float] = None
    dice: Optional[float] = None  # against the reference, when the manifest gives one
    volume_difference_ml: Optional[float] = None  # result minus reference
    model: str = ""
    device: str = ""
    message: str = ""


FIELDS = [field.name for field in dataclasses.fields(CaseRecord)]


def counts(records: List[CaseRecord]) -> dict:
    return {status: sum(r.status == status for r in records) for status in STATUSES}


def write_summary(folder, records: List[CaseRecord], manifest, wall_seconds: float, workers: int) -> pathlib.Path:
    """summary.csv and summary.json in ``folder`` (each replaced atomically); returns the CSV's path."""
    folder = pathlib.Path(folder)
    records = sorted(records, key=lambda r: r.row)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({name: _cell(value) for name, value in dataclasses.asdict(record).items()})
    csv_path = replace_atomically(folder / SUMMARY_CSV, lambda partial: partial.write_text(text.getvalue(), encoding="utf-8"))
    from .. import __version__

    document = {"memseg": __version__, "manifest": str(manifest), "workers": workers,
                "wall_seconds": round(wall_seconds, 3), "counts": counts(records),
                "cases": [dataclasses.asdict(record) for record in records]}
    replace_atomically(folder / SUMMARY_JSON,
                       lambda partial: partial.write_text(json.dumps(document, indent=1), encoding="utf-8"))
    return csv_path


def _cell(value):
    if value is None:
        return ""
    return f"{value:.4f}" if isinstance(value, float) else value
