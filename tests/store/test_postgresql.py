"""What PostgreSQL does differently from SQLite: real time zones and JSON column types."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from archetype.objectives import DEFAULT_OBJECTIVES
from archetype.result import Result, TrialState
from archetype.store import Store


def test_times_read_back_in_utc_whatever_the_session_time_zone(postgres_url: str) -> None:
    kolkata = postgres_url.replace("options=", "options=-ctimezone%3DAsia%2FKolkata%20")
    before = datetime.now(UTC)
    with Store.open(kolkata) as store:
        store.create_study("tz", space="s", target="t", objectives=DEFAULT_OBJECTIVES, constraints=(), spec={})
        trial = store.record_trial("tz", {"a": 1}, "k", Result(TrialState.COMPLETE, {"accuracy": 0.5}))
    with Store.open(postgres_url) as store:
        study = store.get_study("tz")
        assert store.trials("tz") == [trial]
    for moment in (study.created_at, trial.started_at, trial.finished_at):
        assert moment is not None and moment.tzinfo is UTC
        assert before - timedelta(seconds=1) <= moment <= datetime.now(UTC)


def test_columns_have_postgresql_types(postgres_url: str) -> None:
    Store.open(postgres_url).close()
    engine = create_engine(postgres_url, poolclass=NullPool)
    with engine.connect() as connection:
        types = dict(connection.execute(text(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = 'trials'"
        )).all())
    engine.dispose()
    assert types["arch"] == types["timings"] == "json"
    assert types["started_at"] == "timestamp with time zone"
