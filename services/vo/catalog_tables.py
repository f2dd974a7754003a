"""Catalog tables (partitioned and replicated, loaded with `dms load`) described in TAP_SCHEMA, so TAP's
/tables, SCS and TOPCAT see them; their queries run on the distributed query engine."""

from __future__ import annotations

import sqlalchemy as sa

from dms.schema.catalog import CatalogTable, list_tables

# Arrow type of a catalog column -> (TAP datatype, arraysize, xtype)
_TAP_TYPES: dict[str, tuple[str, str | None, str | None]] = {
    "bool": ("boolean", None, None),
    "int8": ("short", None, None),
    "int16": ("short", None, None),
    "int32": ("int", None, None),
    "int64": ("long", None, None),
    "float": ("float", None, None),
    "double": ("double", None, None),
    "string": ("char", "*", None),
    "timestamp[us]": ("char", "*", "timestamp"),
    "timestamp[us, tz=UTC]": ("char", "*", "timestamp"),
    "date32[day]": ("char", "*", "timestamp"),
    "binary": ("unsignedByte", "*", None),
    "list<double>": ("double", "*", None),
    "list<int64>": ("long", "*", None),
}


def publish(conn: sa.Connection, forget: list[str] | None = None) -> int:
    """Rewrite the TAP_SCHEMA rows of every catalog schema, and of the `forget` schemas (whose tables may all
    have been dropped), in the caller's transaction; returns the number of tables described. Does nothing
    where TAP_SCHEMA does not exist."""
    if conn.execute(sa.text("SELECT to_regclass('tap_schema.tables')")).scalar_one() is None:
        return 0
    tables = list_tables(conn)
    schemas = sorted({t.schema_name for t in tables})
    _forget(conn, sorted(set(schemas) | set(forget or [])))
    start = conn.execute(
        sa.text("SELECT coalesce(max(schema_index), 0) FROM tap_schema.schemas")
    ).scalar_one()
    for index, schema in enumerate(schemas, start=start + 1):
        conn.execute(
            sa.text(
                "INSERT INTO tap_schema.schemas (schema_name, description, schema_index) VALUES (:s, :d, :i)"
            ),
            {"s": schema, "d": f"Catalog tables in {schema}, partitioned on HEALPix (dms load)", "i": index},
        )
    for index, table in enumerate(tables):
        _describe(conn, table, index)
    return len(tables)


def _forget(conn: sa.Connection, schemas: list[str]) -> None:
    tables = "SELECT table_name FROM tap_schema.tables WHERE schema_name = ANY(:s)"
    keys = f"SELECT key_id FROM tap_schema.keys WHERE from_table IN ({tables}) OR target_table IN ({tables})"
    for statement in (
        f"DELETE FROM tap_schema.key_columns WHERE key_id IN ({keys})",
        f"DELETE FROM tap_schema.keys WHERE key_id IN ({keys})",
        f"DELETE FROM tap_schema.columns WHERE table_name IN ({tables})",
        "DELETE FROM tap_schema.tables WHERE schema_name = ANY(:s)",
        "DELETE FROM tap_schema.schemas WHERE schema_name = ANY(:s)",
    ):
        conn.execute(sa.text(statement), {"s": schemas})


def _describe(conn: sa.Connection, table: CatalogTable, index: int) -> None:
    how = {
        "director": "partitioned by position",
        "child": f"placed with {table.director_table}",
        "replicated": "replicated",
        "match": f"matching {table.director_table} and {table.director_table2}, in the chunks of both",
    }[table.role]
    conn.execute(
        sa.text(
            "INSERT INTO tap_schema.tables (schema_name, table_name, table_type, description, table_index) "
            "VALUES (:s, :t, 'table', :d, :i)"
        ),
        {
            "s": table.schema_name,
            "t": table.name,
            "d": f"{table.description or table.name} ({how})",
            "i": 1000 + index,
        },
    )
    # A region column is published as ObsCore's s_region is: STC-S text without an xtype (taplint refuses
    # an xtype element in /tables), its representation columns beside it (SELECT * returns them).
    for position, column in enumerate(table.columns):
        datatype, arraysize, xtype = _TAP_TYPES.get(column.datatype, ("char", "*", None))
        conn.execute(
            sa.text(
                "INSERT INTO tap_schema.columns (table_name, column_name, ucd, unit, description, datatype, "
                "arraysize, xtype, principal, indexed, std, column_index) VALUES (:t, :c, :ucd, :u, :d, :dt, "
                ":a, :x, :p, :ix, 0, :i)"
            ),
            {
                "t": table.name,
                "c": column.name,
                "ucd": column.ucd or _ucd(table, column.name),
                "u": column.unit,
                "d": column.description,
                "dt": datatype,
                "a": arraysize,
                "x": xtype,
                "p": 1 if _ucd(table, column.name) else 0,
                "ix": 1 if column.name in (table.id_column, table.ra_column, table.dec_column) else 0,
                "i": position,
            },
        )


def _ucd(table: CatalogTable, column: str) -> str | None:
    if column in table.region_columns:
        return "pos.outline"
    if column == table.ra_column:
        return "pos.eq.ra;meta.main"
    if column == table.dec_column:
        return "pos.eq.dec;meta.main"
    if column == table.id_column:
        return "meta.id;meta.main"
    if column == table.director_key_column:
        return "meta.id.parent"
    return None
