"""Shared fixtures: one real embedded PostgreSQL (pgserver) per test session, real DuckDB."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import duckdb
import psycopg
import pytest
from hypothesis import settings

from tests import hypothesis_profiles
from tests.pg_support import database

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
hypothesis_profiles.register()


def pytest_configure(config: pytest.Config) -> None:
    """Load the hypothesis profile before the test modules (whose settings read it) are imported."""
    markexpr = config.getoption("markexpr", "") or ""
    selects_slow = "slow" in markexpr and "not slow" not in markexpr
    default = hypothesis_profiles.FULL if selects_slow else hypothesis_profiles.NORMAL
    settings.load_profile(os.environ.get("DMS_HYPOTHESIS_PROFILE", default))


@pytest.hookimpl(tryfirst=True)  # before the -m selection
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """At full count, the property tests belong to the slow suites too (`-m slow` runs them again)."""
    if settings.get_current_profile_name() != hypothesis_profiles.FULL:
        return
    for item in items:
        if getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
            item.add_marker(pytest.mark.slow)


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
    with database(pg_server) as uri:
        yield uri


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
