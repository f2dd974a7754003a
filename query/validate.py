"""Validate: bind a parsed query's tables and columns to the schema (sqlglot's `qualify`), or refuse it.

Tables a query may name: catalog tables (partitioned or replicated), uploaded tables (`TAP_UPLOAD.name`),
and the public tables of the control database (ObsCore, TAP_SCHEMA). Everything else (the dms.* registry,
jobs, placement) is not reachable. Unquoted names match case-insensitively; bound columns get the catalog's
spelling, so shards with mixed-case column names (DP1's `objectId`) work on PostgreSQL too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pyarrow as pa
from sqlglot import exp
from sqlglot.errors import OptimizeError, SqlglotError
from sqlglot.optimizer.qualify import qualify
from sqlglot.schema import MappingSchema

from dms.query import qserv_sql
from dms.query.errors import QueryRefused
from dms.schema.catalog import SQL_TYPES, CatalogTable

SIMPLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
UPLOAD_SCHEMA = "tap_upload"
LOCAL_SCHEMA = "_local"  # results of subqueries and WITH queries evaluated first
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
            raise QueryRefused(f"table {table.db}.{table.name} is not a table that can be queried")
        table.set("db", exp.to_identifier(schema))
        table.set("this", exp.to_identifier(name))


def _bind_areaspec(query: exp.Query, catalog: Catalog) -> None:
    """`qserv_areaspec_*(...)` restricts the query's director table: bind it to that table's position."""
    for call in list(query.find_all(exp.Anonymous)):
        target = AREASPEC_FUNCTIONS.get(call.name.lower())
        if target is None:
            continue
        select = call.find_ancestor(exp.Select)
        directors = [
            t
            for t in (select.find_all(exp.Table) if select else [])
            if (t.db.lower(), t.name.lower()) in catalog.tables
            and catalog.tables[(t.db.lower(), t.name.lower())].role == "director"
            and t.find_ancestor(exp.Select) is select
        ]
        if len(directors) != 1:
            raise QueryRefused(f"{call.name} needs exactly one director table in its FROM clause")
        info = catalog.tables[(directors[0].db.lower(), directors[0].name.lower())]
        alias = directors[0].alias_or_name
        args = [
            exp.column(info.ra_column or "", alias),
            exp.column(info.dec_column or "", alias),
            *call.expressions,
        ]
        call.replace(
            exp.EQ(this=exp.Anonymous(this=target, expressions=args), expression=exp.Literal.number(1))
        )


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


def _canonical_columns(query: exp.Query, aliases: dict[str, TableRef]) -> None:
    """Bound columns of catalog tables get the catalog's spelling (and so do their default output names)."""
    for column in query.find_all(exp.Column):
        ref = aliases.get(column.table)
        if ref is None or ref.catalog is None:
            continue
        if column.name.lower() in qserv_sql.virtual_columns(ref.catalog):
            continue  # bound to the row's chunk after this
        canonical = ref.catalog.column(column.name).name
        if canonical != column.name:
            parent = column.parent
            if (
                isinstance(parent, exp.Alias)
                and parent.alias == column.name
                and parent.parent_select is not None
            ):
                parent.set("alias", exp.to_identifier(canonical, quoted=True))
            column.set("this", exp.to_identifier(canonical, quoted=True))
