"""A search answered by a published table: every value comes from the table's columns, bad columns or a table
missing a cell are refused with one line, and the real NB201 table answers the way the paper reports."""

from __future__ import annotations

import itertools
import json

import pytest

from archetype.cli import main
from archetype.searchspace import Architecture, Image
from archetype.searchspace.nb201 import NB201_OPS, format_nb201
from archetype.searchspace.spaces.nb201 import nb201_space
from archetype.store import Store
from archetype.worker.evaluator import Budget
from archetype.worker.published_table import shared_benchmarks_dir
from archetype.worker.tabular import PublishedTableEvaluator

CELLS = [format_nb201(ops) for ops in itertools.product(NB201_OPS, repeat=6)]


def _accuracy(cell: str) -> float:
    return 50.0 + 7.0 * cell.count("nor_conv_3x3") + 3.0 * cell.count("nor_conv_1x1")


def _latency(cell: str) -> float:
    return 1.0 + cell.count("nor_conv") + 0.5 * cell.count("avg_pool")


@pytest.fixture
def table(tmp_path):
    """A table of every NB201 cell with a made-up accuracy (in %) and latency, each a function of the cell."""
    path = tmp_path / "t.csv"
    rows = [f"{cell},{_accuracy(cell)},{_latency(cell)}" for cell in CELLS]
    path.write_text("arch,acc_test,latency_ms_dev\n" + "\n".join(rows) + "\n")
    return path


def test_search_stores_the_tables_values(table, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 's.db'}"
    code = main(["search", "--storage", url, "--json", "--space", "nb201", "--benchmark", str(table),
                 "--metric", "acc_test", "--latency-column", "dev", "--latency-ms", "3", "--trials", "40",
                 "--strategy", "evolution", "--seed", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert json.loads(out)["trials"] == 40
    with Store.open(url) as store:
        trials = store.trials(json.loads(out)["study"])
    assert len({t.arch_key for t in trials}) == 40
    for t in trials:
        cell = Architecture.from_json(t.arch).to_nb201()
        assert t.values["accuracy"] == pytest.approx(_accuracy(cell) / 100)  # stored as a fraction, as training
        assert t.values["latency_ms"] == pytest.approx(_latency(cell))


def test_unknown_column_and_missing_cell_are_refused_with_one_line(table, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 's.db'}"
    base = ["search", "--storage", url, "--space", "nb201", "--benchmark", str(table), "--latency-ms", "3"]
    for extra, said in ((["--metric", "acc_tset", "--latency-column", "dev"], "no column 'acc_tset'"),
                        (["--metric", "acc_test", "--latency-column", "phone"], "no column 'phone'"),
                        (["--metric", "acc_test"], "needs latency_column")):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and said in err, err
    lines = table.read_text().splitlines()
    table.write_text("\n".join(line for line in lines if not line.startswith(CELLS[77] + ",")) + "\n")
    assert main([*base, "--metric", "acc_test", "--latency-column", "dev"]) == 2
    err = capsys.readouterr().err.strip()
    assert CELLS[77] in err and "not in the table" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "s.db").exists()  # refused before the store is opened


def test_shared_nb201_table_answers_the_published_optimum():
    root = shared_benchmarks_dir()
    if root is None:
        pytest.skip("../shared/benchmarks is not beside this checkout")
    space = nb201_space(Image(3, 32, 32), 10)
    evaluator = PublishedTableEvaluator.open(root / "nb201.csv.gz", space, "cifar10_test", "raspi4")
    best = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
    result = evaluator.evaluate(Architecture.from_nb201(best), Budget(epochs=0))
    assert round(100 * result.values["accuracy"], 2) == 94.37  # the published CIFAR-10 optimum
    assert result.values["accuracy"] == pytest.approx(evaluator.accuracy.max())
    assert result.values["latency_ms"] > 0 and result.values["params"] == 1_073_466
