"""Parse: query text (PostgreSQL SQL with the Qserv extensions, or ADQL) -> one read-only sqlglot expression.

The Qserv dialect's `qserv_areaspec_box/circle/ellipse/poly(...)` pseudo-predicates are kept as function calls
here; `validate` binds them to the director table's position columns.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from dms.query.errors import QueryRefused, QuerySyntaxError

READ_ONLY_ROOTS = (exp.Select, exp.SetOperation)
LANGUAGES = ("sql", "adql")


def parse(text: str, lang: str = "sql") -> exp.Query:
    """One SELECT (or set operation of SELECTs) or a clear error."""
    if lang not in LANGUAGES:
        raise QueryRefused(f"query language {lang!r} is not supported; use one of {', '.join(LANGUAGES)}")
    if not text or not text.strip():
        raise QuerySyntaxError("the query is empty")
    if lang == "adql":
        return _parse_adql(text)
    try:
        statements = [s for s in sqlglot.parse(text, read="postgres") if s is not None]
    except ParseError as exc:
        error = exc.errors[0] if exc.errors else {}
        raise QuerySyntaxError(
            str(error.get("description") or exc).splitlines()[0], error.get("line"), error.get("col")
        ) from None
    except TokenError as exc:
        raise QuerySyntaxError(str(exc).splitlines()[0]) from None
    return _single_query(statements)


def _parse_adql(text: str) -> exp.Query:
    try:
        from dms.query import adql
    except ImportError:  # pragma: no cover - the ADQL front end ships with the VO services
        raise QueryRefused("ADQL is not available in this installation; use --lang sql") from None
    try:
        expression = adql.parse(text)
    except QueryRefused:
        raise
    except Exception as exc:
        line = getattr(exc, "line", None)
        column = getattr(exc, "column", None)
        raise QuerySyntaxError(str(exc).splitlines()[0], line, column) from None
    return _single_query([expression])


def _single_query(statements: list[exp.Expression]) -> exp.Query:
    if len(statements) != 1:
        raise QueryRefused(f"give exactly one query; found {len(statements)} statements")
    statement = statements[0]
    if not isinstance(statement, READ_ONLY_ROOTS):
        kind = statement.key.upper()
        raise QueryRefused(f"only SELECT queries are allowed; this is a {kind} statement")
    for node in statement.walk():
        if isinstance(node, exp.Into):
            raise QueryRefused("SELECT ... INTO is not allowed: queries cannot create tables")
        if isinstance(node, exp.Lock):
            raise QueryRefused("locking clauses (FOR UPDATE/SHARE) are not allowed")
    assert isinstance(statement, exp.Query)
    return statement
