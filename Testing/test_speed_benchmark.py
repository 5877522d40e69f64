"""The speed benchmark's smoke run (CI): the one command still runs every kind of row and
reports what README's tables need. Figures are measured by the command, never asserted here."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

pytest.importorskip("sam2")


def test_smoke_run_reports_every_row(tmp_path):
    results = tmp_path / "speed.json"
    completed = subprocess.run(
        [sys.executable, str(REPO / "Testing" / "benchmarks" / "speed.py"), "--preset", "smoke", "--device", "cpu",
         "--work", str(tmp_path / "work"), "--json", str(results)],
        capture_output=True, text=True, timeout=1200, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(results.read_text())
    rows = report["rows"]
    assert list(rows) == ["sam2-stock", "memseg-naive6", "memseg-axes3", "memseg-axes1", "lite-axes1",
                          "lite-click-axes1", "memsam-10"]
    assert all("error" not in figures for figures in rows.values())
    # The phantom is 12 x 48 x 48 (KJI), the seed axis K.
    assert rows["sam2-stock"]["slices_visited"] == 12  # stock visits every slice of its axis
    assert rows["sam2-stock"]["time_vs_stock"] == 1.0
    assert rows["memseg-naive6"]["slices_visited"] == rows["memseg-naive6"]["slices_encoded"] == 12 + 48 + 48
    # the defaults stop early and crop: fewer slices than the naive six directions
    assert rows["memseg-axes1"]["slices_visited"] <= 12
    assert rows["memseg-axes3"]["slices_visited"] < rows["memseg-naive6"]["slices_visited"]
    for name in ("memseg-naive6", "memseg-axes3", "memseg-axes1", "lite-axes1"):
        figures = rows[name]
        assert figures["wall_s"] > 0 and figures["time_vs_stock"] > 0 and figures["peak_rss_mb"] > 0
        assert figures["slices_per_s"] == pytest.approx(figures["slices_visited"] / figures["wall_s"])
    assert rows["lite-axes1"]["dice"] > 0.8  # real LiteMedSAM weights on the phantom ellipsoid
    for name in ("lite-axes1", "lite-click-axes1"):  # the seed slice is shown before the run ends
        assert 0 < rows[name]["first_result_s"] < rows[name]["wall_s"]
    assert rows["lite-click-axes1"]["dice"] > 0.5  # one click at the ellipsoid's deepest point
    assert rows["memsam-10"]["slices_encoded"] == 10
    environment = report["environment"]
    assert environment["device"] == "cpu" and environment["dtype"] == "float32"
    assert environment["torch"] and environment["sam2"] == "1.1.0"
    assert "| row | wall s | × stock |" in completed.stdout
