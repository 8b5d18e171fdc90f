"""The SQL store of studies, trials and metrics: one Store class, SQLite by default, migrated on open."""

from archetype.store.engine import (
    DEFAULT_STORAGE,
    STORAGE_ENV,
    UPGRADE_COMMAND,
    SchemaOutdatedError,
    head_revision,
    open_engine,
    resolve_url,
    session_scope,
)
from archetype.store.models import CompressionStatus, StudyStatus
from archetype.store.storage import (
    ArchOutline,
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
    operator_summary,
)

__all__ = [
    "DEFAULT_STORAGE",
    "STORAGE_ENV",
    "UPGRADE_COMMAND",
    "ArchOutline",
    "CompressionRunRecord",
    "CompressionStatus",
    "CompressionStepRecord",
    "LatencyRecord",
    "SchemaOutdatedError",
    "Store",
    "StudyExistsError",
    "StudyRecord",
    "StudyStatus",
    "StudySummary",
    "TrialOutcome",
    "TrialPage",
    "TrialRecord",
    "head_revision",
    "open_engine",
    "operator_summary",
    "resolve_url",
    "session_scope",
]
