"""``archetype latency fit`` on a user's CSV and ``bench/latency_devices.py`` on any table of the same layout."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from archetype.cli import main

from .test_latency_learned import CELLS, device_ms

BENCH = Path(__file__).resolve().parents[2] / "bench" / "latency_devices.py"


def write_table(path: Path, rows: int = 120, blank_new_after: int | None = None) -> Path:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["arch", "note", "latency_ms_a", "latency_ms_b", "latency_ms_new"])
        for k, cell in enumerate(CELLS[:rows]):
            new = "" if blank_new_after is not None and k >= blank_new_after else f"{device_ms(cell, 0.7, 0.9):.6f}"
            out.writerow([cell, "user", f"{device_ms(cell):.6f}", f"{device_ms(cell, 3.0, 1.2):.6f}", new])
    return path


def test_fit_a_device_and_write_every_prediction(tmp_path, capsys):
    table, out = write_table(tmp_path / "mine.csv"), tmp_path / "pred.csv"
    assert main(["latency", "fit", "--csv", str(table), "--device", "a", "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["method"] in ("gbdt", "gcn") and result["samples"] == 120 and result["held_out"] == 0
    assert result["within_10"] is None and set(result["validation"]) >= {"gbdt", "gcn"}
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["arch", "predicted_latency_ms_a"] and len(rows) == 121
    predicted = np.array([float(r[1]) for r in rows[1:]])
    truth = np.array([device_ms(c) for c in CELLS[:120]])
    assert np.mean(np.abs(predicted / truth - 1) <= 0.1) > 0.9


def test_twenty_shots_of_a_new_device_with_transfer(tmp_path, capsys):
    table = write_table(tmp_path / "mine.csv", blank_new_after=40)  # only 40 rows measured on the new device
    args = ["latency", "fit", "--csv", str(table), "--device", "new", "--shots", "20", "--pretrained-on", "a,b"]
    assert main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["method"] == "transfer" and result["samples"] == 20 and result["held_out"] == 20
    assert result["pretrained_on"] == ["a", "b"] and result["within_10"] > 0.9 and result["spearman"] > 0.95
    assert main(args) == 0
    assert "transfer from a, b, fitted from 20 measured rows" in capsys.readouterr().out


@pytest.mark.parametrize(("change", "message"), [
    (lambda p: p.write_text("index,latency_ms_a\n0,1\n"), "no 'arch' column"),
    (lambda p: p.write_text(p.read_text().replace(CELLS[5], "|nor_conv_3x3~0|+|bad~0|", 1)), "row 7"),
    (None, "no column 'nosuch'"),
    (lambda p: p.write_text("\n".join(p.read_text().splitlines()[:6]) + "\n"), "5 usable measured .* at least 10"),
])
def test_bad_input_is_one_line_and_nothing_is_written(tmp_path, capsys, change, message):
    table, out = write_table(tmp_path / "mine.csv"), tmp_path / "pred.csv"
    if change is not None:
        change(table)
    device = "nosuch" if change is None else "a"
    assert main(["latency", "fit", "--csv", str(table), "--device", device, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len([line for line in err if "error" in line]) == 1
    assert "mine.csv" in err[-1] and __import__("re").search(message, err[-1])
    assert not out.exists()


def test_pretraining_on_the_device_itself_is_refused(tmp_path, capsys):
    table = write_table(tmp_path / "mine.csv")
    assert main(["latency", "fit", "--csv", str(table), "--device", "a", "--pretrained-on", "a,b"]) == 2
    assert "lists 'a', the device being fitted" in capsys.readouterr().err


def test_bench_reads_any_table_of_the_layout(tmp_path):
    table = write_table(tmp_path / "devices.csv", rows=200)
    run = subprocess.run([sys.executable, str(BENCH), str(table), "--train", "60", "--small", "20", "--val", "20",
                          "--shots", "10", "--seeds", "1", "--models", "gbdt", "--learnable"], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = {line.split()[0]: line.split() for line in run.stdout.splitlines() if line.split()
             and line.split()[0] in ("a", "b", "new")}
    assert set(lines) == {"a", "b", "new"}
    assert all(0.8 < float(cols[1]) <= 1.0 for cols in lines.values())  # share within ±10% after the name
    assert all(cols[13] == "-" and 0.8 < float(cols[14]) <= 1.0 for cols in lines.values())  # no rounding; at 90%
    bad = subprocess.run([sys.executable, str(BENCH), str(table), "--devices", "zz"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "latency_ms_zz" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
