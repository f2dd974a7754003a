"""The shard backend contract: every shard kind (`dms.shards.KINDS`) stores a table's chunks and answers
per-shard queries the same way, on a real PostgreSQL shard and a real DuckDB/Parquet shard.

One parametrized suite, as lsst-dax-apdb runs one `ApdbTest` against each backend: write a load of real Gaia
DR3 rows (partitioned by the loaders' own HEALPix code), read it back through the backend's `relation` and
`execute`, and compare with numpy/pyarrow on the input rows; resume, discard and drop loads; and the errors a
backend must raise (bad SQL, writes, cancellation, timeouts, a dropped table).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import sqlglot
from sqlglot import exp

from dms import migrate
from dms.config import ShardConfig
from dms.deployment import Deployment
from dms.errors import ShardError
from dms.loaders.partition import healpix_29, nuniq
from dms.loaders.samples import gaia_table
from dms.schema.catalog import CatalogTable, Column, column_type_name
from dms.shards import (
    KINDS,
    ChunkFile,
    ShardBackend,
    ShardCancelled,
    ShardQueryError,
    ShardUnavailable,
    backend_for,
)
from tests.pg_support import control_database, create_database, seed_default_shard, shard_database

CHUNK_ORDER = 2


@dataclass
class Shards:
    deployment: Deployment
    backends: dict[str, ShardBackend]


def _database(server: object, *, migrated: bool = False, shard: bool = False) -> str:
    if shard:
        return server.get_uri(shard_database(server))  # type: ignore[attr-defined,no-any-return]
    name = control_database(server) if migrated else create_database(server)
    return server.get_uri(name)  # type: ignore[attr-defined,no-any-return]


@pytest.fixture(scope="module")
def shards(pg_server: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shards]:
    """A deployment (control database on the session server) with one shard of every kind, migrated."""
    deployment = Deployment.create(
        tmp_path_factory.mktemp("contract"), database_url=_database(pg_server, migrated=True)
    )
    seed_default_shard(deployment, pg_server)
    deployment.add_shard(ShardConfig(name="pg", kind="postgres", url=_database(pg_server, shard=True)))
    list(migrate.upgrade(deployment))
    backends = {b.kind: b for b in deployment.shards()}
    assert set(backends) == set(KINDS), "the deployment must have one shard of every registered kind"
    yield Shards(deployment, backends)
    for backend in backends.values():
        backend.close()
    deployment.stop()


@pytest.fixture(params=sorted(KINDS))
def backend(request: pytest.FixtureRequest, shards: Shards) -> ShardBackend:
    return shards.backends[request.param]


def _rows(count: int, seed: int = 3) -> pa.Table:
    """`count` real Gaia DR3 stars with the columns the loaders add (sorted by chunk and position), a text
    column, and the first 5% of each chunk's rows marked as overlap copies."""
    gaia = gaia_table()
    take = np.sort(np.random.default_rng(seed).choice(gaia.num_rows, count, replace=False))
    rows = gaia.take(pa.array(take))
    hp = healpix_29(rows["ra"].to_numpy(), rows["dec"].to_numpy())
    chunk = nuniq(np.full(len(hp), CHUNK_ORDER), hp >> (2 * (29 - CHUNK_ORDER)))
    g = rows["phot_g_mean_mag"].to_numpy()
    label = np.where(g < 7, "bright", np.where(g < 9, "mid", "faint 'quoted' \"text\""))
    rows = rows.append_column("label", pa.array(label, pa.string()))
    rows = rows.append_column("_healpix_29", pa.array(hp, pa.int64()))
    rows = rows.append_column("_chunk", pa.array(chunk, pa.int64()))
    order = np.lexsort((hp, chunk))
    rows = rows.take(pa.array(order))
    chunk_sorted = rows["_chunk"].to_numpy()
    first = np.r_[True, chunk_sorted[1:] != chunk_sorted[:-1]]
    position = np.arange(len(chunk_sorted)) - np.maximum.accumulate(np.where(first, np.arange(len(first)), 0))
    return rows.append_column("_overlap", pa.array(position % 20 == 1))


def _table(rows: pa.Table, kind: str, name: str) -> CatalogTable:
    columns = tuple(
        Column(f.name, column_type_name(f.type)) for f in rows.schema if not f.name.startswith("_")
    )
    return CatalogTable(
        name=f"contract.{name}",
        role="director",
        columns=columns,
        storage_kind=kind,
        chunk_order=CHUNK_ORDER,
        id_column="source_id",
        ra_column="ra",
        dec_column="dec",
    )


