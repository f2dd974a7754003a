"""Query errors as the query engine defines them (dms.query.errors), with a stand-in until it is merged.

The VO services catch these at their boundary and turn them into VOTable / UWS error documents.
"""

from __future__ import annotations

import re
from pathlib import Path

from dms.errors import DMSError

try:  # the query engine's hierarchy, when present (issue 4)
    from dms.query.errors import (  # type: ignore[import-not-found, unused-ignore]
        QueryCancelled,
        QueryError,
        QueryRefused,
        QuerySyntaxError,
        QueryTimeout,
    )
except ImportError:  # pragma: no cover - replaced at merge

    class QueryError(DMSError):  # type: ignore[no-redef]
        """A query could not be answered."""

    class QuerySyntaxError(QueryError):  # type: ignore[no-redef]
        """The query text is invalid."""

    class QueryRefused(QueryError):  # type: ignore[no-redef]
        """The query is valid but not allowed (DDL/DML, unknown or internal table, unsupported feature)."""

    class QueryTimeout(QueryError):  # type: ignore[no-redef]
        """The query ran longer than its time limit."""

    class QueryCancelled(QueryError):  # type: ignore[no-redef]
        """The query was cancelled (e.g. a UWS job aborted)."""


_SERVER_FILE = re.compile(r"(?:file://)?/[^\s\"']*\.(?:parquet|duckdb|fits|yaml|xml)\b")


def without_server_paths(message: str, data_dir: Path | None) -> str:
    """`message` without the server's paths (the data directory, data files), which the engine's errors may
    quote: clients learn what failed, not where the server keeps its data."""
    if data_dir is not None:
        for root in sorted({str(data_dir.resolve()), str(data_dir)}, key=len, reverse=True):
            message = message.replace(root, "<data directory>")
    return _SERVER_FILE.sub("<server file>", message)


class ServiceError(DMSError):
    """A request to a VO service has invalid parameters (HTTP 400 with a VOTable/UWS error document)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


__all__ = [
    "QueryCancelled",
    "QueryError",
    "QueryRefused",
    "QuerySyntaxError",
    "QueryTimeout",
    "ServiceError",
    "without_server_paths",
]
