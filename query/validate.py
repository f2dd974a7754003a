"""Validate: bind a parsed query's tables and columns to the schema (sqlglot's `qualify`), or refuse it.

Tables a query may name: catalog tables (partitioned or replicated), uploaded tables (`TAP_UPLOAD.name`),
and the public tables of the control database (ObsCore, TAP_SCHEMA). Everything else (the dms.* registry,
jobs, placement) is not reachable. Unquoted names match case-insensitively; bound columns get the catalog's
spelling, so shards with mixed-case column names (DP1's `objectId`) work on PostgreSQL too.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa
from sqlglot import exp
from sqlglot.errors import OptimizeError, SqlglotError
from sqlglot.optimizer.qualify import qualify
from sqlglot.schema import MappingSchema

from dms.query import qserv_sql
from dms.query.adql import frames
from dms.query.adql.bitwise import check_column_types
from dms.query.adql.errors import AdqlSyntaxError
from dms.query.errors import QueryRefused, QuerySyntaxError
from dms.schema.catalog import LEGACY_SCHEMA, LEGACY_WARNING, SQL_TYPES, CatalogTable, legacy_name

SIMPLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
UPLOAD_SCHEMA = "tap_upload"
LOCAL_SCHEMA = "_local"  # results of subqueries and WITH queries evaluated first
REGION_TESTS = frozenset(
    {"scisql_s2ptincircle", "scisql_s2ptinbox", "scisql_s2ptinellipse", "scisql_s2ptincpoly"}
)
AREASPEC_FUNCTIONS = {
    "qserv_areaspec_box": "scisql_s2PtInBox",
    "qserv_areaspec_circle": "scisql_s2PtInCircle",
    "qserv_areaspec_ellipse": "scisql_s2PtInEllipse",
    "qserv_areaspec_poly": "scisql_s2PtInCPoly",
}


@dataclass(frozen=True)
class TableRef:
    """What a table alias in the query stands for."""

    kind: str  # catalog | upload | control | materialized
    name: str
    catalog: CatalogTable | None = None


@dataclass
class Catalog:
    """Everything a query may name, by lower-case schema and table name."""

    tables: dict[tuple[str, str], CatalogTable] = field(default_factory=dict)
    control: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    uploads: dict[str, pa.Table] = field(default_factory=dict)
    materialized: dict[str, pa.Table] = field(default_factory=dict)
    virtual_columns: bool = False  # the Qserv dialect's chunkId/subChunkId columns of partitioned tables

    def mapping_schema(self) -> MappingSchema:
        mapping: dict[str, dict[str, dict[str, str]]] = {}
        for (schema, name), table in self.tables.items():
            mapping.setdefault(schema, {})[name] = {
                c.name.lower(): SQL_TYPES[c.datatype] for c in table.columns
            }
            if self.virtual_columns:
                mapping[schema][name].update(qserv_sql.virtual_columns(table))
        for (schema, name), columns in self.control.items():
            mapping.setdefault(schema, {})[name] = {c.lower(): t for c, t in columns.items()}
        for name, data in self.uploads.items():
            mapping.setdefault(UPLOAD_SCHEMA, {})[name.lower()] = {
                c.lower(): "text" for c in data.column_names
            }
        for name, data in self.materialized.items():
            mapping.setdefault(LOCAL_SCHEMA, {})[name.lower()] = {
                c.lower(): "text" for c in data.column_names
            }
        return MappingSchema(dict(mapping), dialect="postgres")  # type: ignore[arg-type, unused-ignore]


def bind(query: exp.Query, catalog: Catalog) -> tuple[exp.Query, dict[str, TableRef]]:
    """The qualified query and what each table alias refers to."""
    query = query.copy()
    _fold_quoted_columns(query)
    _qualify_table_names(query, catalog)
    _bind_areaspec(query, catalog)
    _portable_semantics(query)
    try:
        bound = qualify(
            query,
            schema=catalog.mapping_schema(),
            dialect="postgres",
            db="catalog",
            expand_stars=True,
            validate_qualify_columns=True,
        )
    except OptimizeError as exc:
        raise QueryRefused(
            str(exc).splitlines()[0].replace("could not be resolved", "is not known")
        ) from None
    except SqlglotError as exc:
        raise QueryRefused(str(exc).splitlines()[0]) from None
    assert isinstance(bound, exp.Query)
    aliases = _aliases(bound, catalog)
    _canonical_columns(bound, aliases)
    if catalog.virtual_columns:
        qserv_sql.bind_virtual_columns(bound, {a: r.catalog for a, r in aliases.items() if r.catalog})
    return bound, aliases


def _fold_quoted_columns(query: exp.Query) -> None:
    """Catalog columns match case-insensitively, quoted or not (DP1's "objectId" and objectid are one column);
    their catalog spelling is restored after binding."""
    for column in query.find_all(exp.Column):
        identifier = column.this
        simple = isinstance(identifier, exp.Identifier) and SIMPLE_NAME.match(identifier.name)
        if simple and identifier.quoted:
            identifier.set("quoted", False)


def _qualify_table_names(query: exp.Query, catalog: Catalog) -> None:
    """Give every table its schema (unqualified names are looked up), or refuse unknown/internal tables."""
    cte_names = {cte.alias_or_name.lower() for cte in query.find_all(exp.CTE)}
    for table in list(query.find_all(exp.Table)):
        if isinstance(table.this, exp.Func) or not table.name:
            raise QueryRefused("table functions are not allowed in queries")
        name = table.name.lower()
        schema = table.db.lower() if table.db else None
        if table.catalog:
            raise QueryRefused(f"table {table.sql()} names a database; use SCHEMA.TABLE")
        if schema is None and (name in cte_names or name in catalog.materialized):
            schema = LOCAL_SCHEMA
        elif schema == LOCAL_SCHEMA:  # results of the query's own subqueries, named by the engine
            if name not in catalog.materialized:
                raise QueryRefused(f"table {table.db}.{table.name} is not a table that can be queried")
        elif schema is None:
            matches = [s for (s, n) in (*catalog.tables, *catalog.control) if n == name]
            if len(matches) != 1:
                known = ", ".join(sorted(f"{s}.{n}" for (s, n) in catalog.tables))
                problem = "is ambiguous; qualify it" if matches else "is not a table that can be queried"
                raise QueryRefused(f"table {table.name!r} {problem} (catalog tables: {known or 'none'})")
            schema = matches[0]
        elif schema == UPLOAD_SCHEMA:
            if name not in {u.lower() for u in catalog.uploads}:
                raise QueryRefused(f"no uploaded table {table.name!r} (uploaded: {sorted(catalog.uploads)})")
        elif (schema, name) not in catalog.tables and (schema, name) not in catalog.control:
            schema = _renamed_schema(schema, name, catalog)
            if schema is None:
                raise QueryRefused(f"table {table.db}.{table.name} is not a table that can be queried")
        table.set("db", exp.to_identifier(schema))
        table.set("this", exp.to_identifier(name))


def _renamed_schema(schema: str, name: str, catalog: Catalog) -> str | None:
    """The schema a deprecated spelling now means (``catalog.x`` is ``cat.x`` since schema 1.18.0), said
    in the result as a warning; None when `schema.name` means nothing."""
    renamed = legacy_name(schema, name)
    if renamed is None:
        return None
    new_schema, _ = renamed.split(".")
    if (new_schema, name) not in catalog.tables:
        return None
    frames.note(
        LEGACY_WARNING.format(old=f"{schema}.{name}", new=renamed, legacy=LEGACY_SCHEMA), warning=True
    )
    return new_schema


def _bind_areaspec(query: exp.Query, catalog: Catalog) -> None:
    """`qserv_areaspec_*(...)` restricts a director table of its SELECT: bind it to that table's position.

    Qserv accepts the restrictor alone or compared with 1 (`qserv_areaspec_box(...) = 1`, `1 = ...`); both
    become one `scisql_s2PtIn*(ra, dec, ...) = 1`, which `restrict` turns into chunk ranges. In a join (a
    near-neighbour self-join, a director-child join, a crossmatch of two directors) it restricts the first
    director table of the FROM clause, as Qserv does."""
    for call in list(query.find_all(exp.Anonymous)):
        target = AREASPEC_FUNCTIONS.get(call.name.lower())
        if target is None:
            continue
        select = call.find_ancestor(exp.Select)
        director = _first_director(select, catalog) if select is not None else None
        if director is None:
            raise QueryRefused(f"{call.name} needs a director table in the FROM clause of its SELECT")
        info = catalog.tables[(director.db.lower(), director.name.lower())]
        alias = director.alias_or_name
        args = [
            exp.column(info.ra_column or "", alias),
            exp.column(info.dec_column or "", alias),
            *call.expressions,
        ]
        test = exp.EQ(this=exp.Anonymous(this=target, expressions=args), expression=exp.Literal.number(1))
        parent = call.parent
        if isinstance(parent, exp.EQ) and _is_one(parent.expression if parent.this is call else parent.this):
            parent.replace(test)
        elif isinstance(parent, exp.Predicate | exp.Binary) and not isinstance(parent, exp.Connector):
            raise QueryRefused(
                f"{call.name}(...) is a restrictor: use it alone or as {call.name}(...) = 1, "
                f"not in {parent.sql('postgres')}"
            )
        else:
            call.replace(test)


def _is_one(node: exp.Expression) -> bool:
    return isinstance(node, exp.Literal) and not node.is_string and node.this.strip() in ("1", "1.0")


def _first_director(select: exp.Select, catalog: Catalog) -> exp.Table | None:
    """The first director table named in the SELECT's own FROM clause and joins."""
    sources = [select.args.get("from_"), *(select.args.get("joins") or [])]
    for source in sources:
        table = source.this if source is not None else None
        if not isinstance(table, exp.Table):
            continue
        info = catalog.tables.get((table.db.lower(), table.name.lower()))
        if info is not None and info.role == "director":
            return table
    return None


def _portable_semantics(query: exp.Query) -> None:
    """Spell what PostgreSQL and DuckDB shards (and the DuckDB merge) evaluate differently in functions that
    mean the same on both, so one query has one answer on every backend:

    - a region test used as a condition (`WHERE scisql_s2PtInBox(...)`, the Qserv idiom; the functions
      return 1 or 0) becomes `... = 1`, which PostgreSQL accepts and `restrict` turns into chunk ranges;
    - `a % b` and `MOD(a, b)` become `adql_mod(a, b)` (PostgreSQL has no `%` for double precision); the
      result has the sign of `a`, as in MySQL, PostgreSQL and C's fmod;
    - `ROUND(x, n)` becomes `adql_round(x, n)` (PostgreSQL has no `round(double precision, integer)`),
      rounding half away from zero on every backend."""
    for node in list(query.find_all(exp.Anonymous, exp.Mod, exp.Round)):
        if isinstance(node, exp.Anonymous):
            if node.name.lower() in REGION_TESTS and _is_condition(node):
                node.replace(exp.EQ(this=node.copy(), expression=exp.Literal.number(1)))
        elif isinstance(node, exp.Mod):
            node.replace(exp.Anonymous(this="adql_mod", expressions=[node.this, node.expression]))
        elif node.args.get("decimals") is not None:
            node.replace(exp.Anonymous(this="adql_round", expressions=[node.this, node.args["decimals"]]))


def _is_condition(node: exp.Expression) -> bool:
    """Whether `node` stands where a boolean is needed (WHERE, HAVING, ON, AND/OR/NOT, CASE WHEN)."""
    parent = node.parent
    while isinstance(parent, exp.Paren):
        node, parent = parent, parent.parent
    if isinstance(parent, exp.Where | exp.Having | exp.Connector | exp.Not):
        return True
    if isinstance(parent, exp.Join):
        return parent.args.get("on") is node
    return isinstance(parent, exp.If) and parent.this is node


def _aliases(query: exp.Query, catalog: Catalog) -> dict[str, TableRef]:
    refs: dict[str, TableRef] = {}
    for table in query.find_all(exp.Table):
        key = (table.db.lower(), table.name.lower())
        alias = table.alias_or_name
        if key in catalog.tables:
            refs[alias] = TableRef("catalog", f"{key[0]}.{key[1]}", catalog.tables[key])
        elif key[0] == UPLOAD_SCHEMA:
            refs[alias] = TableRef("upload", key[1])
        elif key in catalog.control:
            refs[alias] = TableRef("control", f"{key[0]}.{key[1]}")
        elif key[0] == LOCAL_SCHEMA:
            refs[alias] = TableRef("materialized", key[1])
    return refs


def column_types(aliases: dict[str, TableRef], catalog: Catalog) -> Callable[[exp.Column], str | None]:
    """The SQL type of a bound column (lower case), None where the table's types are not known."""

    def type_of(column: exp.Column) -> str | None:
        ref = aliases.get(column.table)
        if ref is None:
            return None
        if ref.catalog is not None:
            matches = [c for c in ref.catalog.columns if c.name.lower() == column.name.lower()]
            return SQL_TYPES.get(matches[0].datatype) if matches else None
        if ref.kind == "control":
            schema, _, name = ref.name.partition(".")
            return {c.lower(): t for c, t in catalog.control[(schema, name)].items()}.get(column.name.lower())
        return None

    return type_of


def check_adql_types(query: exp.Query, aliases: dict[str, TableRef], catalog: Catalog) -> None:
    """What ADQL needs of its operands' types once columns are bound: integers for the bitwise operators."""
    try:
        check_column_types(query, column_types(aliases, catalog))
    except AdqlSyntaxError as exc:
        raise QuerySyntaxError(exc.message, exc.line, exc.column) from None


def _canonical_columns(query: exp.Query, aliases: dict[str, TableRef]) -> None:
    """Bound columns of catalog tables get the catalog's spelling (and so do their default output names), so
    every shard dialect quotes the real name (DP1's `objectId`, PT1.2's `decl_PS`): PostgreSQL folds unquoted
    names to lower case, DuckDB does not care. References to a renamed output name (ORDER BY, GROUP BY or
    HAVING naming the projection, which binding spelled in lower case) follow it."""
    renamed: dict[tuple[int, str], exp.Identifier] = {}
    for column in list(query.find_all(exp.Column)):
        ref = aliases.get(column.table)
        if ref is None or ref.catalog is None:
            continue
        if column.name.lower() in qserv_sql.virtual_columns(ref.catalog):
            continue  # bound to the row's chunk after this
        canonical = ref.catalog.column(column.name).name
        if canonical != column.name:
            parent = column.parent
            select = parent.parent_select if parent is not None else None
            if isinstance(parent, exp.Alias) and parent.alias == column.name and select is not None:
                identifier = exp.to_identifier(canonical, quoted=True)
                parent.set("alias", identifier)
                renamed[(id(select), column.name)] = identifier
            column.set("this", exp.to_identifier(canonical, quoted=True))
    if not renamed:
        return
    for column in list(query.find_all(exp.Column)):
        select = column.parent_select
        target = renamed.get((id(select), column.name)) if not column.table and select is not None else None
        if target is not None and column.find_ancestor(exp.Order, exp.Group, exp.Having) is not None:
            column.set("this", target.copy())
