"""Errors of the ADQL front end: a query that does not parse, or asks for something DMS cannot evaluate."""

from __future__ import annotations

from dms.errors import DMSError


class AdqlError(DMSError):
    """A problem with an ADQL query, located in its text where possible (1-based line and column)."""

    def __init__(
        self, message: str, line: int | None = None, column: int | None = None, *, token: str | None = None
    ) -> None:
        where = f"line {line}, column {column}: " if line is not None and column is not None else ""
        super().__init__(f"ADQL {where}{message}")
        self.message = message
        self.line = line
        self.column = column
        self.token = token
        """The word of the query the problem is about, used to locate it when the parser gave no position."""


class AdqlSyntaxError(AdqlError):
    """The text is not valid ADQL 2.1 (or uses a function, type or construct ADQL does not have)."""


class AdqlUnsupportedError(AdqlError):
    """Valid ADQL that DMS cannot evaluate (e.g. a reference frame other than ICRS)."""
