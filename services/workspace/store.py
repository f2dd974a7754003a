"""Personal workspaces: each user's own schema of Level 3 tables, with shares and a quota.

A user's tables live in the schema ``user_<name>`` of the control database (created on first use; names
reach SQL only as quoted identifiers). A table comes from a file (any format `dms load` reads) or from a
query result; it is created, filled (COPY), measured and published in TAP_SCHEMA in one transaction, so a
table over the quota, with a hostile or colliding name, or from a malformed file leaves nothing behind.
The reader role may SELECT it, but only the viewers dms.table_visible allows (the owner, and the users and
groups it is shared with) get past the services' check, and TAP_SCHEMA lists it only to them.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa
from psycopg import sql

from dms.deployment import Deployment
from dms.query.reader import READER_ROLE
from dms.schema.catalog import SQL_TYPES, column_type_name
from dms.services.auth import USER_NAME
from dms.services.workspace import visibility
from dms.services.workspace.errors import AlreadyExists, NotFound, QuotaExceeded, WorkspaceError

log = logging.getLogger(__name__)

TABLE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
COLUMN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
RESERVED_COLUMNS = {"oid", "ctid", "xmin", "xmax", "cmin", "cmax", "tableoid"}
TAP_TYPES = {
    "boolean": ("boolean", None),
    "smallint": ("short", None),
    "integer": ("int", None),
    "bigint": ("long", None),
    "real": ("float", None),
    "double precision": ("double", None),
    "text": ("char", "*"),
    "timestamp": ("char", "*"),
    "timestamptz": ("char", "*"),
    "date": ("char", "*"),
    "bytea": ("unsignedByte", "*"),
}


@dataclass(frozen=True)
class Quota:
    max_bytes: int
    max_rows: int
    used_bytes: int
    used_rows: int


def schema_for(name: str) -> str:
    """The workspace schema of user `name`: user_ + the name folded to [a-z0-9_] (a digest when folding
    could make two users' schemas collide)."""
    folded = re.sub(r"[^a-z0-9_]", "_", name.lower())
    schema = f"user_{folded}"
    if folded != name or len(schema) > 63:
        schema = f"{schema[:50]}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return schema


def check_table_name(name: str) -> str:
    """A valid workspace table name (lower case), or an error saying what is allowed."""
    if not isinstance(name, str) or not TABLE_NAME.match(name.lower()) or name.lower().startswith("pg_"):
        raise WorkspaceError(
            f"table name {name!r} is invalid: start with a letter; then letters, digits or _; at most 63 "
            "characters; not pg_..."
        )
    return name.lower()


def _columns(table: pa.Table) -> list[tuple[str, str]]:
    columns, seen = [], set()
    for field in table.schema:
        name = field.name.lower()
        if not COLUMN_NAME.match(field.name) or name in RESERVED_COLUMNS:
            raise WorkspaceError(
                f"column name {field.name!r} is invalid: letters, digits and _, at most 63 characters "
                "(rename it in the file)"
            )
        if name in seen:
            raise WorkspaceError(f"column {field.name!r} appears twice (names are case-insensitive)")
        seen.add(name)
        try:
            columns.append((name, SQL_TYPES[column_type_name(field.type)]))
        except Exception:
            raise WorkspaceError(
                f"column {field.name!r} has type {field.type}, which cannot be stored"
            ) from None
    if not columns:
        raise WorkspaceError("the table has no columns")
    return columns


class Workspaces:
    """The workspace operations of one deployment, for a given owner."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment

    # ---- reading state ----------------------------------------------------------------------------------

    def quota(self, conn: sa.Connection, owner: str) -> Quota:
        row = conn.execute(
            sa.text(
                "SELECT w.max_bytes, w.max_rows, coalesce(sum(t.byte_count), 0), "
                "coalesce(sum(t.row_count), 0) "
                "FROM dms.workspace w LEFT JOIN dms.workspace_table t ON t.owner = w.owner "
                "WHERE w.owner = :o GROUP BY w.owner"
            ),
            {"o": owner},
        ).first()
        config = self.deployment.config
        if row is None:
            return Quota(config.workspace_max_bytes, config.workspace_max_rows, 0, 0)
        max_bytes, max_rows, used_bytes, used_rows = row
        return Quota(
            config.workspace_max_bytes if max_bytes is None else int(max_bytes),
            config.workspace_max_rows if max_rows is None else int(max_rows),
            int(used_bytes),
            int(used_rows),
        )

    def list_tables(self, conn: sa.Connection, owner: str) -> dict[str, Any]:
        """The owner's tables (with their shares) and the tables others share with them."""
        own = conn.execute(
            sa.text(
                "SELECT t.table_name, w.schema_name, t.row_count, t.byte_count, t.source, t.created_at, "
                "coalesce(array_agg(s.grantee_kind || ':' || s.grantee ORDER BY s.grantee_kind, s.grantee) "
                "FILTER (WHERE s.grantee IS NOT NULL), '{}') FROM dms.workspace_table t "
                "JOIN dms.workspace w ON w.owner = t.owner LEFT JOIN dms.workspace_share s "
                "ON s.owner = t.owner AND s.table_name = t.table_name WHERE t.owner = :o "
                "GROUP BY t.table_name, w.schema_name, t.row_count, t.byte_count, t.source, t.created_at "
                "ORDER BY t.table_name"
            ),
            {"o": owner},
        ).all()
        shared = conn.execute(
            sa.text(
                "SELECT DISTINCT t.owner, w.schema_name, t.table_name, t.row_count "
                "FROM dms.workspace_share s "
                "JOIN dms.workspace_table t ON t.owner = s.owner AND t.table_name = s.table_name "
                "JOIN dms.workspace w ON w.owner = t.owner WHERE t.owner <> :o AND ("
                "(s.grantee_kind = 'user' AND s.grantee = :o) OR (s.grantee_kind = 'group' AND s.grantee IN "
                "(SELECT group_name FROM dms.group_member WHERE user_name = :o))) ORDER BY 1, 3"
            ),
            {"o": owner},
        ).all()
        quota = self.quota(conn, owner)
        return {
            "owner": owner,
            "schema": schema_for(owner),
            "quota": {
                "max_bytes": quota.max_bytes,
                "max_rows": quota.max_rows,
                "used_bytes": quota.used_bytes,
                "used_rows": quota.used_rows,
            },
            "tables": [
                {
                    "name": name,
                    "qualified_name": f"{schema}.{name}",
                    "rows": rows,
                    "bytes": size,
                    "source": source,
                    "created_at": created.isoformat(timespec="seconds"),
                    "shares": [{"kind": s.split(":", 1)[0], "name": s.split(":", 1)[1]} for s in shares],
                }
                for name, schema, rows, size, source, created, shares in own
            ],
            "shared_with_me": [
                {"owner": o, "name": t, "qualified_name": f"{s}.{t}", "rows": r} for o, s, t, r in shared
            ],
        }

    def _require_table(self, conn: sa.Connection, owner: str, name: str) -> None:
        found = conn.execute(
            sa.text("SELECT 1 FROM dms.workspace_table WHERE owner = :o AND table_name = :t"),
            {"o": owner, "t": name},
        ).first()
        if found is None:
            raise NotFound(f"no table {name!r} in your workspace")

    # ---- changing state ---------------------------------------------------------------------------------

    def _ensure_workspace(self, conn: sa.Connection, owner: str) -> str:
        schema = conn.execute(
            sa.text("SELECT schema_name FROM dms.workspace WHERE owner = :o"), {"o": owner}
        ).scalar()
        if schema is not None:
            return str(schema)
        schema = schema_for(owner)
        if (
            conn.execute(sa.text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": schema}).first()
            is not None
        ):
            raise WorkspaceError(f"schema {schema} exists but is not {owner}'s workspace; ask the operators")
        conn.execute(
            sa.text("INSERT INTO dms.workspace (owner, schema_name) VALUES (:o, :s)"),
            {"o": owner, "s": schema},
        )
        raw = conn.connection.driver_connection
        assert raw is not None
        raw.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        raw.execute(
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
                sql.Identifier(schema), sql.Identifier(READER_ROLE)
            )
        )
        return schema

    def store(
        self, owner: str, name: str, table: pa.Table, source: str, *, replace: bool = False
    ) -> dict[str, Any]:
        """Store `table` as the owner's table `name` (replacing one of that name only if asked)."""
        name = check_table_name(name)
        columns = _columns(table)
        with self.deployment.engine().begin() as conn:
            if not conn.execute(
                sa.text("SELECT 1 FROM dms.user_account WHERE name = :o"), {"o": owner}
            ).first():
                raise NotFound(f"no user {owner!r}")
            schema = self._ensure_workspace(conn, owner)
            exists = conn.execute(
                sa.text("SELECT 1 FROM dms.workspace_table WHERE owner = :o AND table_name = :t"),
                {"o": owner, "t": name},
            ).first()
            if exists and not replace:
                raise AlreadyExists(f"table {name!r} already exists in your workspace; drop it or replace it")
            if exists:
                self._drop(conn, owner, schema, name)
            quota = self.quota(conn, owner)
            if quota.used_rows + table.num_rows > quota.max_rows:
                raise QuotaExceeded(
                    f"table {name!r} has {table.num_rows:,} rows; your workspace holds "
                    f"{quota.used_rows:,} of "
                    f"{quota.max_rows:,} rows: drop tables or ask the operators for a larger quota"
                )
            self._create(conn, schema, name, columns, table)
            size = int(
                conn.execute(
                    sa.text("SELECT pg_total_relation_size(CAST(:r AS regclass))"),
                    {"r": sql.Identifier(schema, name).as_string(conn.connection.driver_connection)},
                ).scalar_one()
            )
            if quota.used_bytes + size > quota.max_bytes:
                raise QuotaExceeded(
                    f"table {name!r} takes {size:,} bytes; your workspace holds {quota.used_bytes:,} of "
                    f"{quota.max_bytes:,} bytes: drop tables or ask the operators for a larger quota"
                )
            conn.execute(
                sa.text(
                    "INSERT INTO dms.workspace_table (owner, table_name, row_count, byte_count, source) "
                    "VALUES (:o, :t, :r, :b, :s)"
                ),
                {"o": owner, "t": name, "r": table.num_rows, "b": size, "s": source[:2000]},
            )
            self._publish(conn, schema, name, columns, table.schema)
        visibility.changed()
        log.info("workspace %s: stored table %s (%d rows, %d bytes)", schema, name, table.num_rows, size)
        return {"name": name, "qualified_name": f"{schema}.{name}", "rows": table.num_rows, "bytes": size}

    def _create(
        self, conn: sa.Connection, schema: str, name: str, columns: list[tuple[str, str]], table: pa.Table
    ) -> None:
        raw = conn.connection.driver_connection
        assert raw is not None
        target = sql.Identifier(schema, name)
        definition = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in columns
        )
        raw.execute(sql.SQL("CREATE TABLE {} ({})").format(target, definition))
        if table.num_rows:
            buffer = io.BytesIO()
            pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
            with (
                raw.cursor() as cur,
                cur.copy(sql.SQL("COPY {} FROM STDIN (FORMAT csv)").format(target)) as copy,
            ):
                copy.write(buffer.getbuffer())
        raw.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(target, sql.Identifier(READER_ROLE)))

    def _publish(
        self, conn: sa.Connection, schema: str, name: str, columns: list[tuple[str, str]], arrow: pa.Schema
    ) -> None:
        """Describe the table in TAP_SCHEMA (row-level security shows it to its readers only)."""
        qualified = f"{schema}.{name}"
        conn.execute(
            sa.text(
                "INSERT INTO tap_schema.schemas (schema_name, description, schema_index) "
                "SELECT CAST(:s AS varchar), :d, "
                "(SELECT coalesce(max(schema_index), 0) + 1 FROM tap_schema.schemas) "
                "WHERE NOT EXISTS (SELECT 1 FROM tap_schema.schemas WHERE schema_name = :s)"
            ),
            {"s": schema, "d": "A personal workspace (Level 3 tables)"},
        )
        conn.execute(
            sa.text(
                "INSERT INTO tap_schema.tables (schema_name, table_name, table_type, description, "
                "table_index) "
                "VALUES (:s, :t, 'table', :d, 0)"
            ),
            {"s": schema, "t": qualified, "d": "A workspace table"},
        )
        for index, ((column, sql_type), field) in enumerate(zip(columns, arrow, strict=True)):
            datatype, arraysize = TAP_TYPES.get(sql_type, ("char", "*"))
            meta = {k.decode(): v.decode() for k, v in (field.metadata or {}).items()}
            conn.execute(
                sa.text(
                    "INSERT INTO tap_schema.columns (table_name, column_name, datatype, arraysize, unit, "
                    "ucd, "
                    "description, principal, indexed, std, column_index) VALUES (:t, :c, :d, :a, :u, :ucd, "
                    "NULL, 1, 0, 0, :i)"
                ),
                {
                    "t": qualified,
                    "c": column,
                    "d": datatype,
                    "a": arraysize,
                    "u": meta.get("unit"),
                    "ucd": meta.get("ucd"),
                    "i": index,
                },
            )

    def _drop(self, conn: sa.Connection, owner: str, schema: str, name: str) -> None:
        qualified = f"{schema}.{name}"
        conn.execute(sa.text("DELETE FROM tap_schema.columns WHERE table_name = :t"), {"t": qualified})
        conn.execute(sa.text("DELETE FROM tap_schema.tables WHERE table_name = :t"), {"t": qualified})
        conn.execute(
            sa.text("DELETE FROM dms.workspace_table WHERE owner = :o AND table_name = :t"),
            {"o": owner, "t": name},
        )
        raw = conn.connection.driver_connection
        assert raw is not None
        raw.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(schema, name)))

    def drop(self, owner: str, name: str) -> None:
        name = check_table_name(name)
        with self.deployment.engine().begin() as conn:
            self._require_table(conn, owner, name)
            self._drop(conn, owner, schema_for_owner(conn, owner), name)
        visibility.changed()

    def share(self, owner: str, name: str, *, user: str | None = None, group: str | None = None) -> None:
        """Share the owner's table read-only with a user or a group (which must exist)."""
        kind, grantee = _grantee(user, group)
        name = check_table_name(name)
        with self.deployment.engine().begin() as conn:
            self._require_table(conn, owner, name)
            registry = "dms.user_account" if kind == "user" else "dms.user_group"
            if not conn.execute(sa.text(f"SELECT 1 FROM {registry} WHERE name = :n"), {"n": grantee}).first():
                raise NotFound(f"no {kind} {grantee!r} to share with")
            if kind == "user" and grantee == owner:
                raise WorkspaceError("a table is always visible to its owner; share it with someone else")
            conn.execute(
                sa.text(
                    "INSERT INTO dms.workspace_share (owner, table_name, grantee_kind, grantee) "
                    "VALUES (:o, :t, :k, :g) ON CONFLICT DO NOTHING"
                ),
                {"o": owner, "t": name, "k": kind, "g": grantee},
            )
        visibility.changed()

    def unshare(self, owner: str, name: str, *, user: str | None = None, group: str | None = None) -> None:
        kind, grantee = _grantee(user, group)
        name = check_table_name(name)
        with self.deployment.engine().begin() as conn:
            self._require_table(conn, owner, name)
            removed = conn.execute(
                sa.text(
                    "DELETE FROM dms.workspace_share WHERE owner = :o AND table_name = :t "
                    "AND grantee_kind = :k AND grantee = :g"
                ),
                {"o": owner, "t": name, "k": kind, "g": grantee},
            )
            if removed.rowcount == 0:
                raise NotFound(f"table {name!r} is not shared with {kind} {grantee!r}")
        visibility.changed()

    def set_quota(self, owner: str, max_bytes: int | None, max_rows: int | None) -> None:
        with self.deployment.engine().begin() as conn:
            if not conn.execute(
                sa.text("SELECT 1 FROM dms.user_account WHERE name = :o"), {"o": owner}
            ).first():
                raise NotFound(f"no user {owner!r}")
            self._ensure_workspace(conn, owner)
            conn.execute(
                sa.text("UPDATE dms.workspace SET max_bytes = :b, max_rows = :r WHERE owner = :o"),
                {"o": owner, "b": max_bytes, "r": max_rows},
            )


def schema_for_owner(conn: sa.Connection, owner: str) -> str:
    schema = conn.execute(
        sa.text("SELECT schema_name FROM dms.workspace WHERE owner = :o"), {"o": owner}
    ).scalar()
    if schema is None:
        raise NotFound(f"{owner!r} has no workspace yet")
    return str(schema)


def _grantee(user: str | None, group: str | None) -> tuple[str, str]:
    if (user is None) == (group is None):
        raise WorkspaceError("name exactly one of a user or a group to share with")
    kind, name = ("user", user) if user is not None else ("group", group or "")
    if not USER_NAME.match(name):
        raise NotFound(f"no {kind} {name[:80]!r} to share with")
    return kind, name


def read_table_file(path: Path) -> pa.Table:
    """A file in any format `dms load` reads (Parquet, CSV/TSV, FITS binary table, VOTable)."""
    from dms.loaders.readers import CatalogFileError, read_catalog_file

    try:
        return read_catalog_file(path)
    except CatalogFileError as exc:
        raise WorkspaceError(str(exc)) from None
