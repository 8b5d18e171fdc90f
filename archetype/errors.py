"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class ArchetypeError(Exception):
    """Bad input or an unusable resource; the message says what and where."""


class SpecError(ArchetypeError, ValueError):
    """A run spec, space file or CLI option fails validation."""


class StorageError(ArchetypeError):
    """The SQL store cannot be opened, written or read."""


class TypeCheckError(SpecError, TypeError):
    """An architecture is ill-typed: an operator cannot take the type its slot receives."""
