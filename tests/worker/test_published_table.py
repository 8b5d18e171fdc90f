import gzip
import json

import numpy as np
import pytest

from archetype.errors import SpecError
from archetype.searchspace.nb201 import format_nb201
from archetype.worker.published_table import load_published_table, shared_benchmarks_dir

A = format_nb201(["nor_conv_3x3"] * 6)
B = format_nb201(["skip_connect"] * 6)


def write(tmp_path, text, name="t.csv.gz"):
    path = tmp_path / name
    with gzip.open(path, "wt") as f:
        f.write(text)
    return path


def test_reads_columns_and_rows(tmp_path):
    table = load_published_table(write(tmp_path, f"index,arch,acc,latency_ms_dev\n0,{A},90.5,3\n1,{B},80,\n"))
    assert table.devices() == ["dev"]
    assert table.row(B) == 1
    np.testing.assert_array_equal(table.column("acc"), [90.5, 80.0])
    assert np.isnan(table.column("dev")[1])


def test_a_text_column_is_left_out_but_a_device_column_must_be_numbers(tmp_path):
    table = load_published_table(write(tmp_path, f"arch,note,latency_ms_dev\n{A},fast,3\n{B},slow,4\n"))
    assert sorted(table.columns) == ["latency_ms_dev"]
    with pytest.raises(SpecError, match="no column 'note'"):
        table.column("note")


@pytest.mark.parametrize(("text", "message"), [
    ("index,acc\n0,1\n", "no 'arch' column"),
    (f"arch,acc\n{B},1\n{A},x\n", "row 3, column 'acc'"),
    (f"arch,latency_ms_dev\n{A},x\n", "row 2, column 'latency_ms_dev'"),
    (f"arch,acc\n{A}\n", "row 2 has 1 fields"),
    ("arch,acc\n|bad~0|,1\n", "row 2"),
    ("arch,acc\n", "no rows"),
])
def test_bad_tables_name_the_row_or_column(tmp_path, text, message):
    with pytest.raises(SpecError, match=message):
        load_published_table(write(tmp_path, text))


def test_unknown_column_and_missing_arch_are_named(tmp_path):
    table = load_published_table(write(tmp_path, f"arch,acc\n{A},1\n"))
    with pytest.raises(SpecError, match="no column 'raspi4'"):
        table.column("raspi4")
    with pytest.raises(SpecError, match="not in the table"):
        table.row(B)


def test_truncated_gzip_is_one_error(tmp_path):
    path = write(tmp_path, f"arch,acc\n{A},1\n" * 200)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(SpecError, match="gzip"):
        load_published_table(path)


def test_fbnet_json(tmp_path):
    arch = ["k3_e1"] * 22
    data = {"metainfo": {"arch": [{"arch_str": arch}]}, "latency_ms": {"raspi4": [12.5]}}
    table = load_published_table(write(tmp_path, json.dumps(data), "f.json.gz"))
    assert table.space == "fbnet" and table.devices() == ["raspi4"]
    assert table.column("raspi4")[table.row(arch)] == 12.5


def test_shared_nb201_table_matches_published_checks():
    root = shared_benchmarks_dir()
    if root is None:
        pytest.skip("shared/benchmarks is not beside this checkout and ARCHETYPE_BENCHMARKS is unset")
    table = load_published_table(root / "nb201.csv.gz")
    assert len(table) == 15625
    assert round(float(table.column("cifar10_test").max()), 2) == 94.37
    assert round(float(np.mean(table.column("cifar10_test"))), 2) == 87.06
