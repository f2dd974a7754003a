"""Errors of the Alert Mini-Broker: each names the filter, column, function or watch list at fault."""

from __future__ import annotations

from dms.errors import DMSError


class MinibrokerError(DMSError):
    """A mini-broker request that cannot be served."""


class FilterError(MinibrokerError):
    """A filter refused when it is checked: a syntax error, or a table, column or function not allowed."""

    def __init__(self, message: str, *, offending: str | None = None) -> None:
        super().__init__(message)
        self.offending = offending


class NotYoursError(MinibrokerError):
    """A filter or watch list that is not the caller's (the message is the same whether it exists or not)."""