def _query(
    backend: ShardBackend, table: CatalogTable, files: list[ChunkFile], load_ids: list[int], sql: str
) -> pa.Table:
    """`sql` (PostgreSQL, over a table called `t`) run on the backend over the given chunk files, as the
    engine's per-shard SQL does: the backend's relation, and the load filter a shared table needs."""
    query = sqlglot.parse_one(sql, read="postgres")
    assert isinstance(query, exp.Select)
    relation = backend.relation(table, [f.path for f in files])
    if relation is None:
        return pa.table({})
    relation.set("alias", exp.TableAlias(this=exp.to_identifier("t")))
    next(query.find_all(exp.Table)).replace(relation)
    if backend.shared_table:
        loads = [exp.Literal.number(i) for i in load_ids]
        chunks = [exp.Literal.number(int(nuniq(f.chunk_order, f.chunk_id))) for f in files]
        query.where(exp.column("_load_id", "t").isin(*loads), copy=False)
        query.where(exp.column("_chunk", "t").isin(*chunks), copy=False)
    return backend.execute(query.sql(backend.dialect), timeout=60, cancel=None)


def _fresh(backend: ShardBackend, rows: pa.Table) -> CatalogTable:
    return _table(rows, backend.kind, f"gaia_{uuid.uuid4().hex[:8]}")


def test_every_configured_kind_has_a_backend_and_unknown_kinds_are_named(tmp_path: Path) -> None:
    config = ShardConfig(name="x", kind="duckdb", path="x.duckdb")
    assert backend_for(config, tmp_path).kind == "duckdb"
    bogus = config.model_copy(update={"kind": "mongodb"})
    with pytest.raises(ShardError, match=r"'x' has unknown kind 'mongodb'; known kinds: duckdb, postgres"):
        backend_for(bogus, tmp_path)


def test_write_load_reports_each_chunk_and_its_overlap(backend: ShardBackend) -> None:
    rows = _rows(4_000)
    table = _fresh(backend, rows)
    assert not backend.has_table(table)
    files = backend.write_load(table, 1, rows)
    assert backend.has_table(table)
    chunk = rows["_chunk"].to_numpy()
    overlap = rows["_overlap"].to_numpy()
    uniq, counts = np.unique(chunk, return_counts=True)
    assert sorted(int(nuniq(f.chunk_order, f.chunk_id)) for f in files) == uniq.tolist()
    assert all(f.chunk_order == CHUNK_ORDER for f in files)
    expected = {int(u): (int(c), int(overlap[chunk == u].sum())) for u, c in zip(uniq, counts, strict=True)}
    for f in files:
        total, copies = expected[int(nuniq(f.chunk_order, f.chunk_id))]
        assert (f.row_count, f.overlap_row_count) == (total - copies, copies)


def test_stored_rows_read_back_exactly(backend: ShardBackend) -> None:
    rows = _rows(3_000)
    table = _fresh(backend, rows)
    files = backend.write_load(table, 7, rows)
    got = _query(
        backend,
        table,
        files,
        [7],
        "SELECT source_id, ra, dec, phot_g_mean_mag, label, _healpix_29, _chunk, _overlap FROM t",
    )
    got = got.sort_by("source_id")
    want = rows.sort_by("source_id")
    assert got["source_id"].to_pylist() == want["source_id"].to_pylist()
    for name in ("ra", "dec", "_healpix_29", "_chunk", "_overlap", "label"):
        assert got[name].to_pylist() == want[name].to_pylist(), name
    # float32 magnitudes: PostgreSQL stores them as double precision, DuckDB as float; the values are equal
    np.testing.assert_array_equal(
        got["phot_g_mean_mag"].to_numpy().astype(np.float32), want["phot_g_mean_mag"].to_numpy()
    )


def test_chunk_subsets_aggregates_and_filters(backend: ShardBackend) -> None:
    rows = _rows(5_000, seed=11)
    table = _fresh(backend, rows)
    files = backend.write_load(table, 1, rows)
    some = files[::3]
    wanted = np.isin(rows["_chunk"].to_numpy(), [int(nuniq(f.chunk_order, f.chunk_id)) for f in some])
    sub = rows.filter(pa.array(wanted & ~rows["_overlap"].to_numpy()))
    got = _query(
        backend,
        table,
        some,
        [1],
        "SELECT COUNT(*) AS n, SUM(ra) AS s, MIN(source_id) AS lo, MAX(dec) AS hi FROM t WHERE NOT _overlap",
    ).to_pylist()[0]
    assert got["n"] == sub.num_rows
    assert got["s"] == pytest.approx(float(np.sum(sub["ra"].to_numpy())), rel=1e-12)
    assert got["lo"] == pc.min(sub["source_id"]).as_py()
    assert got["hi"] == pc.max(sub["dec"]).as_py()
    band_sql = "SELECT source_id FROM t WHERE ra BETWEEN 100 AND 120 AND dec > 0"
    band = _query(backend, table, files, [1], band_sql)
    mask = (rows["ra"].to_numpy() >= 100) & (rows["ra"].to_numpy() <= 120) & (rows["dec"].to_numpy() > 0)
    assert sorted(band["source_id"].to_pylist()) == sorted(rows["source_id"].to_numpy()[mask].tolist())


