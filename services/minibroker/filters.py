"""Filters in the style of Lasair: a SQL WHERE (and an optional SELECT list), checked and compiled by sqlglot.

A filter may use the alert's DiaSource (``diaSource.psfFlux``, or ``psfFlux`` alone), the current version of
its DiaObject (``diaObject.g_psfFluxMean``), the DiaObject's light-curve features (``features.amplitude``),
arithmetic, comparisons, a short list of scalar functions, and two of the mini-broker's own:

* ``in_watchlist('NAME')``: the alert lies within the radius of a position of the caller's watch list NAME;
* ``feature_distance(a, b, ...)``: the Euclidean distance (pgvector) between the DiaObject's feature vector
  and the one given (one number per feature, in the order of `FEATURES`).

Everything else is refused before anything runs, naming the offending table, column, function or construct:
subqueries, other tables and schemas, aggregates, casts, other users' watch lists (a list name is always
resolved among the owner's own: the owner is written into the compiled SQL, never taken from the filter).
The compiled query is built as a sqlglot tree; user text never reaches SQL except as checked nodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache

import sqlglot
from psycopg import sql
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from dms.services.apdb.tables import apdb_table
from dms.services.minibroker.errors import FilterError
from dms.services.minibroker.features_names import FEATURE_COLUMNS, FEATURES

DIALECT = "postgres"
MAX_TEXT = 4000
"""Longest WHERE or SELECT text accepted (Lasair's filters are a few lines)."""

ALLOWED_FUNCTIONS = frozenset(
    {
        "ABS", "SQRT", "LN", "LOG", "EXP", "POWER", "ROUND", "FLOOR", "CEIL", "SIGN", "GREATEST", "LEAST",
        "COALESCE", "SIN", "COS", "TAN", "ASIN", "ACOS", "ATAN", "ATAN2", "RADIANS", "DEGREES",
    }
)  # fmt: skip
OWN_FUNCTIONS = ("in_watchlist", "feature_distance")

_ALLOWED_NODES: tuple[type[exp.Expr], ...] = (
    exp.Column, exp.Identifier, exp.Literal, exp.Boolean, exp.Null, exp.And, exp.Or, exp.Not, exp.Paren,
    exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Is, exp.In, exp.Between, exp.Add, exp.Sub,
    exp.Mul, exp.Div, exp.Mod, exp.Neg, exp.Like, exp.ILike, exp.Case, exp.If, exp.Alias,
)  # fmt: skip
_SUBQUERY_NODES: tuple[type[exp.Expr], ...] = (
    exp.Select,
    exp.Subquery,
    exp.Exists,
    exp.Union,
    exp.With,
)


@dataclass(frozen=True)
class FilterTable:
    """A table a filter may name: how the filter spells it, its alias in the compiled query, its columns."""

    name: str
    alias: str
    columns: tuple[str, ...]


@cache
def filter_tables() -> dict[str, FilterTable]:
    """The tables of a filter by lower-case name, in the order unqualified columns are looked up."""
    tables = (
        FilterTable("diaSource", "s", tuple(apdb_table("DiaSource").columns)),
        FilterTable("diaObject", "o", tuple(apdb_table("DiaObject").columns)),
        FilterTable("features", "f", FEATURE_COLUMNS),
    )
    return {t.name.lower(): t for t in tables}


@dataclass
class CompiledFilter:
    """A checked filter: its condition and selected expressions as sqlglot trees over the aliases s, o, f."""

    where: exp.Expr
    select: list[exp.Expr] = field(default_factory=list)
    tables: set[str] = field(default_factory=set)  # aliases used: decides the joins
    columns: set[tuple[str, str]] = field(default_factory=set)  # (alias, column) read: the batch's columns
    watchlists: set[str] = field(default_factory=set)
    aggregate_sql: list[str] | None = None  # its part of the combined scan, generated once (`aggregates`)


def compile_filter(
    where_text: str,
    select_text: str = "",
    *,
    owner: str,
    watchlists: set[str] | None = None,
    has_vector: bool = True,
) -> CompiledFilter:
    """Check a filter and compile it for `owner`; FilterError names what is wrong and what is allowed."""
    compiled = CompiledFilter(where=exp.true())
    context = _Context(owner, watchlists, has_vector, compiled)
    compiled.where = context.rewrite(_parse_condition(where_text))
    for position, expression in enumerate(_parse_select(select_text), 1):
        name = expression.alias_or_name if isinstance(expression, exp.Alias | exp.Column) else ""
        body = expression.this if isinstance(expression, exp.Alias) else expression
        compiled.select.append(exp.alias_(context.rewrite(body), name or f"col{position}", quoted=True))
    return compiled


def _parse_condition(text: str) -> exp.Expr:
    text = _bounded(text, "WHERE")
    if not text.strip():
        raise FilterError("the filter's WHERE is empty (write a condition, e.g. diaSource.snr > 10)")
    try:
        parsed = sqlglot.parse(text, read=DIALECT)
    except (ParseError, TokenError) as exc:
        raise FilterError(f"syntax error in the filter's WHERE: {_first_error(exc)}") from None
    if len(parsed) != 1 or parsed[0] is None:
        raise FilterError("the filter's WHERE must be one condition (no ';')", offending=";")
    return parsed[0]


def _parse_select(text: str) -> list[exp.Expr]:
    text = _bounded(text, "SELECT")
    if not text.strip():
        return []
    try:
        parsed = sqlglot.parse("SELECT " + text, read=DIALECT)
    except (ParseError, TokenError) as exc:
        raise FilterError(f"syntax error in the filter's SELECT list: {_first_error(exc)}") from None
    select = parsed[0] if len(parsed) == 1 else None
    if not isinstance(select, exp.Select):
        raise FilterError("the filter's SELECT list must be expressions separated by commas (no ';')")
    extra = sorted(k for k, v in select.args.items() if v and k != "expressions")
    if extra:
        raise FilterError(
            f"the filter's SELECT list may hold only expressions, not {extra[0].upper()} (the mini-broker "
            "adds FROM and WHERE itself)",
            offending=extra[0].upper(),
        )
    return list(select.expressions)


def _bounded(text: str, part: str) -> str:
    if len(text) > MAX_TEXT:
        raise FilterError(f"the filter's {part} is {len(text)} characters long; at most {MAX_TEXT}")
    return text


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if errors:
        first = errors[0]
        return f"{first.get('description')} at line {first.get('line')}, column {first.get('col')}"
    return str(exc).splitlines()[0]


class _Context:
    """Checks each node of a filter and rewrites columns and the mini-broker's functions."""

    def __init__(
        self, owner: str, watchlists: set[str] | None, has_vector: bool, compiled: CompiledFilter
    ) -> None:
        self.owner = owner
        self.watchlists = watchlists
        self.has_vector = has_vector
        self.compiled = compiled

    def rewrite(self, tree: exp.Expr) -> exp.Expr:
        for node in tree.walk():
            self.check(node)
        return tree.transform(self.replace, copy=True)

    def check(self, node: exp.Expr) -> None:
        if isinstance(node, _SUBQUERY_NODES):
            raise FilterError(
                f"subqueries are not allowed in a filter (found {node.key.upper()}: "
                f"{node.sql(DIALECT)[:60]}); "
                "use diaSource, diaObject, features columns and in_watchlist('NAME')",
                offending=node.key.upper(),
            )
        if isinstance(node, _ALLOWED_NODES):
            pass
        elif isinstance(node, exp.Anonymous):
            if node.name.lower() not in OWN_FUNCTIONS:
                raise _bad_function(node.name)
        elif isinstance(node, exp.Func):
            if node.sql_name() not in ALLOWED_FUNCTIONS:
                raise _bad_function(node.sql_name())
        elif isinstance(node, exp.Table):
            raise FilterError(f"table {node.sql(DIALECT)} is not allowed in a filter", offending=node.name)
        else:
            raise FilterError(
                f"{node.key.upper()} is not allowed in a filter ({node.sql(DIALECT)[:60]})",
                offending=node.key.upper(),
            )
        if isinstance(node, exp.In) and node.args.get("query") is not None:
            raise FilterError("subqueries are not allowed in a filter", offending="IN (SELECT ...)")

    def replace(self, node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Column):
            return self.column(node)
        if isinstance(node, exp.Anonymous) and node.name.lower() == "in_watchlist":
            return self.in_watchlist(node)
        if isinstance(node, exp.Anonymous) and node.name.lower() == "feature_distance":
            return self.feature_distance(node)
        return node

    def column(self, node: exp.Column) -> exp.Expr:
        tables = filter_tables()
        if node.args.get("db") is not None or node.args.get("catalog") is not None:
            raise FilterError(
                f"{node.sql(DIALECT)}: only diaSource, diaObject and features may be named in a filter",
                offending=node.sql(DIALECT),
            )
        name = node.name
        if node.table:
            table = tables.get(node.table.lower())
            if table is None:
                raise FilterError(
                    f"table {node.table!r} is not allowed in a filter; "
                    "allowed: diaSource, diaObject, features",
                    offending=node.table,
                )
            candidates = [table]
        else:
            candidates = list(tables.values())
        for table in candidates:
            real = {c.lower(): c for c in table.columns}.get(name.lower())
            if real is not None:
                self.compiled.tables.add(table.alias)
                self.compiled.columns.add((table.alias, real))
                return exp.column(batch_column(table.alias, real), table="s", quoted=True)
        where = f"{candidates[0].name}" if node.table else "diaSource, diaObject or features"
        raise FilterError(f"unknown column {node.sql(DIALECT)!r}: not a column of {where}", offending=name)

    def in_watchlist(self, node: exp.Anonymous) -> exp.Expr:
        args = node.expressions
        if len(args) != 1 or not (isinstance(args[0], exp.Literal) and args[0].is_string):
            raise FilterError("in_watchlist takes one quoted watch-list name, e.g. in_watchlist('my_snae')")
        name = args[0].name
        if self.watchlists is not None and name not in self.watchlists:
            raise FilterError(f"you have no watch list {name!r}", offending=name)
        self.compiled.watchlists.add(name)
        self.compiled.tables.add("s")
        return _watch_template().transform(
            lambda n: _literal_for(n, {"__owner__": self.owner, "__list__": name}), copy=True
        )

    def feature_distance(self, node: exp.Anonymous) -> exp.Expr:
        if not self.has_vector:
            raise FilterError(
                "feature_distance needs pgvector, which this database server does not have",
                offending="feature_distance",
            )
        values = [_number(a) for a in node.expressions]
        if len(values) != len(FEATURES) or any(v is None for v in values):
            raise FilterError(
                f"feature_distance takes {len(FEATURES)} numbers, one per feature ({', '.join(FEATURES)})",
                offending="feature_distance",
            )
        text = "[" + ",".join(repr(float(v)) for v in values if v is not None) + "]"
        self.compiled.tables.add("f")
        self.compiled.columns.add(("f", "feature_vector"))
        vector = exp.cast(exp.Literal.string(text), exp.DataType.build("vector", dialect=DIALECT, udt=True))
        column = exp.column(batch_column("f", "feature_vector"), table="s", quoted=True)
        return exp.Anonymous(this="l2_distance", expressions=[column, vector])


def _bad_function(name: str) -> FilterError:
    allowed = ", ".join(sorted(ALLOWED_FUNCTIONS | {f.upper() for f in OWN_FUNCTIONS}))
    return FilterError(f"function {name} is not allowed in a filter; allowed: {allowed}", offending=name)


def _number(node: exp.Expr) -> float | None:
    negative = isinstance(node, exp.Neg)
    inner = node.this if negative else node
    if not (isinstance(inner, exp.Literal) and not inner.is_string):
        return None
    value = float(inner.this)
    if not math.isfinite(value):
        return None
    return -value if negative else value


def _literal_for(node: exp.Expr, values: dict[str, str]) -> exp.Expr:
    if isinstance(node, exp.Literal) and node.is_string and node.this in values:
        return exp.Literal.string(values[node.this])
    return node


_WATCH = (
    's."diaSourceId" IN (SELECT b."diaSourceId" FROM minibroker.watch AS w JOIN minibroker_batch AS b '
    'ON b."dec" BETWEEN w.dec - w.radius_arcsec / 3600.0 AND w.dec + w.radius_arcsec / 3600.0 '
    "WHERE w.owner = '__owner__' AND w.watchlist = '__list__' "
    'AND DEGREES(2 * ASIN(LEAST(1.0, SQRT(POWER(SIN(RADIANS(w.dec - b."dec") / 2), 2) '
    '+ COS(RADIANS(b."dec")) * COS(RADIANS(w.dec)) * POWER(SIN(RADIANS(w.ra - b."ra") / 2), 2))))) '
    "<= w.radius_arcsec / 3600.0)"
)
"""From each position of the list, the batch's alerts in its declination band (the batch table's index), then
the exact distance; the set is computed once per filter (a hashed subplan), not once per alert."""


@cache
def _watch_template() -> exp.Expr:
    """The condition `in_watchlist` becomes (a fixed text; owner and list are substituted as literals; it
    reads the batch table, BATCH_TABLE)."""
    return sqlglot.parse_one(_WATCH, read=DIALECT)


BATCH_TABLE = "minibroker_batch"
"""The temporary table of one visit's alerts the filters read (the alias `s` in compiled filters)."""

_PREFIX = {"o": "diaObject.", "f": "features."}


def batch_column(alias: str, name: str) -> str:
    """The column of the batch table holding column `name` of table `alias` (s: as is; o, f: prefixed)."""
    return _PREFIX.get(alias, "") + name


#: Columns every batch table has: the alert's ids and position (in_watchlist reads ra and dec).
BATCH_KEYS = (("s", "diaSourceId"), ("s", "diaObjectId"), ("s", "ra"), ("s", "dec"))

_JOINS = {
    "o": ('apdb."DiaObject"', 'o."diaObjectId" = s."diaObjectId" AND o."validityEndMjdTai" IS NULL'),
    "f": ("minibroker.feature", 'f.dia_object_id = s."diaObjectId"'),
}


def batch_table_sql(visit: int, columns: set[tuple[str, str]]) -> str:
    """CREATE TEMP TABLE of `visit`'s DiaSources with just the `columns` (alias, name) the filters read, those
    of the current DiaObject (o) and of the features (f) prefixed: every filter then scans this narrow one."""
    wanted = list(BATCH_KEYS) + sorted(set(columns) - set(BATCH_KEYS))
    query = exp.select(
        *(exp.alias_(exp.column(c, table=a, quoted=True), batch_column(a, c), quoted=True) for a, c in wanted)
    ).from_(exp.to_table('apdb."DiaSource"', dialect=DIALECT).as_("s"))
    for alias in sorted({a for a, _ in wanted} - {"s"}):
        target, on = _JOINS[alias]
        query = query.join(
            exp.to_table(target, dialect=DIALECT).as_(alias), on=on, join_type="left", dialect=DIALECT
        )
    visit_condition = exp.EQ(this=exp.column("visit", table="s"), expression=exp.Literal.number(int(visit)))
    create = exp.Create(
        this=exp.to_table(BATCH_TABLE),
        kind="TABLE",
        expression=query.where(visit_condition),
        properties=exp.Properties(expressions=[exp.TemporaryProperty()]),
    )
    return create.sql(dialect=DIALECT)


def batch_query(compiled: CompiledFilter) -> str:
    """The SQL that selects the alerts of the batch table that pass the filter."""
    query = exp.select(
        exp.alias_(exp.column("diaSourceId", table="s", quoted=True), "alert_id"),
        exp.alias_(exp.column("diaObjectId", table="s", quoted=True), "dia_object_id"),
        *compiled.select,
    ).from_(exp.to_table(BATCH_TABLE).as_("s"))
    return query.where(exp.paren(compiled.where.copy())).sql(dialect=DIALECT)


def aggregates(compiled: CompiledFilter) -> list[str]:
    """The SQL of one filter's part of the combined scan: the arrays of its matching alert ids, DiaObject ids
    and selected values, aligned (all aggregated in the same pass). Generated once per compiled filter."""
    if compiled.aggregate_sql is None:
        condition = exp.Where(this=exp.paren(compiled.where.copy()))
        values: list[exp.Expr] = [
            exp.column("diaSourceId", table="s", quoted=True),
            exp.column("diaObjectId", table="s", quoted=True),
            *(e.this if isinstance(e, exp.Alias) else e for e in compiled.select),
        ]
        compiled.aggregate_sql = [
            exp.Filter(this=exp.ArrayAgg(this=v.copy()), expression=condition.copy()).sql(dialect=DIALECT)
            for v in values
        ]
    return compiled.aggregate_sql


def combined_query(compiled: list[CompiledFilter]) -> sql.Composed:
    """One scan of the batch table evaluating every filter (`aggregates` of each, in order)."""
    parts = [sql.SQL(fragment) for one in compiled for fragment in aggregates(one)]
    return sql.SQL("SELECT {} FROM {} AS s").format(sql.SQL(", ").join(parts), sql.Identifier(BATCH_TABLE))
