"""Release states of schemas and tables (`dms release`): the DAC shows released data only."""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa

from dms.services.workspace import visibility
from dms.services.workspace.errors import WorkspaceError

TARGET = re.compile(r"^([A-Za-z_][A-Za-z0-9_]{0,63})(?:\.([A-Za-z_][A-Za-z0-9_]{0,127}))?$")


def parse_target(target: str) -> tuple[str, str]:
    """SCHEMA or SCHEMA.TABLE as lower-case (schema, table or '')."""
    match = TARGET.match(target)
    if match is None:
        raise WorkspaceError(f"{target!r} is not SCHEMA or SCHEMA.TABLE (letters, digits, _)")
    return match.group(1).lower(), (match.group(2) or "").lower()


def set_release(conn: sa.Connection, target: str, released: bool) -> None:
    """Mark a schema or one of its tables released (visible on the DAC) or unreleased."""
    schema, table = parse_target(target)
    if schema == "tap_schema" or schema.startswith("user_"):
        raise WorkspaceError(f"{schema!r} is always visible to its readers; it has no release state")
    conn.execute(
        sa.text(
            "INSERT INTO dms.data_release (schema_name, table_name, released) VALUES (:s, :t, :r) "
            "ON CONFLICT (schema_name, table_name) DO UPDATE SET released = EXCLUDED.released, "
            "updated_at = now()"
        ),
        {"s": schema, "t": table, "r": released},
    )
    visibility.changed()


def list_release(conn: sa.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        sa.text(
            "SELECT schema_name, table_name, released, updated_at FROM dms.data_release "
            "ORDER BY schema_name, table_name"
        )
    ).all()
    return [
        {"target": f"{s}.{t}" if t else s, "released": r, "updated_at": when.isoformat(timespec="seconds")}
        for s, t, r, when in rows
    ]
