"""The catalog registry: partitioned and replicated tables, their columns, chunks, loads and files.

These rows live in the control database (dms.catalog_table, catalog_column, chunk, chunk_replica,
catalog_load, chunk_file); this module reads and writes them for the loaders and the query engine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pyarrow as pa
import sqlalchemy as sa

from dms.errors import DMSError

NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DEFAULT_SCHEMA = "cat"
"""The schema of a table loaded without one (`dms load gaia ...` -> ``cat.gaia``): a regular ADQL
identifier, so ``SELECT * FROM cat.gaia`` is strict ADQL 2.1."""
LEGACY_SCHEMA = "catalog"
"""The default schema before schema 1.18.0 (migration c0024 renamed its tables to ``cat.``). CATALOG is an
ADQL reserved word; ``catalog.x`` still resolves to ``cat.x``, with a deprecation warning."""
#: Columns DMS adds to every partitioned row.
PARTITION_COLUMNS = ("_healpix_29", "_chunk", "_overlap")
ROLES = ("director", "child", "replicated")


class CatalogError(DMSError):
    """A catalog table that does not exist, or a definition that is not valid."""


def qualified_name(name: str) -> str:
    """`schema.table` for a table name given with or without its schema (the default schema is `cat`);
    the legacy `catalog.x` is read as `cat.x`."""
    parts = name.split(".")
    if len(parts) == 1:
        parts = [DEFAULT_SCHEMA, parts[0]]
    if len(parts) != 2 or not all(NAME_PATTERN.match(p) for p in parts):
        raise CatalogError(
            f"table name {name!r} is not valid: use TABLE or SCHEMA.TABLE with letters, digits, underscores"
        )
    if parts[0].lower() == LEGACY_SCHEMA:
        parts[0] = DEFAULT_SCHEMA
    return ".".join(parts)


def new_table_name(name: str, schema: str | None = None) -> str:
    """The qualified name of a table about to be created: `schema` (or the one in `name`, else `cat`) must
    be a regular ADQL identifier, so the table can be queried without quotes."""
    if schema is not None:
        if "." in name:
            raise CatalogError(f"table {name!r} names its schema already; drop --schema or the prefix")
        name = f"{schema}.{name}"
    if "." in name and name.split(".")[0].lower() == LEGACY_SCHEMA:
        raise CatalogError(
            f"schema {LEGACY_SCHEMA!r} is an ADQL reserved word (CATALOG); load into {DEFAULT_SCHEMA!r} (the "
            "default) or name another schema, e.g. --schema gaia_dr3"
        )
    qualified = qualified_name(name)
    schema_part = qualified.split(".")[0]
    if not REGULAR_SCHEMA.match(schema_part) or schema_part.upper() in _adql_reserved():
        raise CatalogError(
            f"schema {schema_part!r} is not a regular ADQL identifier (a letter, then letters, digits, "
            "underscores; no reserved word): queries would have to quote it"
        )
    return qualified


REGULAR_SCHEMA = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _adql_reserved() -> frozenset[str]:
    from vo_models.adql.misc import ADQL_SQL_KEYWORDS

    from dms.query.adql.grammar import RESERVED_WORDS

    return frozenset(ADQL_SQL_KEYWORDS) | RESERVED_WORDS


def legacy_name(schema: str | None, name: str) -> str | None:
    """`cat.<name>` when `schema.name` is the legacy `catalog.<name>` spelling, else None."""
    if schema is not None and schema.lower() == LEGACY_SCHEMA:
        return f"{DEFAULT_SCHEMA}.{name}"
    return None


LEGACY_WARNING = (
    "table {old} is now {new}: the schema {legacy!r} is an ADQL reserved word and its name is deprecated "
    "(it will stop resolving in a later release); write {new}"
)


@dataclass(frozen=True)
class Column:
    name: str
    datatype: str
    unit: str | None = None
    ucd: str | None = None
    description: str | None = None

    @property
    def arrow_type(self) -> pa.DataType:
        return arrow_type(self.datatype)


@dataclass(frozen=True)
class CatalogTable:
    """One registered catalog table and how it is distributed."""

    name: str
    role: str
    columns: tuple[Column, ...]
    storage_kind: str
    chunk_order: int | None = None
    max_chunk_rows: int | None = None
    overlap_arcsec: float = 60.0
    id_column: str | None = None
    ra_column: str | None = None
    dec_column: str | None = None
    director_table: str | None = None
    director_key_column: str | None = None
    row_count: int = 0
    description: str | None = None
    replicas: int = 1
    like_table: str | None = None  # the table whose chunk layout this one copies (`dms load --like`)
    director_table2: str | None = None  # a match table's second director (Qserv's director_table2)
    director_key2_column: str | None = None  # a match table's column holding the second director's id
    extra: dict[str, str] = field(default_factory=dict)
    storage_name: str | None = None  # where the rows are stored, when not under `name` (see migration c0024)

    @property
    def schema_name(self) -> str:
        return self.name.split(".")[0]

    @property
    def table_name(self) -> str:
        return self.name.split(".")[1]

    @property
    def storage_schema(self) -> str:
        """The schema the shards (and index files) hold the rows under: the old one of a renamed table."""
        return (self.storage_name or self.name).split(".")[0]

    @property
    def storage_table(self) -> str:
        return (self.storage_name or self.name).split(".")[1]

    @property
    def partitioned(self) -> bool:
        return self.role != "replicated"

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name.lower() == name.lower():
                return column
        raise CatalogError(f"table {self.name} has no column {name!r}")

    @property
    def region_columns(self) -> tuple[str, ...]:
        """The text columns holding regions (STC-S) with their representation columns beside them
        (``c_shape`` list<double>, ``c_moc`` list<int64>; see dms.query.regions), as `dms load --region`
        registers them."""
        types = {c.name.lower(): c.datatype for c in self.columns}
        return tuple(
            c.name
            for c in self.columns
            if c.datatype == "string"
            and types.get(c.name.lower() + "_shape") == "list<double>"
            and types.get(c.name.lower() + "_moc") == "list<int64>"
        )

    @property
    def derived_columns(self) -> tuple[str, ...]:
        """Columns a load computes rather than reads: the representation of the region columns."""
        return tuple(f"{name}{suffix}" for name in self.region_columns for suffix in ("_shape", "_moc"))

    def arrow_schema(self, *, with_partitioning: bool = True) -> pa.Schema:
        fields = [pa.field(c.name, c.arrow_type) for c in self.columns]
        if with_partitioning and self.partitioned:
            fields += [
                pa.field("_healpix_29", pa.int64()),
                pa.field("_chunk", pa.int64()),
                pa.field("_overlap", pa.bool_()),
            ]
        return pa.schema(fields)


_ARROW_TYPES: dict[str, pa.DataType] = {
    "bool": pa.bool_(),
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "uint8": pa.int16(),
    "uint16": pa.int32(),
    "uint32": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "string": pa.string(),
    "timestamp[us]": pa.timestamp("us"),
    "timestamp[us, tz=UTC]": pa.timestamp("us", tz="UTC"),
    "date32[day]": pa.date32(),
    "binary": pa.binary(),
    # a region column's representation (dms.query.regions), computed by `dms load --region`
    "list<double>": pa.list_(pa.float64()),
    "list<int64>": pa.list_(pa.int64()),
}


#: SQL type of each catalog column type, as PostgreSQL shards store it and as the engine declares it (DuckDB
#: reads the same names). float32 widens exactly to double precision, so sums and averages agree between the
#: shard kinds.
SQL_TYPES: dict[str, str] = {
    "bool": "boolean",
    "int8": "smallint",
    "int16": "smallint",
    "int32": "integer",
    "int64": "bigint",
    "uint8": "smallint",
    "uint16": "integer",
    "uint32": "bigint",
    "float": "double precision",
    "double": "double precision",
    "string": "text",
    "timestamp[us]": "timestamp",
    "timestamp[us, tz=UTC]": "timestamptz",
    "date32[day]": "date",
    "binary": "bytea",
    "list<double>": "double precision[]",
    "list<int64>": "bigint[]",
}


def arrow_type(name: str) -> pa.DataType:
    try:
        return _ARROW_TYPES[name]
    except KeyError:
        raise CatalogError(
            f"column type {name!r} is not supported; use one of {sorted(_ARROW_TYPES)}"
        ) from None


def column_type_name(datatype: pa.DataType) -> str:
    """The registry name of an Arrow type a catalog column may have (unsigned types widen)."""
    if pa.types.is_large_string(datatype) or pa.types.is_string(datatype):
        return "string"
    if pa.types.is_timestamp(datatype):
        return "timestamp[us, tz=UTC]" if datatype.tz else "timestamp[us]"
    if pa.types.is_uint64(datatype):
        raise CatalogError("unsigned 64-bit columns are not supported (no SQL type holds them); cast them")
    name = str(datatype)
    if name == "halffloat":
        return "float"
    if name in _ARROW_TYPES:
        return name
    raise CatalogError(f"column type {datatype} is not supported; use one of {sorted(_ARROW_TYPES)}")


# --- reading and writing the registry ---------------------------------------------------------------------


def list_tables(conn: sa.Connection) -> list[CatalogTable]:
    names = conn.execute(sa.text("SELECT name FROM dms.catalog_table ORDER BY name")).scalars().all()
    return [get_table(conn, n) for n in names]


def find_table(conn: sa.Connection, name: str) -> CatalogTable | None:
    try:
        return get_table(conn, qualified_name(name))
    except CatalogError:
        return None


def get_table(conn: sa.Connection, name: str) -> CatalogTable:
    row = (
        conn.execute(sa.text("SELECT * FROM dms.catalog_table WHERE lower(name) = lower(:n)"), {"n": name})
        .mappings()
        .first()
    )
    if row is None:
        raise CatalogError(f"no catalog table {name!r}; `dms tables` lists them")
    columns = conn.execute(
        sa.text(
            "SELECT name, datatype, unit, ucd, description FROM dms.catalog_column "
            "WHERE table_name = :n ORDER BY position"
        ),
        {"n": row["name"]},
    ).all()
    return CatalogTable(
        name=row["name"],
        role=row["role"],
        columns=tuple(Column(*c) for c in columns),
        storage_kind=row["storage_kind"],
        chunk_order=row["chunk_order"],
        max_chunk_rows=row["max_chunk_rows"],
        overlap_arcsec=row["overlap_arcsec"],
        id_column=row["id_column"],
        ra_column=row["ra_column"],
        dec_column=row["dec_column"],
        director_table=row["director_table"],
        director_key_column=row["director_key_column"],
        row_count=row["row_count"],
        description=row["description"],
        replicas=row["replicas"],
        like_table=row["like_table"],
        director_table2=row.get("director_table2"),
        director_key2_column=row.get("director_key2_column"),
        storage_name=row.get("storage_name"),
    )


def register_table(conn: sa.Connection, table: CatalogTable) -> None:
    """Insert a new table and its columns (in the caller's transaction)."""
    conn.execute(
        sa.text(
            "INSERT INTO dms.catalog_table (name, role, director_table, director_key_column, id_column, "
            "ra_column, dec_column, chunk_order, max_chunk_rows, overlap_arcsec, storage_kind, replicas, "
            "row_count, description, like_table, director_table2, director_key2_column, created_at) "
            "VALUES (:name, :role, :director_table, :director_key_column, "
            ":id_column, "
            ":ra_column, :dec_column, :chunk_order, :max_chunk_rows, :overlap_arcsec, :storage_kind, "
            ":replicas, 0, "
            ":description, :like_table, :director_table2, :director_key2_column, now())"
        ),
        {
            "name": table.name,
            "role": table.role,
            "director_table": table.director_table,
            "director_key_column": table.director_key_column,
            "id_column": table.id_column,
            "ra_column": table.ra_column,
            "dec_column": table.dec_column,
            "chunk_order": table.chunk_order,
            "max_chunk_rows": table.max_chunk_rows,
            "overlap_arcsec": table.overlap_arcsec,
            "storage_kind": table.storage_kind,
            "replicas": table.replicas,
            "description": table.description,
            "like_table": table.like_table,
            "director_table2": table.director_table2,
            "director_key2_column": table.director_key2_column,
        },
    )
    conn.execute(
        sa.text(
            "INSERT INTO dms.catalog_column (table_name, position, name, datatype, unit, ucd, description) "
            "VALUES (:t, :p, :n, :d, :u, :ucd, :desc)"
        ),
        [
            {
                "t": table.name,
                "p": i,
                "n": c.name,
                "d": c.datatype,
                "u": c.unit,
                "ucd": c.ucd,
                "desc": c.description,
            }
            for i, c in enumerate(table.columns)
        ],
    )


def chunks(conn: sa.Connection, table: str) -> list[tuple[int, int]]:
    """(order, pixel) of every registered chunk of a table."""
    rows = conn.execute(
        sa.text("SELECT chunk_order, chunk_id FROM dms.chunk WHERE table_name = :t"), {"t": table}
    ).all()
    return [(int(o), int(p)) for o, p in rows]
