"""The SQL store of studies, trials and metrics: one Store class, SQLite by default, migrated on open."""

from archetype.store.engine import DEFAULT_STORAGE, STORAGE_ENV, open_engine, resolve_url, session_scope
from archetype.store.models import CompressionStatus, StudyStatus
from archetype.store.storage import (
    CompressionRunRecord,
    CompressionStepRecord,
    LatencyRecord,
    Store,
    StudyExistsError,
    StudyRecord,
    StudySummary,
    TrialOutcome,
    TrialPage,
    TrialRecord,
)

__all__ = [
    "DEFAULT_STORAGE",
    "STORAGE_ENV",
    "CompressionRunRecord",
    "CompressionStatus",
    "CompressionStepRecord",
    "LatencyRecord",
    "Store",
    "StudyExistsError",
    "StudyRecord",
    "StudyStatus",
    "StudySummary",
    "TrialOutcome",
    "TrialPage",
    "TrialRecord",
    "open_engine",
    "resolve_url",
    "session_scope",
]
