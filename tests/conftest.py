"""Shared fixtures: one real embedded PostgreSQL (pgserver) per test session, real DuckDB."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import psycopg
import pytest

# Support modules that test files import helpers from and also load as fixture plugins: rewrite their asserts
# before the first import (else pytest warns that it cannot).
pytest.register_assert_rewrite(
    "apdb_support",
    "backbone_support",
    "batch_support",
    "drp_support",
    "feed_support",
    "minibroker_support",
    "night_support",
    "prompt_support",
    "portal_support",
)


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A PostgreSQL 16 server from pgserver, started once for the whole session and deleted after it."""
    import pgserver

    # Unix socket paths are limited to ~107 bytes: keep the data directory short.
    pgdata = Path(tmp_path_factory.mktemp("pg", numbered=True))
    server = pgserver.get_server(pgdata, cleanup_mode="delete")
    yield server
    server.cleanup()


@pytest.fixture()
def pg_database(pg_server: object) -> Iterator[str]:
    """A fresh, empty database on the session server; yields its libpq URI and drops it afterwards."""
    admin_uri = pg_server.get_uri()  # type: ignore[attr-defined]
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield pg_server.get_uri(name)  # type: ignore[attr-defined]
    finally:
        with psycopg.connect(admin_uri, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture()
def pg_conn(pg_database: str) -> Iterator[psycopg.Connection]:
    """An autocommit psycopg connection to a fresh database."""
    with psycopg.connect(pg_database, autocommit=True) as conn:
        yield conn


@pytest.fixture()
def duck_conn() -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB connection."""
    conn = duckdb.connect()
    try:
        yield conn
    finally:
        conn.close()
