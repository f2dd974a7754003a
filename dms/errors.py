"""The exceptions DMS raises for problems a user can fix.

Each carries a message that names the input and says what would be valid; the command line prints the
message alone (no traceback) and exits non-zero.
"""

from __future__ import annotations


class DMSError(Exception):
    """Base class of every error DMS reports to its users."""


class ConfigError(DMSError):
    """A setting, URL or configuration file is invalid."""


class DeploymentError(DMSError):
    """A deployment cannot be created, found, started or reached."""


class DeploymentExistsError(DeploymentError):
    """`dms init` was asked to create a deployment where one already exists."""


class SchemaVersionError(DMSError):
    """A database is at a schema version this DMS does not expect.

    Attributes name both versions so callers can tell an old database (run `dms db upgrade`) from one
    written by a newer DMS (upgrade the software).
    """

    def __init__(self, database: str, found: str | None, expected: str, message: str) -> None:
        super().__init__(message)
        self.database = database
        self.found = found
        self.expected = expected


class ShardError(DMSError):
    """A shard is misconfigured or unreachable."""
