"""Build the frozen SQLite stores of released schema revisions: tests/data/store-<revision>.db.

Each file is migrated with Alembic to exactly its revision and holds the known rows below, written
into whichever of their tables and columns that revision has. ``tests/store/test_frozen_stores.py``
upgrades every such file to the newest revision and checks that the rows read back intact.

When a schema revision is released, freeze it (existing files are kept as they are):

    .venv/bin/python tests/data/make_frozen_stores.py            # every revision without a file
    .venv/bin/python tests/data/make_frozen_stores.py 0006       # only this one
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, create_engine
from sqlalchemy.pool import NullPool

from archetype.store.engine import migration_config

HERE = Path(__file__).parent
CREATED = datetime(2026, 11, 22, 9, 30, 0, 123456, tzinfo=UTC)
FINISHED = datetime(2026, 11, 22, 9, 31, 15, 500000, tzinfo=UTC)

STUDY: dict[str, Any] = {
    "id": 1,
    "name": "frozen-study",
    "space": "conv-small",
    "target": "cpu-ort",
    "status": "complete",
    "objectives": [{"name": "accuracy", "direction": "maximize"}, {"name": "latency_ms", "direction": "minimize"}],
    "constraints": [{"name": "latency_ms", "op": "<=", "bound": 0.07}],
    "spec": {"space": "conv-small", "data": "digits", "trials": 3, "epochs": 2, "study": "frozen-study"},
    "strategy_state": {"strategy": "random", "version": 1, "asked": 3},
    "created_at": CREATED,
    "updated_at": FINISHED,
}

ARCH = {"input": "Image[1,8,8]", "slots": [{"slot": "stem", "op": "conv_bn_act", "params": {"width": 8}}]}

TRIALS: list[dict[str, Any]] = [
    {"id": 1, "study_id": 1, "number": 1, "arch": ARCH, "operators": "conv_bn_act",
     "arch_key": "00000000000000a1", "state": "complete",
     "error": None, "timings": {"train": 1.5, "measure": 0.25}, "attempt": 1, "target": "cpu-ort",
     "fingerprint": {"cpu": "x86_64", "onnxruntime": "1.19"}, "started_at": CREATED, "finished_at": FINISHED},
    {"id": 2, "study_id": 1, "number": 2, "arch": ARCH, "operators": "conv_bn_act",
     "arch_key": "00000000000000a2", "state": "failed",
     "error": "evaluation raised in the worker: RuntimeError: loss is NaN", "timings": {"train": 0.5},
     "attempt": 2, "target": "cpu-ort", "fingerprint": {}, "started_at": CREATED, "finished_at": FINISHED},
    {"id": 3, "study_id": 1, "number": 3, "arch": ARCH, "operators": "conv_bn_act",
     "arch_key": "00000000000000a3", "state": "pruned",
     "error": None, "timings": {"measure": 0.2}, "attempt": 1, "target": "cpu-ort", "fingerprint": {},
     "started_at": CREATED, "finished_at": FINISHED},
]

METRICS: list[dict[str, Any]] = [
    {"id": 1, "trial_id": 1, "name": "accuracy", "value": 0.9125},
    {"id": 2, "trial_id": 1, "name": "latency_ms", "value": 0.0625},
    {"id": 3, "trial_id": 1, "name": "size_mb", "value": None},  # a non-finite value is stored as NULL
    {"id": 4, "trial_id": 3, "name": "latency_ms", "value": 0.5},
]

COMPRESSION_RUNS: list[dict[str, Any]] = [
    {"id": 1, "name": "frozen-run", "source": "frozen-study:1", "source_trial_id": 1, "target": "cpu-ort",
     "budget": {"latency_ms": 0.05}, "pipeline": ["prune", "quantize"], "status": "complete", "out_dir": "out",
     "report": {"speedup": 1.5}, "error": None, "created_at": CREATED, "finished_at": FINISHED},
]

COMPRESSION_STEPS: list[dict[str, Any]] = [
    {"id": 1, "run_id": 1, "position": 0, "name": "source", "accepted": True,
     "metrics": {"latency_ms": 0.0625, "accuracy": 0.9125}, "details": {}, "message": None, "seconds": 0.0},
    {"id": 2, "run_id": 1, "position": 1, "name": "prune", "accepted": False, "metrics": {"latency_ms": 0.07},
     "details": {"ratio": 0.25}, "message": "no faster on cpu-ort", "seconds": 2.5},
]

ROWS: dict[str, list[dict[str, Any]]] = {
    "studies": [STUDY],
    "trials": TRIALS,
    "trial_metrics": METRICS,
    "compression_runs": COMPRESSION_RUNS,
    "compression_steps": COMPRESSION_STEPS,
}
"""The known rows, by table; a revision without a table or column gets none of it."""


def frozen_path(revision: str) -> Path:
    """Where the frozen store of ``revision`` is kept."""
    return HERE / f"store-{revision}.db"


def revisions() -> list[str]:
    """Every schema revision, oldest first."""
    scripts = ScriptDirectory.from_config(migration_config())
    return [script.revision for script in reversed(list(scripts.walk_revisions()))]


def build(revision: str, path: Path) -> None:
    """Write a SQLite store at exactly ``revision`` with the known rows to ``path``."""
    if path.exists():
        raise FileExistsError(f"{path} exists; a frozen store is never rewritten")
    engine = create_engine(f"sqlite:///{path}", poolclass=NullPool)
    try:
        with engine.begin() as connection:
            command.upgrade(migration_config(connection), revision)
        tables = MetaData()
        tables.reflect(engine)
        with engine.begin() as connection:
            for name, rows in ROWS.items():
                if name not in tables.tables:
                    continue
                table = tables.tables[name]
                connection.execute(table.insert(), [_naive({k: v for k, v in row.items() if k in table.c})
                                                    for row in rows])
    finally:
        engine.dispose()


def _naive(row: dict[str, Any]) -> dict[str, Any]:
    """Datetimes as the store writes them to SQLite: UTC without a zone."""
    return {k: v.replace(tzinfo=None) if isinstance(v, datetime) else v for k, v in row.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Freeze SQLite stores of schema revisions into tests/data/.")
    parser.add_argument("revision", nargs="*", help="revisions to freeze (default: every one without a file)")
    args = parser.parse_args(argv)
    known = revisions()
    unknown = [r for r in args.revision if r not in known]
    if unknown:
        parser.error(f"unknown revision {unknown[0]!r}; known: {', '.join(known)}")
    for revision in args.revision or [r for r in known if not frozen_path(r).exists()]:
        build(revision, frozen_path(revision))
        print(f"froze revision {revision} into {frozen_path(revision)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
