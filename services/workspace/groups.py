"""Groups of users (`dms users group`), to share workspace tables with."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from dms.services.auth import USER_NAME
from dms.services.workspace import visibility
from dms.services.workspace.errors import AlreadyExists, NotFound, WorkspaceError


def _require_user(conn: sa.Connection, name: str) -> None:
    if not USER_NAME.match(name):
        raise NotFound(f"no user {name[:80]!r} (see `dms users list`)")
    if not conn.execute(sa.text("SELECT 1 FROM dms.user_account WHERE name = :n"), {"n": name}).first():
        raise NotFound(f"no user {name!r} (see `dms users list`)")


def _require_group(conn: sa.Connection, group: str) -> None:
    if not USER_NAME.match(group):
        raise NotFound(f"no group {group[:80]!r} (see `dms users group list`)")
    if not conn.execute(sa.text("SELECT 1 FROM dms.user_group WHERE name = :g"), {"g": group}).first():
        raise NotFound(f"no group {group!r} (see `dms users group list`)")


def create_group(conn: sa.Connection, group: str) -> None:
    if not USER_NAME.match(group):
        raise WorkspaceError(
            f"group name {group!r} is invalid: start with a letter; letters, digits, '_', '.', '@', '-'; "
            "at most 64 characters"
        )
    if conn.execute(sa.text("SELECT 1 FROM dms.user_group WHERE name = :g"), {"g": group}).first():
        raise AlreadyExists(f"group {group!r} already exists")
    conn.execute(sa.text("INSERT INTO dms.user_group (name) VALUES (:g)"), {"g": group})


def add_member(conn: sa.Connection, group: str, user: str) -> None:
    _require_group(conn, group)
    _require_user(conn, user)
    conn.execute(
        sa.text(
            "INSERT INTO dms.group_member (group_name, user_name) VALUES (:g, :u) ON CONFLICT DO NOTHING"
        ),
        {"g": group, "u": user},
    )
    visibility.changed()


def remove_member(conn: sa.Connection, group: str, user: str) -> None:
    _require_group(conn, group)
    removed = conn.execute(
        sa.text("DELETE FROM dms.group_member WHERE group_name = :g AND user_name = :u"),
        {"g": group, "u": user},
    )
    if removed.rowcount == 0:
        raise NotFound(f"user {user!r} is not a member of group {group!r}")
    visibility.changed()


def list_groups(conn: sa.Connection, user: str | None = None) -> list[dict[str, Any]]:
    """Every group (or `user`'s groups) with its members."""
    rows = conn.execute(
        sa.text(
            "SELECT g.name, coalesce(array_agg(m.user_name ORDER BY m.user_name) "
            "FILTER (WHERE m.user_name IS NOT NULL), '{}') FROM dms.user_group g "
            "LEFT JOIN dms.group_member m ON m.group_name = g.name GROUP BY g.name ORDER BY g.name"
        )
    ).all()
    return [
        {"name": name, "members": list(members)} for name, members in rows if user is None or user in members
    ]