def test_repeated_write_of_a_load_stores_its_rows_once(backend: ShardBackend) -> None:
    rows = _rows(2_000, seed=5)
    table = _fresh(backend, rows)
    backend.write_load(table, 3, rows)
    files = backend.write_load(table, 3, rows)  # a resumed load
    count = _query(backend, table, files, [3], "SELECT COUNT(*) AS n FROM t")
    assert count["n"].to_pylist() == [rows.num_rows]


def test_discard_removes_only_that_load(backend: ShardBackend) -> None:
    rows = _rows(2_000, seed=9)
    table = _fresh(backend, rows)
    first = backend.write_load(table, 1, rows)
    part = rows.slice(0, 700)
    second = backend.write_load(table, 2, part)
    backend.discard_load(table, 1)
    kept = _query(backend, table, second, [2], "SELECT COUNT(*) AS n FROM t")
    assert kept["n"].to_pylist() == [part.num_rows]
    try:
        gone = _query(backend, table, first, [1], "SELECT COUNT(*) AS n FROM t")
    except ShardQueryError:  # the load's files are gone
        pass
    else:
        assert gone["n"].to_pylist() == [0]
    backend.discard_load(table, 1)  # discarding again is harmless


def test_drop_table_removes_every_load(backend: ShardBackend) -> None:
    rows = _rows(1_000, seed=13)
    table = _fresh(backend, rows)
    files = backend.write_load(table, 1, rows)
    backend.drop_table(table)
    assert not backend.has_table(table)
    with pytest.raises(ShardQueryError, match=rf"shard {backend.name!r}"):
        _query(backend, table, files, [1], "SELECT COUNT(*) AS n FROM t")
    backend.drop_table(table)  # dropping a table that is gone is harmless


def test_shipped_tables_join_the_shards_rows(backend: ShardBackend) -> None:
    rows = _rows(2_000, seed=17)
    table = _fresh(backend, rows)
    files = backend.write_load(table, 1, rows)
    wanted = rows["source_id"].to_numpy()[::50]
    relation = backend.relation(table, [f.path for f in files])
    assert relation is not None
    relation.set("alias", exp.TableAlias(this=exp.to_identifier("t")))
    query = exp.select("t.source_id").from_(relation).join("_up_ids AS u", on="u.id = t.source_id")
    if backend.shared_table:
        query = query.where("t._load_id = 1")
    shipped = {"_up_ids": pa.table({"id": pa.array(wanted, pa.int64())})}
    got = backend.execute(query.sql(backend.dialect), timeout=60, cancel=None, tables=shipped)
    assert sorted(got["source_id"].to_pylist()) == sorted(wanted.tolist())


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELEC 1", r"syntax error|Parser Error"),
        ("SELECT no_such_column FROM (SELECT 1 AS x) AS s", r"no_such_column"),
        ("CREATE TABLE contract_written (x integer)", r"read-only|read only|Permission|permission"),
    ],
)
def test_bad_or_writing_queries_fail_naming_the_shard(backend: ShardBackend, sql: str, message: str) -> None:
    with pytest.raises(ShardQueryError, match=rf"shard {backend.name!r}: .*({message})"):
        backend.execute(sql, timeout=30, cancel=None)
    # the backend answers the next query all the same
    assert backend.execute("SELECT 41 + 1 AS x", timeout=30, cancel=None)["x"].to_pylist() == [42]


LONG = "SELECT SUM(x % 7) AS s FROM generate_series(1, 50000000000) AS g(x)"


def test_a_timeout_cancels_the_shard_query(backend: ShardBackend) -> None:
    sql = sqlglot.transpile(LONG, read="postgres", write=backend.dialect)[0]
    with pytest.raises(ShardCancelled):  # the sum itself would take hours
        backend.execute(sql, timeout=0.5, cancel=None)


def test_a_cancel_event_stops_the_shard_query(backend: ShardBackend) -> None:
    sql = sqlglot.transpile(LONG, read="postgres", write=backend.dialect)[0]
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    with pytest.raises(ShardCancelled):
        backend.execute(sql, timeout=None, cancel=cancel)
    assert backend.execute("SELECT 1 AS x", timeout=30, cancel=None)["x"].to_pylist() == [1]


def test_close_releases_connections_and_the_backend_reconnects(backend: ShardBackend) -> None:
    assert backend.execute("SELECT 2 AS x", timeout=30, cancel=None)["x"].to_pylist() == [2]
    backend.close()
    assert backend.execute("SELECT 3 AS x", timeout=30, cancel=None)["x"].to_pylist() == [3]


def test_an_unreachable_shard_is_unavailable(backend: ShardBackend, tmp_path: Path) -> None:
    """A server that is not there (PostgreSQL) or a database file that is gone (DuckDB)."""
    location = (
        {"url": "postgresql://dms@127.0.0.1:1/nowhere"}
        if backend.config.url
        else {"path": str(tmp_path / "gone.duckdb")}
    )
    gone = backend_for(backend.config.model_copy(update=location), backend.data_dir)
    try:
        with pytest.raises(ShardUnavailable, match=rf"shard {backend.name!r}"):
            gone.execute("SELECT 1 AS x", timeout=30, cancel=None)
    finally:
        gone.close()
