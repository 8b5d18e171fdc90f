"""Frozen stores of every released schema revision (tests/data/store-<revision>.db) upgrade with their data intact."""

from __future__ import annotations

import importlib.util
import shutil
import sqlite3
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy import MetaData, create_engine, select
from sqlalchemy.pool import NullPool

from archetype.result import TrialState
from archetype.store import Store, StudyStatus

DATA = Path(__file__).parents[1] / "data"
FROZEN = sorted(DATA.glob("store-*.db"))


def _builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_frozen_stores", DATA / "make_frozen_stores.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


builder = _builder()


def _tables(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Every table of the SQLite file at ``path`` with its rows in id order, decoded by reflection."""
    engine = create_engine(f"sqlite:///{path}", poolclass=NullPool)
    try:
        tables = MetaData()
        tables.reflect(engine)
        with engine.connect() as connection:
            return {
                name: [dict(row._mapping) for row in connection.execute(select(table).order_by(*table.primary_key))]
                for name, table in tables.tables.items()
            }
    finally:
        engine.dispose()


def _naive(value: Any) -> Any:
    return value.replace(tzinfo=None) if isinstance(value, datetime) else value


def test_there_is_a_frozen_store_of_each_released_revision() -> None:
    frozen = [path.stem.removeprefix("store-") for path in FROZEN]
    known = builder.revisions()
    assert frozen and set(frozen) <= set(known), (frozen, known)
    assert {"0001", "0004", "0005"} <= set(frozen)


@pytest.mark.parametrize("frozen", FROZEN, ids=lambda path: path.stem)
def test_a_frozen_store_upgrades_to_the_newest_revision_with_its_rows_intact(frozen: Path, tmp_path: Path) -> None:
    revision = frozen.stem.removeprefix("store-")
    path = tmp_path / frozen.name
    shutil.copyfile(frozen, path)
    before = _tables(path)
    assert before["alembic_version"] == [{"version_num": revision}]

    with Store.open(f"sqlite:///{path}") as store:
        study = store.get_study("frozen-study")
        trials = store.trials("frozen-study")

    after = _tables(path)
    assert after["alembic_version"] == [{"version_num": builder.revisions()[-1]}]
    for name, rows in builder.ROWS.items():
        if name not in before:
            continue
        columns = set(before[name][0]) if before[name] else set()
        assert before[name] and len(after[name]) == len(rows), name
        for stored, known in zip(after[name], rows, strict=True):
            assert {c: stored[c] for c in columns} == {c: _naive(known[c]) for c in columns}, name

    assert (study.name, study.status, study.spec) == ("frozen-study", StudyStatus.COMPLETE, builder.STUDY["spec"])
    assert (study.created_at, study.updated_at) == (builder.CREATED, builder.FINISHED)
    assert [(t.number, t.state) for t in trials] == [
        (1, TrialState.COMPLETE), (2, TrialState.FAILED), (3, TrialState.PRUNED)]
    assert trials[0].values == {"accuracy": 0.9125, "latency_ms": 0.0625}
    assert [t.operators for t in trials] == [("conv_bn_act",)] * 3  # stored beside the architecture from 0008 on
    assert trials[1].error == builder.TRIALS[1]["error"]
    assert trials[0].finished_at == builder.FINISHED


def test_a_frozen_store_is_left_as_it_was_when_only_read(tmp_path: Path) -> None:
    """Copies are upgraded, never the files in tests/data: their revision is still theirs."""
    for frozen in FROZEN:
        with sqlite3.connect(f"file:{frozen}?mode=ro", uri=True) as db:
            assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [
                (frozen.stem.removeprefix("store-"),)
            ]
