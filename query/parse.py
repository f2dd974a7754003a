"""Parse: query text (PostgreSQL SQL with the Qserv extensions, or ADQL) -> one read-only sqlglot expression.

The Qserv dialect's `qserv_areaspec_box/circle/ellipse/poly(...)` pseudo-predicates are kept as function calls
here; `validate` binds them to the director table's position columns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from dms.query import qserv_sql
from dms.query.errors import QueryRefused, QuerySyntaxError
from dms.query.limits import check_depth, check_nesting, too_complex

UnitOf = Callable[[exp.Column], str | None]  # a column's unit, for ADQL's IN_UNIT
RegionOf = Callable[[exp.Column], Literal["region", "text"] | None]  # dms.query.adql.geometry.RegionOf

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
LANGUAGES = ("sql", "adql", "qserv")
READ_DIALECTS = {"sql": "postgres", "qserv": "mysql"}  # sqlglot dialect each SQL language is read with
AREASPECS = frozenset(
    {"qserv_areaspec_box", "qserv_areaspec_circle", "qserv_areaspec_ellipse", "qserv_areaspec_poly"}
)


def parse(
    text: str, lang: str = "sql", *, unit_of: UnitOf | None = None, region_of: RegionOf | None = None
) -> exp.Query:
    """One SELECT (or set operation of SELECTs) or a clear error; `unit_of` gives ADQL's IN_UNIT the unit
    of a column, `region_of` says which columns ADQL's geometry functions take as regions; each WITH query
    gets a name of its own (see `scope_ctes`)."""
    if lang not in LANGUAGES:
        raise QueryRefused(f"query language {lang!r} is not supported; use one of {', '.join(LANGUAGES)}")
    if not text or not text.strip():
        raise QuerySyntaxError("the query is empty")
    try:
        query = (
            _parse_adql(text, unit_of, region_of) if lang == "adql" else _parse_sql(text, READ_DIALECTS[lang])
        )
    except RecursionError as exc:  # the limits below should have caught it
        raise too_complex(exc) from None
    check_depth(query)
    scope_ctes(query)
    return query


def _parse_sql(text: str, dialect: str = "postgres") -> exp.Query:
    check_nesting(text, dialect)
    try:
        statements = [s for s in sqlglot.parse(text, read=dialect) if s is not None]
    except ParseError as exc:
        error = exc.errors[0] if exc.errors else {}
        raise QuerySyntaxError(
            _syntax_message(error, exc, dialect), error.get("line"), error.get("col")
        ) from None
    except TokenError as exc:
        raise QuerySyntaxError(str(exc).splitlines()[0]) from None
    query = _single_query(statements, text)
    check_depth(query)
    _check_functions(query)
    if dialect == "mysql":
        qserv_sql.prepare(query)
    else:
        qserv_sql.strip_decimal_div(query)
    qserv_sql.name_outputs(query, text, dialect)
    return query


def _syntax_message(error: dict[str, Any], exc: ParseError, dialect: str) -> str:
    """The parser's description, with the parser's own wording ("Unexpected token", "Invalid expression")
    replaced by where the query stops being valid SQL of its language."""
    description = str(error.get("description") or exc).splitlines()[0]
    if dialect != "mysql":
        return description
    near = str(error.get("highlight") or "").strip()
    language = "MySQL/Qserv SQL"
    return (
        f"the query is not valid {language} near {near!r}" if near else f"the query is not valid {language}"
    )


def cte_for(table: exp.Table) -> exp.CTE | None:
    """The WITH query an unqualified table name refers to in its scope, if any.

    A WITH query is visible in the body of the query that defines it and in the WITH queries after it,
    never outside (a name defined inside a subquery does not cover a table of the same name beside it).
    The nearest definition wins."""
    if table.db or table.catalog:
        return None
    name = table.name.lower()
    child: exp.Expr = table
    node = table.parent
    while node is not None:
        if isinstance(node, exp.With):
            position = next(i for i, cte in enumerate(node.expressions) if cte is child)
            for cte in reversed(node.expressions[:position]):
                if cte.alias_or_name.lower() == name:
                    return cte
        else:
            with_ = node.args.get("with_")
            if isinstance(with_, exp.With) and child is not with_:
                for cte in reversed(with_.expressions):
                    if cte.alias_or_name.lower() == name:
                        return cte
        child, node = node, node.parent
    return None


def scope_ctes(query: exp.Query) -> None:
    """Rename every WITH query to a unique name (`_cte0`, ...) and each table that refers to it in its
    scope, keeping the name the query used as the table's alias: WITH queries are evaluated first and their
    results named globally, so two WITH queries of one name, or a WITH name beside a table of that name,
    must not be confused. Refuses WITH RECURSIVE."""
    for with_ in query.find_all(exp.With):
        if with_.args.get("recursive"):
            raise QueryRefused("recursive WITH queries (WITH RECURSIVE) are not supported")
    targets = [(table, cte_for(table)) for table in query.find_all(exp.Table)]
    names = {id(cte): f"_cte{i}" for i, cte in enumerate(query.find_all(exp.CTE))}
    for table, cte in targets:
        if cte is None:
            continue
        if not table.alias:
            table.set("alias", exp.TableAlias(this=table.this.copy()))
        table.set("this", exp.to_identifier(names[id(cte)]))
    for cte in query.find_all(exp.CTE):
        alias = cte.args.get("alias")
        if isinstance(alias, exp.TableAlias):
            _name_columns(cte, alias)
            alias.set("this", exp.to_identifier(names[id(cte)]))


def _name_columns(cte: exp.CTE, alias: exp.TableAlias) -> None:
    """`WITH c(x, y) AS (SELECT ...)`: the column list becomes the output names of the WITH query's
    (first) SELECT, which is what the engine evaluates."""
    columns = alias.columns
    if not columns:
        return
    body = cte.this
    while isinstance(body, exp.SetOperation):
        body = body.left
    if not isinstance(body, exp.Select):
        raise QueryRefused(f"WITH {cte.alias_or_name}(...): the column list needs a SELECT")
    projections = body.expressions
    if len(projections) != len(columns) or any(isinstance(p, exp.Star) or p.is_star for p in projections):
        raise QueryRefused(
            f"WITH {cte.alias_or_name}(...) names {len(columns)} columns; its SELECT must list exactly "
            f"that many (no *)"
        )
    for projection, column in zip(projections, columns, strict=True):
        projection.replace(exp.alias_(projection.unalias().copy(), column.copy()))
    alias.set("columns", None)


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


def _parse_adql(text: str, unit_of: UnitOf | None = None, region_of: RegionOf | None = None) -> exp.Query:
    try:
        from dms.query import adql
    except ImportError:  # pragma: no cover - the ADQL front end ships with the VO services
        raise QueryRefused("ADQL is not available in this installation; use --lang sql") from None
    try:
        expression = adql.parse(text, unit_of=unit_of, region_of=region_of)
    except adql.AdqlSyntaxError as exc:
        raise QuerySyntaxError(exc.message, exc.line, exc.column) from None
    except adql.AdqlError as exc:
        raise QueryRefused(str(exc).splitlines()[0]) from None
    return _single_query([expression], text)


def _single_query(statements: list[Any], text: str) -> exp.Query:
    if len(statements) != 1:
        raise QueryRefused(f"give exactly one query; found {len(statements)} statements")
    statement = statements[0]
    if not isinstance(statement, READ_ONLY_ROOTS):
        word = text.split(None, 1)[0].upper()
        raise QueryRefused(f"only SELECT queries are allowed; this statement begins with {word}")
    for node in statement.walk():
        if isinstance(node, exp.Into):
            raise QueryRefused("SELECT ... INTO is not allowed: queries cannot create tables")
        if isinstance(node, exp.Lock):
            raise QueryRefused("locking clauses (FOR UPDATE/SHARE) are not allowed")
    assert isinstance(statement, exp.Query)
    return statement
