"""The director index on disk (dms.query.director) and the streamed load that writes it.

Lookups are checked against DuckDB over one unpartitioned copy of the same (id, chunk) rows; the streamed
load, forced to spill its rows and sort its index out of core, against the input file read by DuckDB."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import healpy
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from dms import migrate
from dms.config import ShardConfig
from dms.deployment import Deployment
from dms.loaders import catalog, catalog_stream
from dms.loaders.catalog import TableOptions, load_files
from dms.loaders.catalog_errors import LoadError
from dms.loaders.catalog_stream import IndexSpool
from dms.loaders.samples import gaia_table
from dms.query.director import DirectorIndex
from dms.query.engine import QueryEngine
from tests.answers_support import drop_databases, new_database
from tests.pg_support import seed_default_shard


@pytest.fixture(scope="module")
def gaia() -> pa.Table:
    return gaia_table().select(["source_id", "ra", "dec", "phot_g_mean_mag"])


def _index_rows(gaia: pa.Table) -> pa.Table:
    pixels = healpy.ang2pix(2**4, gaia["ra"].to_numpy(), gaia["dec"].to_numpy(), nest=True, lonlat=True)
    return pa.table(
        {
            "id": gaia["source_id"].cast(pa.int64()),
            "chunk": (4 * 4**4 + pixels).astype(np.int64),
            "healpix_29": np.zeros(gaia.num_rows, np.int64),
        }
    )


def _spooled(rows: pa.Table, directory: Path, memory_rows: int, pieces: int = 7) -> Path:
    spool = IndexSpool(directory / "spool", unique=True, memory_rows=memory_rows)
    for piece in np.array_split(np.random.default_rng(1).permutation(rows.num_rows), pieces):
        spool.add(rows.take(pa.array(piece)))
    path = directory / "index.parquet"
    assert spool.write(path, "source_id")
    return path


def test_lookups_match_an_unpartitioned_copy(gaia: pa.Table, tmp_path: Path) -> None:
    rows = _index_rows(gaia)
    half = rows.num_rows // 2
    files = [  # two loads: one sorted in memory, one out of core by DuckDB
        _spooled(rows.slice(0, half), tmp_path / "a", memory_rows=10**9),
        _spooled(rows.slice(half), tmp_path / "b", memory_rows=50_000),
    ]
    for path in files:
        ids = pq.read_table(path)["id"].to_numpy()
        assert (np.diff(ids) > 0).all() and len(ids) in (half, rows.num_rows - half)
    index = DirectorIndex([str(f) for f in files])
    groups = sum(pq.ParquetFile(f).metadata.num_row_groups for f in files)
    rng = np.random.default_rng(5)
    present = rows["id"].to_numpy()
    duck = duckdb.connect()
    duck.register("truth", rows)
    for size in (1, 3, 12):
        wanted = np.concatenate([rng.choice(present, size), rng.integers(1, 2**62, 2)])
        truth = duck.execute("SELECT DISTINCT chunk FROM truth WHERE list_contains(?, id)", [wanted.tolist()])
        before = index.groups_read
        assert index.chunks_of(wanted.tolist()) == {int(c) for (c,) in truth.fetchall()}
        read = index.groups_read - before
        assert read <= 2 * len(wanted) and read < groups  # only the groups that can hold the ids
    assert index.chunks_of([]) == set() and DirectorIndex([]).chunks_of([1, 2]) == set()


@pytest.mark.parametrize("memory_rows", [10**9, 1000])
def test_duplicate_ids_are_refused(gaia: pa.Table, tmp_path: Path, memory_rows: int) -> None:
    rows = _index_rows(gaia.slice(0, 5000))
    spool = IndexSpool(tmp_path / "spool", unique=True, memory_rows=memory_rows)
    spool.add(rows)
    spool.add(rows.slice(100, 3))
    with pytest.raises(LoadError, match="3 duplicate values of source_id"):
        spool.write(tmp_path / "index.parquet", "source_id")


@pytest.fixture()
def deployment(pg_server: Any, tmp_path: Path) -> Iterator[Deployment]:
    created: list[str] = []
    deployment = Deployment.create(
        tmp_path / "dep", database_url=new_database(pg_server, created, migrated=True)
    )
    seed_default_shard(deployment, pg_server)
    try:
        migrate.upgrade(deployment)
        yield deployment
    finally:
        deployment.dispose()
        drop_databases(pg_server, created)


def test_a_spilled_streamed_load_answers_as_the_file(
    gaia: pa.Table, tmp_path: Path, deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "gaia.parquet"
    pq.write_table(gaia, path, row_group_size=50_000)
    monkeypatch.setattr(catalog_stream, "BATCH_ROWS", 30_000)  # 17 batches
    monkeypatch.setattr(catalog, "SPOOL_MEMORY_BYTES", 1 << 20)  # spill after ~1 MB of rows
    monkeypatch.setattr(catalog_stream, "INDEX_MEMORY_ROWS", 100_000)  # the index sorted by DuckDB
    options = TableOptions(ra="ra", dec="dec", id="source_id", chunk_order=2, max_chunk_rows=60_000)
    result = load_files(deployment, "gaia", [path], create=options, progress=False)
    assert result.rows == gaia.num_rows and result.chunks > 12  # split adaptively from 12 order-2 chunks
    spool = deployment.data_dir / "catalog" / "_spool"
    assert list(spool.iterdir()) == []  # the spill files are gone
    duck = duckdb.connect()
    truth = duck.execute(
        "SELECT count(*), sum(phot_g_mean_mag), count(DISTINCT source_id) FROM read_parquet(?)", [str(path)]
    ).fetchone()
    rng = np.random.default_rng(3)
    ids = rng.choice(gaia["source_id"].to_numpy(), 25, replace=False).tolist()
    with QueryEngine(deployment) as engine:
        sql = "SELECT COUNT(*) AS n, SUM(phot_g_mean_mag) AS s, COUNT(DISTINCT source_id) AS d"
        sql += " FROM cat.gaia"
        got = engine.execute(sql).table.to_pylist()[0]
        assert (got["n"], got["d"]) == (truth[0], truth[2]) and got["s"] == pytest.approx(truth[1], rel=1e-12)
        id_list = ", ".join(str(i) for i in ids)
        found = engine.execute(f"SELECT source_id, ra FROM cat.gaia WHERE source_id IN ({id_list})").table
    expected = duck.execute(
        "SELECT source_id, ra FROM read_parquet(?) WHERE list_contains(?, source_id) ORDER BY source_id",
        [str(path), ids],
    ).fetchall()
    assert sorted(zip(found["source_id"].to_pylist(), found["ra"].to_pylist(), strict=True)) == expected
    with deployment.connect() as conn:
        stored = conn.execute(sa.text("SELECT sum(row_count) FROM dms.chunk_file")).scalar_one()
    assert stored == gaia.num_rows
    again = load_files(deployment, "gaia", [path], progress=False)
    assert again.skipped and again.rows == 0  # the checksum stops a repeated load before any row is read


def test_appends_keep_one_index_and_refuse_ids_already_loaded(
    gaia: pa.Table, tmp_path: Path, deployment: Deployment
) -> None:
    """Four loads of one director (ids drawn at random, so every load's ids span the others' range) leave one
    index file whose lookups read one row group per id and agree with the shards' own rows; a load that
    repeats ids of an earlier one is refused and leaves the table as it was."""
    deployment.add_shard(ShardConfig(name="shard1", kind="duckdb", path="catalog/shard1.duckdb"))
    migrate.upgrade(deployment)
    parts = np.array_split(np.random.default_rng(7).permutation(gaia.num_rows), 4)
    paths = []
    for i, part in enumerate(parts):
        paths.append(tmp_path / f"part{i}.parquet")
        pq.write_table(gaia.take(pa.array(np.sort(part))), paths[-1])
    options = TableOptions(ra="ra", dec="dec", id="source_id", chunk_order=2, max_chunk_rows=60_000)
    index_dir = deployment.data_dir / "catalog" / "_index" / "cat" / "gaia"
    rng = np.random.default_rng(11)
    for i, path in enumerate(paths):
        load_files(deployment, "gaia", [path], create=options if i == 0 else None, progress=False)
        with deployment.connect() as conn:
            files = catalog.committed_index_files(deployment, conn, "cat.gaia")
        assert len(files) == 1 and len(list(index_dir.glob("*.parquet"))) <= 2  # one named, one spared
        shard_rows = duckdb.connect().execute(  # the truth: each id's chunk as the shards store it
            "SELECT source_id, _chunk FROM read_parquet(?) WHERE NOT _overlap",
            [[str(p) for p in (deployment.data_dir / "catalog").glob("shard*/cat/gaia/load*/*.parquet")]],
        )
        truth = dict(shard_rows.fetchall())
        loaded = np.concatenate([gaia["source_id"].to_numpy()[np.sort(p)] for p in parts[: i + 1]])
        assert len(truth) == len(loaded) == pq.ParquetFile(files[0]).metadata.num_rows
        index = DirectorIndex([str(f) for f in files])
        for wanted in rng.choice(loaded, 20, replace=False).tolist():
            before = index.groups_read
            assert index.chunks_of([wanted]) == {truth[wanted]}
            assert index.groups_read - before == 1  # one lookup, however many loads
    assert index.chunks_of([1, 2, 3]) == set()

    def state() -> tuple[Any, ...]:
        with deployment.connect() as conn:
            loads = conn.execute(sa.text("SELECT load_id, state, index_path FROM dms.catalog_load")).all()
            stored = conn.execute(sa.text("SELECT count(*), sum(row_count) FROM dms.chunk_file")).one()
        shard_files = sorted(str(p) for p in (deployment.data_dir / "catalog").rglob("shard*/**/*.parquet"))
        return sorted(loads), tuple(stored), shard_files, files[0].read_bytes()

    before = state()
    again = gaia.take(pa.array(np.sort(parts[1])[:5]))  # five ids of the second load, with new ones
    fresh = gaia.take(pa.array(np.sort(parts[2])[:50])).set_column(
        0, "source_id", pa.array(np.arange(1, 51, dtype=np.int64))
    )
    pq.write_table(pa.concat_tables([fresh, again]), tmp_path / "again.parquet")
    with pytest.raises(LoadError, match=r"5 values of source_id \(first \d+\) are already in cat.gaia"):
        load_files(deployment, "gaia", [tmp_path / "again.parquet"], progress=False)
    assert state() == before  # nothing half-loaded: registry, shard files and index as they were
    ids = [*rng.choice(gaia["source_id"].to_numpy(), 30, replace=False).tolist(), 1, 2]
    with QueryEngine(deployment) as engine:
        id_list = ", ".join(str(i) for i in ids)
        sql = f"SELECT source_id, ra FROM cat.gaia WHERE source_id IN ({id_list})"
        found = engine.execute(sql).table
        total = engine.execute("SELECT COUNT(*) AS n FROM cat.gaia").table["n"][0].as_py()
    duck = duckdb.connect()  # the unpartitioned copy: every input file
    expected = duck.execute(
        "SELECT source_id, ra FROM read_parquet(?) WHERE list_contains(?, source_id) ORDER BY source_id",
        [[str(p) for p in paths], ids],
    ).fetchall()
    assert sorted(zip(found["source_id"].to_pylist(), found["ra"].to_pylist(), strict=True)) == expected
    assert total == gaia.num_rows
