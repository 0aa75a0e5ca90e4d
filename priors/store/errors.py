"""Errors of the prior store. All are ``ValueError``s whose message is one complete sentence, so the
CLI shows them as one line (``flows/cli_errors.py::clean_errors``)."""

from __future__ import annotations


class StoreError(ValueError):
    """Base class of every prior-store error."""


class RunNotFoundError(StoreError):
    """The run directory does not exist."""


class VersionNotFoundError(StoreError):
    """A requested version (or a kind within it) is not committed."""


class VersionExistsError(StoreError):
    """A version is already committed; versions are immutable (move it aside first)."""


class CorruptFileError(StoreError):
    """A store file is missing, truncated, altered or unparsable; the message names the file."""


class StoreLockedError(StoreError):
    """Another writer holds the run's lock; the message names its pid and host."""


class SchemaVersionError(StoreError):
    """A manifest or marker was written with a schema_version this joindet does not read."""
