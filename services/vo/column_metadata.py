"""TAP_SCHEMA metadata (unit, UCD, description, ...) for each column of a query's result, taken from the
table the column comes from (:mod:`dms.query.lineage`), never from another table's column of the same name."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pyarrow as pa
import sqlglot
from sqlglot import exp

from dms.query.adql import parse as parse_adql
from dms.query.lineage import Lookup, Origin, Source, column_origin, output_origins
from dms.services.vo.tap_schema import Column, Table

UPLOAD_SCHEMA = "tap_upload"


def table_lookup(tables: list[Table], uploads: Mapping[str, pa.Table] | None = None) -> Lookup:
    """Names as TAP accepts them: ``schema.table`` (any case), a bare name that one schema has, or
    ``TAP_UPLOAD.name`` (an upload: known columns, no metadata)."""
    qualified = {t.name.lower(): t for t in tables}
    bare: dict[str, list[Table]] = {}
    for table in tables:
        bare.setdefault(table.name.lower().split(".", 1)[-1], []).append(table)
    by_upload = {name.lower(): table for name, table in (uploads or {}).items()}

    def lookup(schema: str | None, name: str) -> Source | None:
        if schema is not None and schema.lower() == UPLOAD_SCHEMA:
            upload = by_upload.get(name.lower())
            return None if upload is None else Source(None, upload.column_names)
        if schema is not None:
            found = qualified.get(f"{schema}.{name}".lower())
        else:
            matches = bare.get(name.lower(), [])
            found = matches[0] if len(matches) == 1 else None
        return None if found is None else Source(found.name, [c.name for c in found.columns])

    return lookup


def column_of(tables: list[Table], origin: Origin) -> Column | None:
    table = next((t for t in tables if t.name == origin.table), None)
    if table is None:
        return None
    return next((c for c in table.columns if c.name == origin.column), None)


def unit_resolver(
    tables: list[Table], uploads: Mapping[str, pa.Table] | None = None
) -> Callable[[exp.Column], str | None]:
    """IN_UNIT's unit of a column reference: the unit of the column of the table it names."""
    lookup = table_lookup(tables, uploads)

    def unit_of(column: exp.Column) -> str | None:
        origin = column_origin(column, lookup)
        found = column_of(tables, origin) if origin is not None else None
        return found.unit if found is not None and found.unit else None

    return unit_of


def parse_query(
    query: str, lang: str, tables: list[Table], uploads: Mapping[str, pa.Table] | None
) -> exp.Expression:
    """The query's tree as the services read it (ADQL lowered, with units resolved per table)."""
    if lang.lower() == "adql":
        return parse_adql(query, unit_of=unit_resolver(tables, uploads))
    tree = sqlglot.parse_one(query, read="postgres")
    return tree  # type: ignore[return-value]


def result_metadata(
    tables: list[Table],
    query: str,
    lang: str,
    result: pa.Table,
    uploads: Mapping[str, pa.Table] | None = None,
) -> dict[str, Column]:
    """Metadata by lower-case result column name, for the columns that are a published table's column;
    expressions, aggregates and upload columns get none. Empty when the outputs cannot be matched."""
    try:
        tree = parse_query(query, lang, tables, uploads)
    except Exception:  # the query already ran: a tree this cannot read only means no borrowed metadata
        return {}
    origins = output_origins(tree, table_lookup(tables, uploads))
    if origins is None or len(origins) != result.num_columns:
        return {}
    origins = _in_result_order(origins, result.column_names)
    metadata: dict[str, Column] = {}
    for name, origin in zip(result.column_names, origins, strict=True):
        column = column_of(tables, origin) if origin is not None else None
        if column is not None:
            metadata.setdefault(name.lower(), column)
    return metadata


def _in_result_order(origins: list[Origin | None], names: list[str]) -> list[Origin | None]:
    """`SELECT *` expands in TAP_SCHEMA's column order, the database answers in its own: when the result's
    names are exactly the origins' column names in another order (all distinct), match them by name."""
    wanted = [n.lower() for n in names]
    if any(o is None for o in origins):
        return origins
    given = [o.column.lower() for o in origins if o is not None]
    if given == wanted or len(set(wanted)) != len(wanted) or sorted(given) != sorted(wanted):
        return origins
    by_name = {o.column.lower(): o for o in origins if o is not None}
    return [by_name[n] for n in wanted]
