"""Helpers for the wrong-answer regression tests: deployments on the session's PostgreSQL, small synthetic
catalog files, and a load held just before its commit (to make loads commit out of load-id order, or to
have one in flight while queries run)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from dms.loaders import catalog as catalog_loader
from dms.loaders.samples import write_parquet
from tests.pg_support import control_database, create_database, drop_database, shard_database


def new_database(pg_server: Any, created: list[str], *, migrated: bool = False, shard: bool = False) -> str:
    """A fresh database on the session server (its name is added to `created`, for `drop_databases`); with
    `migrated`, a control database already at head; with `shard`, a PostgreSQL shard's (pg_support.py)."""
    if shard:
        name = shard_database(pg_server, "ans")
    else:
        name = control_database(pg_server, "ans") if migrated else create_database(pg_server, "ans")
    created.append(name)
    return str(pg_server.get_uri(name))


def drop_databases(pg_server: Any, created: list[str]) -> None:
    drop_database(pg_server, *created)


def star_file(directory: Path, name: str, first_id: int, rows: int, seed: int) -> Path:
    """A Parquet file of `rows` stars spread over the whole sky, ids from `first_id`."""
    rng = np.random.default_rng(seed)
    table = pa.table(
        {
            "id": np.arange(first_id, first_id + rows, dtype=np.int64),
            "ra": rng.uniform(0, 360, rows),
            "dec": np.degrees(np.arcsin(rng.uniform(-1, 1, rows))),
            "mag": rng.uniform(10, 20, rows),
        }
    )
    return write_parquet(table, directory / f"{name}.parquet")


class HeldCommit:
    """Holds the commit of the next load of one table until `release()`: the load has written its rows on
    the shards and is 'running' in the registry meanwhile (the real commit runs once released)."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.reached = threading.Event()
        self.released = threading.Event()

    def release(self) -> None:
        self.released.set()


@contextmanager
def held_commit(monkeypatch: pytest.MonkeyPatch, table: str) -> Iterator[HeldCommit]:
    held = HeldCommit(table)
    real = catalog_loader._commit

    def commit(deployment: Any, catalog_table: Any, *args: Any, **kwargs: Any) -> None:
        if catalog_table.name == held.table and not held.released.is_set():
            held.reached.set()
            assert held.released.wait(120), "the held load was never released"
        real(deployment, catalog_table, *args, **kwargs)

    monkeypatch.setattr(catalog_loader, "_commit", commit)
    try:
        yield held
    finally:
        held.release()


def in_thread(target: Any, *args: Any, **kwargs: Any) -> tuple[threading.Thread, list[Any]]:
    """Run `target` in a thread; the list receives its result or the exception it raised."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(target(*args, **kwargs))
        except BaseException as exc:  # handed to the test, which re-raises it
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome
