"""What a viewer may read: the one rule is the SQL function dms.table_visible (migration c0021).

TAP_SCHEMA applies it by row-level security to the reader role (the services set ``dms.viewer`` and
``dms.unreleased`` for each query's transaction, :func:`viewer_settings`); the services apply it to the
tables a query names (:func:`hidden_tables`) and to the table lists they show (:func:`visible_names`,
cached briefly and dropped whenever this process changes a workspace, a share or a release state).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

import psycopg
import sqlalchemy as sa

from dms.services.workspace.viewer import Viewer

CACHE_SECONDS = 2.0
_lock = threading.Lock()
_generation = 0
_cache: dict[tuple[Any, ...], tuple[float, int, frozenset[str]]] = {}


def changed() -> None:
    """Forget cached visibility (a table, share, group or release state changed)."""
    global _generation
    with _lock:
        _generation += 1
        _cache.clear()


def generation() -> int:
    """A number that changes whenever :func:`changed` is called (for other caches to compare)."""
    return _generation


def viewer_settings(conn: psycopg.Connection[Any], viewer: Viewer) -> None:
    """Tell row-level security (TAP_SCHEMA) who the transaction's queries are for."""
    conn.execute(
        "SELECT set_config('dms.viewer', %s, true), set_config('dms.unreleased', %s, true)",
        (viewer.name or "", "on" if viewer.unreleased else "off"),
    )


def hidden_tables(conn: sa.Connection, viewer: Viewer, tables: Iterable[tuple[str, str]]) -> list[str]:
    """The (schema, table) pairs of `tables` the viewer may not read, as schema.table (cached briefly)."""
    pairs = sorted({(s.lower(), t.lower()) for s, t in tables})
    if not pairs:
        return []
    key = ("hidden", str(conn.engine.url), viewer.key, tuple(pairs))
    now = time.monotonic()
    with _lock:
        found = _cache.get(key)
        if found is not None and now - found[0] < CACHE_SECONDS and found[1] == _generation:
            return sorted(found[2])
        current = _generation
    hidden = _hidden(conn, viewer, pairs)
    with _lock:
        if current == _generation:
            if len(_cache) > 10_000:
                _cache.clear()
            _cache[key] = (now, current, frozenset(hidden))
    return hidden


def _hidden(conn: sa.Connection, viewer: Viewer, pairs: list[tuple[str, str]]) -> list[str]:
    rows = conn.execute(
        sa.text(
            "SELECT s, t FROM unnest(CAST(:schemas AS text[]), CAST(:tables AS text[])) AS x(s, t) "
            "WHERE NOT dms.table_visible(s, t, :viewer, :unreleased)"
        ),
        {
            "schemas": [s for s, _ in pairs],
            "tables": [t for _, t in pairs],
            "viewer": viewer.name,
            "unreleased": viewer.unreleased,
        },
    ).all()
    return [f"{s}.{t}" for s, t in rows]


def visible_names(engine: sa.Engine, viewer: Viewer) -> frozenset[str]:
    """The lower-case qualified names of the TAP_SCHEMA tables the viewer may read (cached)."""
    key = (str(engine.url), viewer.key)
    now = time.monotonic()
    with _lock:
        found = _cache.get(key)
        if found is not None and now - found[0] < CACHE_SECONDS and found[1] == _generation:
            return found[2]
        current = _generation
    with engine.connect() as conn:
        names = frozenset(
            name.lower()
            for name in conn.execute(
                sa.text(
                    "SELECT table_name FROM tap_schema.tables WHERE dms.table_visible(schema_name, "
                    "substr(table_name, length(schema_name) + 2), :viewer, :unreleased)"
                ),
                {"viewer": viewer.name, "unreleased": viewer.unreleased},
            ).scalars()
        )
    with _lock:
        if current == _generation:
            _cache[key] = (now, current, names)
    return names
