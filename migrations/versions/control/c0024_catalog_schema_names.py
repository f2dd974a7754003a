"""Catalog tables named in ADQL: the default schema `catalog` (an ADQL reserved word) becomes `cat`
(schema 1.19.0).

Every registered ``catalog.<name>`` table is renamed ``cat.<name>`` in the registry (``dms.catalog_table``
and every row naming it: columns, chunks, replicas, director index, loads, chunk files, data release), in
TAP_SCHEMA, and keeps its stored rows where they are: the new column ``dms.catalog_table.storage_name``
records the old name, under which the shards and index files hold them. The query engine still reads
``catalog.<name>`` as ``cat.<name>``, with a deprecation warning in the result.

A registered ``cat.<name>`` beside a ``catalog.<name>`` is a conflict the migration refuses, naming both.

Revision ID: c0024
Revises: c0023
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op

from dms.migrations.schema_info import set_schema_version

revision: str = "c0024"
down_revision: str | None = "c0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD, NEW = "catalog", "cat"
STORAGE_COMMENT = (
    "Where the table's rows are stored (schema.table on the shards, and its index files) when that differs "
    "from its name: the tables migration c0024 renamed from the ADQL-reserved schema `catalog` to `cat` keep "
    "their stored rows. NULL when the rows are stored under the table's name."
)
# Registry columns holding a catalog table's qualified name.
NAME_COLUMNS = (
    ("catalog_table", "director_table"),
    ("catalog_table", "director_table2"),
    ("catalog_table", "like_table"),
    ("chunk", "table_name"),
    ("chunk_replica", "table_name"),
    ("director_index", "table_name"),
    ("catalog_column", "table_name"),
    ("catalog_load", "table_name"),
    ("chunk_file", "table_name"),
)
TAP_NAME_COLUMNS = (
    ("tables", "table_name"),
    ("columns", "table_name"),
    ("keys", "from_table"),
    ("keys", "target_table"),
)


def upgrade() -> None:
    op.add_column(
        "catalog_table",
        sa.Column("storage_name", sa.String(length=128), nullable=True, comment=STORAGE_COMMENT),
        schema="dms",
    )
    _rename(OLD, NEW, keep_storage=True)
    set_schema_version("1.19.0")


def downgrade() -> None:
    _rename(NEW, OLD, keep_storage=False)
    op.drop_column("catalog_table", "storage_name", schema="dms")
    set_schema_version("1.18.0")


def _rename(old: str, new: str, *, keep_storage: bool) -> None:
    """Rename the registered tables of schema `old` to `new` (on downgrade only those c0024 renamed)."""
    conn = op.get_bind()
    condition = "split_part(name, '.', 1) = :old"
    if not keep_storage:
        # only the tables c0024 renamed: their rows are stored under the name they get back
        condition += " AND storage_name = :new || '.' || split_part(name, '.', 2)"
    names = conn.execute(
        sa.text(f"SELECT name FROM dms.catalog_table WHERE {condition} ORDER BY name"),
        {"old": old, "new": new},
    ).scalars()
    pairs = [(name, f"{new}.{name.split('.', 1)[1]}") for name in names]
    taken = conn.execute(
        sa.text("SELECT name FROM dms.catalog_table WHERE lower(name) = ANY(:n)"),
        {"n": [target.lower() for _, target in pairs]},
    ).scalars()
    clashes = sorted(taken)
    if clashes:
        raise RuntimeError(
            f"cannot rename the {old}.* catalog tables to {new}.*: {', '.join(clashes)} exist already; drop or "
            "rename one of each pair first"
        )
    if not pairs:
        return
    tap_schema = conn.execute(sa.text("SELECT to_regclass('tap_schema.tables')")).scalar() is not None
    referenced = ["dms.catalog_table", "dms.chunk"]
    if tap_schema:
        referenced += ["tap_schema.schemas", "tap_schema.tables", "tap_schema.keys"]
    with _foreign_keys_lifted(conn, referenced):
        for before, after in pairs:
            storage = "coalesce(storage_name, name)" if keep_storage else "NULL"
            conn.execute(
                sa.text(
                    f"UPDATE dms.catalog_table SET storage_name = {storage}, name = :after WHERE name = :before"
                ),
                {"before": before, "after": after},
            )
            for table, column in NAME_COLUMNS:
                _replace(conn, "dms", table, column, before, after)
            if tap_schema:
                for table, column in TAP_NAME_COLUMNS:
                    _replace(conn, "tap_schema", table, column, before, after)
            _rename_dangling(conn, old, new)
        if tap_schema:
            _rename_tap_schema(conn, old, new)
    _rename_release(conn, old, new)


def _rename_dangling(conn: sa.Connection, old: str, new: str) -> None:
    """References to `old.*` tables that are not registered (a --like layout whose table was dropped) follow
    the renamed schema too."""
    preparer = conn.dialect.identifier_preparer
    for column in ("like_table", "director_table2"):
        name = preparer.quote(column)
        conn.execute(
            sa.text(
                f"UPDATE dms.catalog_table SET {name} = :new || '.' || split_part({name}, '.', 2) "
                f"WHERE split_part({name}, '.', 1) = :old AND {name} NOT IN (SELECT name FROM dms.catalog_table)"
            ),
            {"old": old, "new": new},
        )


def _replace(conn: sa.Connection, schema: str, table: str, column: str, before: str, after: str) -> None:
    preparer = conn.dialect.identifier_preparer
    target = f"{preparer.quote(schema)}.{preparer.quote(table)}"
    name = preparer.quote(column)
    conn.execute(
        sa.text(f"UPDATE {target} SET {name} = :after WHERE {name} = :before"),
        {"before": before, "after": after},
    )


def _rename_tap_schema(conn: sa.Connection, old: str, new: str) -> None:
    """TAP_SCHEMA's renamed tables move to schema `new` (described once); `old` stays while it has others."""
    values = {"old": old, "new": new}
    conn.execute(
        sa.text(
            "UPDATE tap_schema.tables SET schema_name = CAST(:new AS varchar) WHERE schema_name = CAST(:old AS "
            "varchar) AND split_part(table_name, '.', 1) = CAST(:new AS varchar)"
        ),
        values,
    )
    conn.execute(
        sa.text(
            "INSERT INTO tap_schema.schemas (schema_name, description, schema_index) SELECT CAST(:new AS varchar), "
            "'Catalog tables in ' || CAST(:new AS varchar) || ', partitioned on HEALPix (dms load)', schema_index "
            "FROM tap_schema.schemas WHERE schema_name = CAST(:old AS varchar) AND NOT EXISTS "
            "(SELECT 1 FROM tap_schema.schemas WHERE schema_name = CAST(:new AS varchar))"
        ),
        values,
    )
    conn.execute(
        sa.text(
            "DELETE FROM tap_schema.schemas WHERE schema_name = CAST(:old AS varchar) AND NOT EXISTS "
            "(SELECT 1 FROM tap_schema.tables WHERE schema_name = CAST(:old AS varchar))"
        ),
        values,
    )


