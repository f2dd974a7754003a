"""Each user's filters, watch lists and matches in `minibroker.*`: each read and write is scoped to its owner.

A caller names a filter by id; one that is not theirs is answered exactly as one that does not exist, so a
user learns nothing of others' filters. Filters are checked (compiled) before they are stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from dms.services.minibroker.errors import FilterError, MinibrokerError, NotYoursError
from dms.services.minibroker.filters import compile_filter

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
MAX_WATCH_ENTRIES = 100_000


@dataclass(frozen=True)
class StoredFilter:
    """A user's filter as stored."""

    filter_id: int
    owner: str
    name: str
    select_text: str
    where_text: str
    active: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "filter_id": self.filter_id,
            "name": self.name,
            "select": self.select_text,
            "where": self.where_text,
            "active": self.active,
        }


def has_vector(conn: sa.Connection) -> bool:
    """Whether pgvector is installed (feature_distance needs it)."""
    return conn.execute(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'vector'")).first() is not None


def watchlist_names(conn: sa.Connection, owner: str) -> set[str]:
    rows = conn.execute(
        sa.text("SELECT DISTINCT watchlist FROM minibroker.watch WHERE owner = :o"), {"o": owner}
    )
    return {r[0] for r in rows}


def _check_name(name: str, what: str) -> None:
    if not NAME.match(name):
        raise MinibrokerError(
            f"{what} name {name!r} is invalid: start with a letter; letters, digits, '_', '.', '-'; "
            "at most 64"
        )


def add_filter(conn: sa.Connection, owner: str, name: str, where_text: str, select_text: str = "") -> int:
    """Check and store a filter of `owner`; returns its id. FilterError when it is refused."""
    _check_name(name, "filter")
    compile_filter(
        where_text,
        select_text,
        owner=owner,
        watchlists=watchlist_names(conn, owner),
        has_vector=has_vector(conn),
    )
    if conn.execute(
        sa.text("SELECT 1 FROM minibroker.filter WHERE owner = :o AND name = :n"), {"o": owner, "n": name}
    ).first():
        raise FilterError(f"you already have a filter named {name!r} (remove it first)", offending=name)
    return int(
        conn.execute(
            sa.text(
                "INSERT INTO minibroker.filter (owner, name, select_text, where_text) "
                "VALUES (:o, :n, :s, :w) RETURNING filter_id"
            ),
            {"o": owner, "n": name, "s": select_text, "w": where_text},
        ).scalar_one()
    )


def list_filters(conn: sa.Connection, owner: str | None) -> list[StoredFilter]:
    """The filters of `owner` (None: every active filter, for the evaluator only)."""
    query = "SELECT filter_id, owner, name, select_text, where_text, active FROM minibroker.filter"
    if owner is None:
        rows = conn.execute(sa.text(query + " WHERE active ORDER BY filter_id"))
    else:
        rows = conn.execute(sa.text(query + " WHERE owner = :o ORDER BY filter_id"), {"o": owner})
    return [StoredFilter(*row) for row in rows]


def get_filter(conn: sa.Connection, owner: str, filter_id: int) -> StoredFilter:
    for stored in list_filters(conn, owner):
        if stored.filter_id == int(filter_id):
            return stored
    raise NotYoursError(f"you have no filter {filter_id}")


def remove_filter(conn: sa.Connection, owner: str, filter_id: int) -> None:
    """Remove a filter of `owner` with its matches; another user's filter is 'no filter N'."""
    done = conn.execute(
        sa.text("DELETE FROM minibroker.filter WHERE owner = :o AND filter_id = :i"),
        {"o": owner, "i": int(filter_id)},
    )
    if done.rowcount == 0:
        raise NotYoursError(f"you have no filter {filter_id}")


def add_watch(
    conn: sa.Connection, owner: str, watchlist: str, entries: list[tuple[float, float, float, str]]
) -> int:
    """Add positions (ra, dec, radius in arcsec, name) to a watch list of `owner` (created on first use)."""
    _check_name(watchlist, "watch list")
    if not entries or len(entries) > MAX_WATCH_ENTRIES:
        raise MinibrokerError(f"give 1 to {MAX_WATCH_ENTRIES} watch-list positions, not {len(entries)}")
    rows = []
    for ra, dec, radius, label in entries:
        if not (0 <= ra < 360 and -90 <= dec <= 90 and 0 < radius <= 36000):
            raise MinibrokerError(
                f'watch-list position ({ra}, {dec}, {radius}"): ra must be in [0, 360), dec in [-90, 90] '
                "and the radius in (0, 36000] arcsec"
            )
        rows.append({"o": owner, "w": watchlist, "n": str(label)[:128], "r": ra, "d": dec, "x": radius})
    conn.execute(
        sa.text(
            "INSERT INTO minibroker.watch (owner, watchlist, entry_name, ra, dec, radius_arcsec) "
            "VALUES (:o, :w, :n, :r, :d, :x)"
        ),
        rows,
    )
    return len(rows)


def list_watchlists(conn: sa.Connection, owner: str) -> dict[str, int]:
    """The watch lists of `owner` with their number of positions."""
    rows = conn.execute(
        sa.text(
            "SELECT watchlist, count(*) FROM minibroker.watch WHERE owner = :o GROUP BY watchlist "
            "ORDER BY watchlist"
        ),
        {"o": owner},
    )
    return {r[0]: int(r[1]) for r in rows}


def list_matches(
    conn: sa.Connection, owner: str, *, after: int = 0, filter_id: int | None = None, limit: int = 10_000
) -> list[dict[str, Any]]:
    """The feed of `owner`: matches after sequence number `after`, oldest first (resume from the last seq)."""
    query = (
        "SELECT m.seq, m.filter_id, f.name, m.visit, m.alert_id, m.dia_object_id, m.selected, m.matched_at "
        "FROM minibroker.match m JOIN minibroker.filter f USING (filter_id) "
        "WHERE m.owner = :o AND m.seq > :a AND (CAST(:f AS bigint) IS NULL OR m.filter_id = :f) "
        "ORDER BY m.seq LIMIT :l"
    )
    rows = conn.execute(
        sa.text(query),
        {"o": owner, "a": int(after), "f": filter_id, "l": int(limit)},
    ).mappings()
    return [{**row, "matched_at": row["matched_at"].isoformat()} for row in rows]


def list_runs(conn: sa.Connection, owner: str, limit: int = 100) -> list[dict[str, Any]]:
    """The latest evaluations of `owner`'s filters: matches, seconds, and the error of a filter stopped."""
    rows = conn.execute(
        sa.text(
            "SELECT filter_id, visit, matches, seconds, error, ran_at FROM minibroker.run WHERE owner = :o "
            "ORDER BY ran_at DESC, filter_id LIMIT :l"
        ),
        {"o": owner, "l": int(limit)},
    ).mappings()
    return [{**row, "ran_at": row["ran_at"].isoformat()} for row in rows]
