"""Evaluating every user's filters on a visit's alert batch, in the database, each with its own time limit.

The visit's alerts are first copied, with just the columns the filters read, into a temporary table of the
reader role (one read of the APDB through its visit index). All filters then run in one READ ONLY transaction
as `dms_reader` (query/reader.py): first all together in one scan of that table (a combined statement
limited to one filter's time); if it fails or runs too long, one SQL statement per filter, each in a
savepoint with its own ``statement_timeout``: a filter that runs too long (or fails, e.g. a division by
zero) is stopped, rolled back to its savepoint and reported to its owner in `minibroker.run`; the other
filters are unaffected. The matches are then written, as the deployment's login, in a transaction of their
own (idempotent: evaluating a visit again adds no duplicates).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from dms.query.reader import READER_ROLE, drop_temp_tables, reader_transaction
from dms.query.sqlcompose import ident, setting, statement
from dms.services.minibroker.errors import FilterError
from dms.services.minibroker.filters import (
    BATCH_TABLE,
    CompiledFilter,
    batch_query,
    batch_table_sql,
    combined_query,
    compile_filter,
)

DEFAULT_TIMEOUT_S = 10.0
"""Time limit of one filter on one visit (Lasair's cap)."""


@dataclass
class FilterRun:
    """One filter's evaluation on one visit: its matches (alert, DiaObject, selected values) or why not."""

    filter_id: int
    owner: str
    visit: int
    rows: list[tuple[int, int | None, dict[str, Any]]] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class FilterSpec:
    """What the evaluator needs of a stored filter."""

    filter_id: int
    owner: str
    where_text: str
    select_text: str = ""


def load_specs(conn: psycopg.Connection[Any], owner: str | None = None) -> list[FilterSpec]:
    """The active filters (of one owner, or of everybody)."""
    rows = conn.execute(
        "SELECT filter_id, owner, where_text, select_text FROM minibroker.filter WHERE active "
        "AND (%(o)s::text IS NULL OR owner = %(o)s) ORDER BY filter_id",
        {"o": owner},
    ).fetchall()
    return [FilterSpec(int(r[0]), r[1], r[2], r[3]) for r in rows]


def _context(conn: psycopg.Connection[Any]) -> tuple[dict[str, set[str]], bool]:
    lists: dict[str, set[str]] = {}
    for owner, name in conn.execute("SELECT DISTINCT owner, watchlist FROM minibroker.watch"):
        lists.setdefault(owner, set()).add(name)
    vector = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() is not None
    conn.commit()
    return lists, vector


def run_filters(
    conn: psycopg.Connection[Any], specs: list[FilterSpec], visit: int, timeout_s: float = DEFAULT_TIMEOUT_S
) -> list[FilterRun]:
    """Evaluate `specs` on the DiaSources of `visit`; nothing is written."""
    lists, vector = _context(conn)
    runs: list[FilterRun] = []
    queries: list[tuple[FilterRun, CompiledFilter]] = []
    columns: set[tuple[str, str]] = set()
    for spec in specs:
        run = FilterRun(spec.filter_id, spec.owner, int(visit))
        runs.append(run)
        try:
            compiled = _compiled(
                spec.where_text, spec.select_text, spec.owner, frozenset(lists.get(spec.owner, ())), vector
            )
            queries.append((run, compiled))
            columns |= compiled.columns
        except FilterError as exc:
            run.error = f"filter refused: {exc}"
    if not queries:
        return runs
    _create_batch(conn, int(visit), columns)
    try:
        with reader_transaction(conn, timeout=None):
            if not _run_combined(conn, queries, timeout_s):
                for run, compiled in queries:
                    _run_one(conn, run, batch_query(compiled), timeout_s)
    finally:
        drop_temp_tables(conn)
    return runs


@lru_cache(maxsize=4096)
def _compiled(
    where_text: str, select_text: str, owner: str, watchlists: frozenset[str], vector: bool
) -> CompiledFilter:
    """Filters are compiled once and reused visit after visit (the same text, owner and watch lists); the
    compiled trees are only copied from, never changed."""
    return compile_filter(where_text, select_text, owner=owner, watchlists=set(watchlists), has_vector=vector)


def _create_batch(conn: psycopg.Connection[Any], visit: int, columns: set[tuple[str, str]]) -> None:
    """The visit's alerts, with the DiaObject and feature columns the filters use, as a temporary table of the
    reader (read once through the APDB's visit index, then scanned by each filter)."""
    with conn.transaction():
        conn.execute(statement("SET LOCAL ROLE {role}", role=READER_ROLE))
        conn.execute(batch_table_sql(visit, columns).encode())
        # watch lists are a few positions: the planner can then probe the batch by declination from each
        conn.execute(statement('CREATE INDEX ON {table} ("dec")', table=ident(BATCH_TABLE)))
        conn.execute(statement("ANALYZE {table}", table=ident(BATCH_TABLE)))


def _run_combined(
    conn: psycopg.Connection[Any], queries: list[tuple[FilterRun, CompiledFilter]], timeout_s: float
) -> bool:
    """All filters in one scan, limited to one filter's time; False (nothing recorded) when it fails or runs
    too long, and the filters are then run one by one, so only the culprit is stopped."""
    start = time.perf_counter()
    try:
        with conn.transaction():
            conn.execute(setting("statement_timeout", max(1, int(timeout_s * 1000))))
            with conn.cursor() as cur:
                cur.execute(combined_query([c for _, c in queries]))
                row = cur.fetchone()
    except psycopg.Error:
        return False
    assert row is not None
    share = (time.perf_counter() - start) / len(queries)
    position = 0
    for run, compiled in queries:
        ids, objects = row[position] or [], row[position + 1] or []
        names = [e.alias_or_name for e in compiled.select]
        values = [row[position + 2 + j] or [] for j in range(len(names))]
        position += 2 + len(names)
        if names:
            picked = [_selected(names, tuple(v[k] for v in values)) for k in range(len(ids))]
        else:
            picked = [{} for _ in ids]
        run.rows = list(zip(ids, objects, picked, strict=True))
        run.seconds = share
    return True


def _run_one(conn: psycopg.Connection[Any], run: FilterRun, query: str, timeout_s: float) -> None:
    start = time.perf_counter()
    try:
        with conn.transaction():
            conn.execute(setting("statement_timeout", max(1, int(timeout_s * 1000))))
            with conn.cursor() as cur:
                cur.execute(query.encode())
                names = [d.name for d in cur.description or []][2:]
                run.rows = [(int(r[0]), r[1], _selected(names, r[2:])) for r in cur.fetchall()]
    except psycopg.errors.QueryCanceled:
        run.error = f"stopped: ran longer than the limit of {timeout_s:g} s per filter"
    except psycopg.Error as exc:
        detail = exc.diag.message_primary or str(exc)
        run.error = f"failed in the database: {detail}"
    run.seconds = time.perf_counter() - start


def _selected(names: list[str], values: tuple[Any, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in zip(names, values, strict=True):
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        elif not isinstance(value, str | int | float | bool | type(None)):
            value = json.loads(json.dumps(value, default=str))
        out[name] = value
    return out


def store_runs(conn: psycopg.Connection[Any], runs: list[FilterRun]) -> int:
    """Record each run and its matches (the alert id is the packet's reference); returns matches added.
    Matches are copied into a staging table, then inserted once (a visit evaluated again adds nothing)."""
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO minibroker.run (filter_id, owner, visit, matches, seconds, error) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            [(r.filter_id, r.owner, r.visit, len(r.rows), r.seconds, r.error) for r in runs],
        )
        cur.execute(
            "CREATE TEMP TABLE minibroker_new_match (filter_id bigint, owner text, visit bigint, "
            "alert_id bigint, dia_object_id bigint, selected jsonb) ON COMMIT DROP"
        )
        with cur.copy(
            "COPY minibroker_new_match (filter_id, owner, visit, alert_id, dia_object_id, selected) "
            "FROM STDIN"
        ) as copy:
            for r in runs:
                for alert, obj, selected in r.rows:
                    copy.write_row((r.filter_id, r.owner, r.visit, alert, obj, Jsonb(selected)))
        cur.execute(
            "INSERT INTO minibroker.match (filter_id, owner, visit, alert_id, dia_object_id, selected) "
            "SELECT filter_id, owner, visit, alert_id, dia_object_id, selected FROM minibroker_new_match "
            "ORDER BY filter_id, alert_id ON CONFLICT DO NOTHING"
        )
        return int(cur.rowcount)


def evaluate_visit(
    conninfo: str, visit: int, *, timeout_s: float = DEFAULT_TIMEOUT_S, owner: str | None = None
) -> list[FilterRun]:
    """Run every active filter (or one owner's) on `visit`'s alerts and store the matches and the runs."""
    with psycopg.connect(conninfo) as conn:
        runs = run_filters(conn, load_specs(conn, owner), visit, timeout_s)
        store_runs(conn, runs)
    return runs