def _rename_release(conn: sa.Connection, old: str, new: str) -> None:
    """Release states set for schema `old` apply to `new` (where `new` has none of its own)."""
    conn.execute(
        sa.text(
            "UPDATE dms.data_release r SET schema_name = :new WHERE r.schema_name = :old AND NOT EXISTS "
            "(SELECT 1 FROM dms.data_release o WHERE o.schema_name = :new AND o.table_name = r.table_name)"
        ),
        {"old": old, "new": new},
    )
    conn.execute(sa.text("DELETE FROM dms.data_release WHERE schema_name = :old"), {"old": old})


@contextmanager
def _foreign_keys_lifted(conn: sa.Connection, referenced: list[str]) -> Iterator[None]:
    """Drop the foreign keys that reference `referenced` tables for the block, then add them back as they
    were (so a name changes in the referenced row and its referencing rows together)."""
    keys = conn.execute(
        sa.text(
            "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c "
            "WHERE c.contype = 'f' AND c.confrelid = ANY(CAST(:r AS regclass[])) ORDER BY c.conname"
        ),
        {"r": referenced},
    ).all()
    quote = conn.dialect.identifier_preparer.quote
    # conrelid::regclass::text is the table's name as PostgreSQL quotes it; the definition is PostgreSQL's own
    for table, name, _ in keys:
        conn.execute(sa.text(f"ALTER TABLE {table} DROP CONSTRAINT {quote(name)}"))
    yield
    for table, name, definition in keys:
        conn.execute(sa.text(f"ALTER TABLE {table} ADD CONSTRAINT {quote(name)} {definition}"))
