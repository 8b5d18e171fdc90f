"""The SQL store of studies, trials and metrics: one Store class, SQLite by default, migrated on open."""

from archetype.store.engine import DEFAULT_STORAGE, STORAGE_ENV, open_engine, resolve_url, session_scope
from archetype.store.models import CompressionStatus, StudyStatus
from archetype.store.storage import (
    CompressionRunRecord,
    CompressionStepRecord,
    Store,
    StudyExistsError,
    StudyRecord,
    StudySummary,
    TrialRecord,
)

__all__ = [
    "DEFAULT_STORAGE",
    "STORAGE_ENV",
    "CompressionRunRecord",
    "CompressionStatus",
    "CompressionStepRecord",
    "Store",
    "StudyExistsError",
    "StudyRecord",
    "StudyStatus",
    "StudySummary",
    "TrialRecord",
    "open_engine",
    "resolve_url",
    "session_scope",
]
