"""Parse: query text (PostgreSQL SQL with the Qserv extensions, or ADQL) -> one read-only sqlglot expression.

The Qserv dialect's `qserv_areaspec_box/circle/ellipse/poly(...)` pseudo-predicates are kept as function calls
here; `validate` binds them to the director table's position columns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from dms.query.errors import QueryRefused, QuerySyntaxError

UnitOf = Callable[[exp.Column], str | None]  # a column's unit, for ADQL's IN_UNIT

READ_ONLY_ROOTS = (exp.Select, exp.SetOperation)
# SQL beyond ADQL's functions: statistics (decomposed across chunks) and the window and ordered-set
# aggregates the engine refuses with a specific reason.
SQL_EXTRA_NODES: tuple[type[exp.Expression], ...] = (
    exp.Stddev,
    exp.StddevSamp,
    exp.StddevPop,
    exp.Variance,
    exp.VariancePop,
    exp.Window,
    exp.RowNumber,
    exp.PercentileCont,
    exp.PercentileDisc,
    exp.WithinGroup,
    exp.Median,
)
LANGUAGES = ("sql", "adql")
AREASPECS = frozenset(
    {"qserv_areaspec_box", "qserv_areaspec_circle", "qserv_areaspec_ellipse", "qserv_areaspec_poly"}
)


def parse(text: str, lang: str = "sql", *, unit_of: UnitOf | None = None) -> exp.Query:
    """One SELECT (or set operation of SELECTs) or a clear error; `unit_of` gives ADQL's IN_UNIT the unit
    of a column."""
    if lang not in LANGUAGES:
        raise QueryRefused(f"query language {lang!r} is not supported; use one of {', '.join(LANGUAGES)}")
    if not text or not text.strip():
        raise QuerySyntaxError("the query is empty")
    if lang == "adql":
        return _parse_adql(text, unit_of)
    try:
        statements = [s for s in sqlglot.parse(text, read="postgres") if s is not None]
    except ParseError as exc:
        error = exc.errors[0] if exc.errors else {}
        raise QuerySyntaxError(
            str(error.get("description") or exc).splitlines()[0], error.get("line"), error.get("col")
        ) from None
    except TokenError as exc:
        raise QuerySyntaxError(str(exc).splitlines()[0]) from None
    query = _single_query(statements)
    _check_functions(query)
    return query


def _check_functions(query: exp.Query) -> None:
    """Only ADQL's functions and DMS's SQL functions: server functions (pg_read_file, set_config, ...) and
    DuckDB's file readers are out of reach of user queries."""
    from dms.query.adql.functions import ALLOWED_NODES, UDF_NAMES

    allowed_names = UDF_NAMES | AREASPECS
    for node in query.find_all(exp.Func):
        if isinstance(node, (exp.Binary, exp.Unary, exp.Connector, *ALLOWED_NODES, *SQL_EXTRA_NODES)):
            continue
        name = node.name if isinstance(node, exp.Anonymous) else node.sql_name()
        if not (isinstance(node, exp.Anonymous) and name.lower() in allowed_names):
            raise QueryRefused(f"function {name} is not available in queries")


def _parse_adql(text: str, unit_of: UnitOf | None = None) -> exp.Query:
    try:
        from dms.query import adql
    except ImportError:  # pragma: no cover - the ADQL front end ships with the VO services
        raise QueryRefused("ADQL is not available in this installation; use --lang sql") from None
    try:
        expression = adql.parse(text, unit_of=unit_of)
    except adql.AdqlSyntaxError as exc:
        raise QuerySyntaxError(exc.message, exc.line, exc.column) from None
    except adql.AdqlError as exc:
        raise QueryRefused(str(exc).splitlines()[0]) from None
    return _single_query([expression])


def _single_query(statements: list[Any]) -> exp.Query:
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
