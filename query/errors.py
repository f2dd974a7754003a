"""Errors of the query engine: each says what is wrong with the query and, where it can, how to fix it."""

from __future__ import annotations

from dms.errors import DMSError


class QueryError(DMSError):
    """A query that could not be answered."""


class QuerySyntaxError(QueryError):
    """The query text does not parse; carries the position when known."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        where = f" (line {line}, column {column})" if line is not None else ""
        super().__init__(f"syntax error{where}: {message}")
        self.line = line
        self.column = column


class QueryRefused(QueryError):
    """A query the engine will not run: forbidden, unknown tables/columns, or not evaluable correctly."""


class QueryTimeout(QueryError):
    """The query ran longer than its timeout and was cancelled."""


class QueryCancelled(QueryError):
    """The query was cancelled."""
