"""Loading Qserv-style data (issue 19, defect 7): binary columns on both shard kinds, failed `--create` loads
rolled back, `--create` with other options refused, `dms catalog drop`, child rows without a director
(placed by their own position, as Qserv's partitioner does), and adaptive splitting that stops at the finest
order the overlap allows and then names the option to change.

Answers are checked against an unpartitioned DuckDB copy of the same rows, healpy, and numpy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import healpy
import numpy as np
import psycopg
import pyarrow as pa
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from dms import migrate
from dms.cli import main
from dms.config import ShardConfig
from dms.deployment import Deployment
from dms.errors import DMSError
from dms.loaders.catalog import LoadError, TableOptions, load_files
from dms.loaders.catalog_define import TableExistsError
from dms.loaders.catalog_drop import DropError, drop_table
from dms.loaders.orphans import OrphanError
from dms.loaders.partition import (
    MAX_ADAPTIVE_ORDER,
    PartitionError,
    adaptive_layout,
    healpix_29,
    overlap_order,
)
from dms.loaders.samples import write_parquet
from dms.query.engine import QueryEngine
from tests.catalog_fixtures import (
    Sample,
    add_postgres_shards,
    canonical_rows,
    reference,
    reference_connection,
)
from tests.pg_support import control_database, create_database, drop_database, seed_default_shard

REGISTRY_TABLES = ("catalog_table", "catalog_column", "catalog_load", "chunk", "chunk_replica", "chunk_file")


@pytest.fixture(scope="module")
def pg_uris(pg_server: object) -> Iterator[list[str]]:
    """Two fresh databases on the session's PostgreSQL server, used as two PostgreSQL shards."""
    names = [create_database(pg_server, "s") for _ in range(2)]
    yield [pg_server.get_uri(n) for n in names]  # type: ignore[attr-defined]
    drop_database(pg_server, *names)


@pytest.fixture(scope="module")
def deployment(
    pg_server: object, tmp_path_factory: pytest.TempPathFactory, pg_uris: list[str]
) -> Iterator[Deployment]:
    """Two DuckDB shards (shard0, shard1) and two PostgreSQL shards (pg0, pg1); the control database on the
    session's server."""
    control = control_database(pg_server, "qs")
    dep = Deployment.create(tmp_path_factory.mktemp("qs"), database_url=pg_server.get_uri(control))  # type: ignore[attr-defined]
    seed_default_shard(dep, pg_server)
    dep.add_shard(ShardConfig(name="shard1", kind="duckdb", path="catalog/shard1.duckdb"))
    migrate.upgrade(dep)
    add_postgres_shards(dep, pg_uris)
    yield dep
    dep.dispose()
    drop_database(pg_server, control)


def _stars(n: int, seed: int, first_id: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "objectId": np.arange(first_id, first_id + n, dtype=np.int64),
            "ra": rng.uniform(0, 360, n),
            "decl": np.degrees(np.arcsin(rng.uniform(-1, 1, n))),
            "psfMag": rng.uniform(15, 24, n),
        }
    )


def _registry_rows(deployment: Deployment, name: str) -> dict[str, int]:
    with deployment.connect() as conn:
        return {
            t: int(
                conn.execute(
                    sa.text(
                        "SELECT count(*) FROM dms."
                        + t
                        + " WHERE "
                        + ("name" if t == "catalog_table" else "table_name")
                        + " = :n"
                    ),
                    {"n": name},
                ).scalar_one()
            )
            for t in REGISTRY_TABLES
        }


def _pg_table_exists(uri: str, name: str) -> bool:
    with psycopg.connect(uri, autocommit=True) as conn:
        row = conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()
        return bool(row and row[0] is not None)


def _parquet_dirs(deployment: Deployment, table: str) -> list[Path]:
    return [
        d
        for shard in ("shard0", "shard1")
        if (d := deployment.data_dir / "catalog" / shard / "cat" / table).exists()
    ]


def _rows(deployment: Deployment, sql: str) -> pa.Table:
    with QueryEngine(deployment) as engine:
        return engine.execute(sql).table


# --- binary columns -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("storage", ["duckdb", "postgres"])
def test_binary_columns_load_and_read_back_equal(
    deployment: Deployment, tmp_path: Path, storage: str
) -> None:
    rng = np.random.default_rng(11)
    stars = _stars(300, seed=5)
    # bytes that are not UTF-8 (0xff, 0x80, NUL), an empty value and NULLs, as Qserv BINARY columns hold
    blobs: list[bytes | None] = [rng.bytes(int(rng.integers(0, 24))) for _ in range(stars.num_rows)]
    blobs[0], blobs[1], blobs[2], blobs[3] = b"\xff\xfe\x00\x80", b"", None, b"\x00"
    stars = stars.append_column("flags", pa.array(blobs, pa.binary()))
    name = f"bin_{storage}"
    path = write_parquet(stars, tmp_path / "bin.parquet")
    result = load_files(
        deployment,
        name,
        [path],
        progress=False,
        create=TableOptions(
            ra="ra", dec="decl", id="objectId", chunk_order=2, storage=storage, overlap_arcsec=0
        ),
    )
    assert result.rows == stars.num_rows
    got = _rows(deployment, f"SELECT objectId, flags FROM {name}")
    assert got.schema.field("flags").type == pa.binary()
    assert dict(zip(got["objectId"].to_pylist(), got["flags"].to_pylist(), strict=True)) == dict(
        zip(stars["objectId"].to_pylist(), blobs, strict=True)
    )
    one = _rows(deployment, f"SELECT flags FROM {name} WHERE objectId = 1")
    assert one["flags"].to_pylist() == [b"\xff\xfe\x00\x80"]


# --- failed and repeated --create ---------------------------------------------------------------------------


def test_a_failed_create_on_postgres_leaves_nothing(
    deployment: Deployment, pg_uris: list[str], tmp_path: Path
) -> None:
    stars = _stars(400, seed=6)
    # order-1 chunks are NUNIQ 16 + pixel and a chunk's primary shard is NUNIQ mod 2: a row in an odd pixel
    # goes to pg1, which refuses it (PostgreSQL text cannot hold NUL) after pg0 stored its rows
    pixel = healpy.ang2pix(2, stars["ra"].to_numpy(), stars["decl"].to_numpy(), nest=True, lonlat=True)
    assert (pixel % 2 == 0).any()
    bad_row = int(np.flatnonzero(pixel % 2 == 1)[0])
    notes = ["ok"] * stars.num_rows
    notes[bad_row] = "nul\x00byte"
    bad = write_parquet(stars.append_column("note", pa.array(notes)), tmp_path / "bad.parquet")
    options = TableOptions(
        ra="ra", dec="decl", id="objectId", chunk_order=1, max_chunk_rows=None, storage="postgres"
    )
    with pytest.raises(DMSError, match=r"shard 'pg1'.*column 'note' holds a NUL character"):
        load_files(deployment, "failed_pg", [bad], create=options, progress=False)
    assert _registry_rows(deployment, "cat.failed_pg") == dict.fromkeys(REGISTRY_TABLES, 0)
    assert not any(_pg_table_exists(uri, "cat.failed_pg") for uri in pg_uris)
    # a corrected --create with other options defines the table anew, with the new options
    notes[bad_row] = "ok"
    good = write_parquet(stars.append_column("note", pa.array(notes)), tmp_path / "good.parquet")
    options.chunk_order = 3
    load_files(deployment, "failed_pg", [good], create=options, progress=False)
    with deployment.connect() as conn:
        order = conn.execute(
            sa.text("SELECT chunk_order FROM dms.catalog_table WHERE name = 'cat.failed_pg'")
        )
        assert order.scalar_one() == 3
    assert _rows(deployment, "SELECT COUNT(*) AS n FROM failed_pg")["n"].to_pylist() == [400]


def test_a_create_failing_after_writing_chunks_removes_them(deployment: Deployment, tmp_path: Path) -> None:
    stars = _stars(2_000, seed=7)
    path = write_parquet(stars, tmp_path / "s.parquet")
    blocker = deployment.data_dir / "catalog" / "shard1" / "cat" / "failed_duck"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a directory")  # shard1 cannot write: after shard0 wrote its chunk files
    options = TableOptions(
        ra="ra", dec="decl", id="objectId", chunk_order=2, storage="duckdb", overlap_arcsec=0
    )
    with pytest.raises(OSError):
        load_files(deployment, "failed_duck", [path], create=options, progress=False)
    assert _registry_rows(deployment, "cat.failed_duck") == dict.fromkeys(REGISTRY_TABLES, 0)
    assert not (deployment.data_dir / "catalog" / "shard0" / "cat" / "failed_duck").exists()
    blocker.unlink()
    load_files(deployment, "failed_duck", [path], create=options, progress=False)
    assert _rows(deployment, "SELECT COUNT(*) AS n FROM failed_duck")["n"].to_pylist() == [2_000]


def test_create_with_other_options_is_refused(deployment: Deployment, tmp_path: Path) -> None:
    path = write_parquet(_stars(500, seed=8), tmp_path / "s.parquet")
    options = TableOptions(ra="ra", dec="decl", id="objectId", chunk_order=2, storage="duckdb")
    load_files(deployment, "defined", [path], create=options, progress=False)
    again = load_files(deployment, "defined", [path], create=options, progress=False)
    assert again.skipped  # the same --create command again is a repeated load, not an error
    other = TableOptions(
        ra="ra", dec="decl", id="objectId", chunk_order=4, storage="duckdb", overlap_arcsec=30
    )
    second = write_parquet(_stars(10, seed=9, first_id=10_000), tmp_path / "more.parquet")
    with pytest.raises(TableExistsError, match=r"--chunk-order was 2, now 4.*--overlap was 60.0, now 30"):
        load_files(deployment, "defined", [second], create=other, progress=False)
    assert _rows(deployment, "SELECT COUNT(*) AS n FROM defined")["n"].to_pylist() == [500]


# --- dms catalog drop ---------------------------------------------------------------------------------------


def _director_and_child(deployment: Deployment, tmp_path: Path, prefix: str, storage: str) -> pa.Table:
    stars = _stars(3_000, seed=12)
    rng = np.random.default_rng(13)
    sources = pa.table(
        {
            "sourceId": np.arange(6_000, dtype=np.int64),
            "objectId": rng.choice(stars["objectId"].to_numpy(), 6_000),
            "flux": rng.lognormal(3, 1, 6_000),
        }
    )
    load_files(
        deployment,
        f"{prefix}_obj",
        [write_parquet(stars, tmp_path / f"{prefix}_obj.parquet")],
        progress=False,
        create=TableOptions(
            ra="ra", dec="decl", id="objectId", chunk_order=2, max_chunk_rows=400, storage=storage, replicas=2
        ),
    )
    load_files(
        deployment,
        f"{prefix}_src",
        [write_parquet(sources, tmp_path / f"{prefix}_src.parquet")],
        progress=False,
        create=TableOptions(role="child", director=f"{prefix}_obj", director_key="objectId"),
    )
    return sources


def _generation(deployment: Deployment) -> int:
    with deployment.connect() as conn:
        return int(conn.execute(sa.text("SELECT generation FROM dms.catalog_generation")).scalar_one())


@pytest.mark.parametrize("storage", ["duckdb", "postgres"])
def test_drop_removes_a_table_everywhere(
    deployment: Deployment, pg_uris: list[str], tmp_path: Path, storage: str
) -> None:
    prefix = f"drop_{storage}"
    _director_and_child(deployment, tmp_path, prefix, storage)
    obj, src = f"cat.{prefix}_obj", f"cat.{prefix}_src"
    engine = QueryEngine(deployment)  # its cached registry must see the drop
    try:
        assert engine.execute(f"SELECT COUNT(*) AS n FROM {prefix}_src").table["n"].to_pylist() == [6_000]
        with pytest.raises(DropError, match=rf"director of {src}.*--with-children"):
            drop_table(deployment, obj)
        before = _generation(deployment)
        assert drop_table(deployment, src).tables == [src]
        assert _generation(deployment) > before
        with pytest.raises(DMSError, match=f"{prefix}_src"):
            engine.execute(f"SELECT COUNT(*) AS n FROM {prefix}_src")
        assert engine.execute(f"SELECT COUNT(*) AS n FROM {prefix}_obj").table["n"].to_pylist() == [3_000]
        assert _registry_rows(deployment, src) == dict.fromkeys(REGISTRY_TABLES, 0)
        index = deployment.data_dir / "catalog" / "_index" / "cat" / f"{prefix}_obj"
        assert list(index.glob("*.parquet"))
        result = drop_table(deployment, obj)
        assert not index.exists()
        assert set(result.shards) == {"shard0", "shard1", "pg0", "pg1"}
        with pytest.raises(DMSError, match=f"{prefix}_obj"):
            engine.execute(f"SELECT COUNT(*) AS n FROM {prefix}_obj")
    finally:
        engine.close()
    for name in (obj, src):
        assert _registry_rows(deployment, name) == dict.fromkeys(REGISTRY_TABLES, 0)
        assert not any(_pg_table_exists(uri, name) for uri in pg_uris)
        assert not _parquet_dirs(deployment, name.split(".")[1])
    with deployment.connect() as conn:
        described = conn.execute(
            sa.text("SELECT count(*) FROM tap_schema.tables WHERE table_name LIKE :p"), {"p": f"%{prefix}%"}
        )
        assert described.scalar_one() == 0
    # the name is free again, with other options
    _director_and_child(deployment, tmp_path, prefix, "duckdb" if storage == "postgres" else "postgres")
    assert _rows(deployment, f"SELECT COUNT(*) AS n FROM {prefix}_src")["n"].to_pylist() == [6_000]


def test_drop_command_asks_and_drops_children_when_told(deployment: Deployment, tmp_path: Path) -> None:
    _director_and_child(deployment, tmp_path, "cli", "duckdb")
    args = ["--data-dir", str(deployment.data_dir), "catalog", "drop"]
    assert "--yes" in CliRunner().invoke(main, [*args, "--help"]).output
    refused = CliRunner().invoke(main, [*args, "cli_obj", "--yes"])
    assert refused.exit_code == 1 and "director of cat.cli_src" in refused.output
    declined = CliRunner().invoke(main, [*args, "cli_src"], input="n\n")
    assert declined.exit_code == 1
    assert _registry_rows(deployment, "cat.cli_src")["catalog_table"] == 1
    done = CliRunner().invoke(main, [*args, "cli_obj", "--with-children", "--yes"])
    assert done.exit_code == 0, done.output
    assert "cat.cli_src, cat.cli_obj" in done.output
    for name in ("cat.cli_obj", "cat.cli_src"):
        assert _registry_rows(deployment, name) == dict.fromkeys(REGISTRY_TABLES, 0)
        assert not _parquet_dirs(deployment, name.split(".")[1])


# --- child rows without a director --------------------------------------------------------------------------


def _orphan_sample(tmp_path: Path, obj: str, src: str) -> Sample:
    """Objects, and sources with their own positions: most near their object, some whose object is not in
    the director (several sources of one missing object, far apart) and some with a NULL objectId."""
    objects = _stars(2_000, seed=21)
    rng = np.random.default_rng(22)
    n = 5_000
    parent = rng.integers(0, objects.num_rows, n)
    ra = objects["ra"].to_numpy()[parent] + rng.normal(0, 1e-4, n)
    dec = np.clip(objects["decl"].to_numpy()[parent] + rng.normal(0, 1e-4, n), -90, 90)
    keys = objects["objectId"].to_numpy()[parent].astype(object)
    orphan = rng.choice(n, 60, replace=False)
    keys[orphan[:40]] = 900_000 + np.arange(40) % 7  # missing objects, each with several sources
    keys[orphan[40:]] = None
    ra[orphan] = rng.uniform(0, 360, 60)  # anywhere on the sky, not near any object
    dec[orphan] = np.degrees(np.arcsin(rng.uniform(-1, 1, 60)))
    sources = pa.table(
        {
            "sourceId": np.arange(n, dtype=np.int64),
            "objectId": pa.array(list(keys), pa.int64()),
            "ra": np.mod(ra, 360),
            "decl": dec,
            "psfFlux": rng.lognormal(3, 1, n),
        }
    )
    tables = {obj: objects, src: sources}
    files = {name: write_parquet(t, tmp_path / f"{name}.parquet") for name, t in tables.items()}
    return Sample(files, tables)


def _load_orphans(deployment: Deployment, sample: Sample, orphans: str) -> int:
    obj, src = sample.tables
    return load_files(
        deployment,
        src,
        [sample.files[src]],
        progress=False,
        orphans=orphans,
        create=TableOptions(role="child", director=obj, director_key="objectId", ra="ra", dec="decl"),
    ).orphans


@pytest.mark.parametrize("storage", ["duckdb", "postgres"])
def test_orphans_are_placed_by_position_and_queries_find_them(
    deployment: Deployment, tmp_path: Path, storage: str
) -> None:
    o, s = f"orph_obj_{storage}", f"orph_src_{storage}"
    sample = _orphan_sample(tmp_path, o, s)
    load_files(
        deployment,
        o,
        [sample.files[o]],
        progress=False,
        create=TableOptions(
            ra="ra", dec="decl", id="objectId", chunk_order=2, max_chunk_rows=300, storage=storage, replicas=2
        ),
    )
    with pytest.raises(OrphanError, match=rf"40 rows refer to objects that are not in cat\.{o}.*20 rows"):
        _load_orphans(deployment, sample, "refuse")
    assert _registry_rows(deployment, f"cat.{s}")["catalog_table"] == 0
    assert _load_orphans(deployment, sample, "place-by-position") == 60
    ref = reference_connection(sample)
    sources = sample.tables[s]
    no_key = sources.filter(pa.compute.is_null(sources["objectId"])).to_pylist()[0]
    ra0, dec0 = no_key["ra"], no_key["decl"]  # a cone around an orphan with a NULL key
    queries = [
        f"SELECT COUNT(*) AS n, COUNT(objectId) AS keyed FROM {s}",
        f"SELECT sourceId, objectId FROM {s} WHERE objectId = 900003",
        f"SELECT sourceId FROM {s} WHERE objectId IN (900001, 900005, 17)",
        f"SELECT sourceId, objectId FROM {s} WHERE scisql_s2PtInCircle(ra, decl, {ra0}, {dec0}, 0.5) = 1",
        f"SELECT s.sourceId, o.objectId FROM {o} o JOIN {s} s ON o.objectId = s.objectId",
        f"SELECT COUNT(*) AS n FROM {o} o JOIN {s} s ON o.objectId = s.objectId WHERE o.psfMag < 20",
        f"SELECT s.sourceId, o.objectId FROM {s} s LEFT JOIN {o} o ON o.objectId = s.objectId",
    ]
    with QueryEngine(deployment) as engine:
        for sql in queries:
            expected = canonical_rows(reference(ref, sql))
            assert canonical_rows(engine.execute(sql).table) == expected, sql
            assert expected, sql  # each query has rows to find
    # an object arriving later for a placed orphan would not join it: refused, naming the way out
    late = _stars(1, seed=23, first_id=900_003)
    with pytest.raises(OrphanError, match=rf"cat\.{s}.*dms catalog drop cat\.{s}"):
        load_files(deployment, o, [write_parquet(late, tmp_path / "late.parquet")], progress=False)
    drop_table(deployment, s)
    assert _load_orphans(deployment, sample, "skip") == 60
    with QueryEngine(deployment) as engine:
        kept = engine.execute(f"SELECT COUNT(*) AS n FROM {s}").table["n"].to_pylist()
    assert kept == [sample.tables[s].num_rows - 60]
    ref.close()


def test_orphans_without_a_position_are_refused_clearly(deployment: Deployment, tmp_path: Path) -> None:
    objects = _stars(100, seed=31)
    load_files(
        deployment,
        "nopos_obj",
        [write_parquet(objects, tmp_path / "o.parquet")],
        progress=False,
        create=TableOptions(ra="ra", dec="decl", id="objectId"),
    )
    child = pa.table({"sourceId": [1, 2, 3], "objectId": pa.array([1, None, 5_000], pa.int64())})
    with pytest.raises(
        LoadError, match=r"1 rows refer to .* \(first objectId = 5000\).*1 rows have no.*--ra"
    ):
        load_files(
            deployment,
            "nopos_src",
            [write_parquet(child, tmp_path / "c.parquet")],
            progress=False,
            create=TableOptions(role="child", director="nopos_obj", director_key="objectId"),
        )


# --- adaptive splitting and the overlap ---------------------------------------------------------------------


def _finest_by_healpy(overlap_arcsec: float) -> int:
    """The finest order whose pixels (healpy's resolution over sqrt 2) are at least twice the overlap wide."""
    widths = [healpy.nside2resol(2**o, arcmin=True) * 60 / np.sqrt(2) for o in range(MAX_ADAPTIVE_ORDER + 1)]
    return max(o for o, w in enumerate(widths) if w >= 2 * overlap_arcsec)


def _cluster(n: int, seed: int, radius_deg: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return healpix_29(150.0 + rng.normal(0, radius_deg, n), 2.2 + rng.normal(0, radius_deg, n))


def test_adaptive_splitting_stops_at_the_overlap_and_advises_the_right_option() -> None:
    h29 = _cluster(20_000, seed=41, radius_deg=0.002)  # ~7 arcsec: denser than any allowed chunk
    overlap = 60.0
    finest = _finest_by_healpy(overlap)
    densest = int(np.unique(h29 >> (2 * (29 - finest)), return_counts=True)[1].max())
    with pytest.raises(PartitionError) as refused:
        adaptive_layout(h29, 2, 1_000, overlap)
    message = str(refused.value)
    assert f"at order {finest}" in message
    assert f"--max-chunk-rows to at least {densest:,}" in message
    assert "--overlap to at most" in message
    # following either piece of advice works: more rows per chunk, or a smaller overlap for finer chunks
    layout = adaptive_layout(h29, 2, densest, overlap)
    assert int(layout.orders.max()) <= finest
    assert overlap_order(overlap, int(layout.orders.max())) >= finest  # the overlap fits these chunks
    smaller = float(message.split("--overlap to at most ")[1].split(" ")[0]) * 0.999
    assert smaller < overlap
    with pytest.raises(PartitionError, match=f"at order {finest + 1}"):
        adaptive_layout(h29, 2, 1_000, smaller)
    # a sparse sky never needs the finest order; without an overlap only order 13 stops the splitting
    assert int(adaptive_layout(_cluster(5_000, 42, 5.0), 2, 1_000, overlap).orders.max()) < finest
    with pytest.raises(PartitionError, match=f"at order {MAX_ADAPTIVE_ORDER}") as deepest:
        adaptive_layout(h29, 2, 10, 0.0)
    assert "--overlap" not in str(deepest.value)


def test_a_dense_load_is_refused_with_the_advice_and_loads_when_followed(
    deployment: Deployment, tmp_path: Path
) -> None:
    rng = np.random.default_rng(43)
    n = 3_000
    stars = _stars(n, seed=44).set_column(1, "ra", pa.array(150.0 + rng.normal(0, 0.003, n)))
    stars = stars.set_column(2, "decl", pa.array(2.2 + rng.normal(0, 0.003, n)))
    path = write_parquet(stars, tmp_path / "dense.parquet")
    options = TableOptions(
        ra="ra", dec="decl", id="objectId", chunk_order=3, max_chunk_rows=200, overlap_arcsec=30
    )
    with pytest.raises(PartitionError, match="--max-chunk-rows to at least") as refused:
        load_files(deployment, "dense", [path], create=options, progress=False)
    assert _registry_rows(deployment, "cat.dense")["catalog_table"] == 0
    options.max_chunk_rows = int(str(refused.value).split("at least ")[1].split(" ")[0].replace(",", ""))
    load_files(deployment, "dense", [path], create=options, progress=False)
    assert _rows(deployment, "SELECT COUNT(*) AS n FROM dense")["n"].to_pylist() == [n]


def test_load_command_reports_orphans_and_states_the_default(deployment: Deployment, tmp_path: Path) -> None:
    help_text = CliRunner().invoke(main, ["load", "--help"]).output
    assert "--orphans" in help_text and "default: place-by-position" in " ".join(help_text.split())
    sample = _orphan_sample(tmp_path, "cli_orph_obj", "cli_orph_src")
    base = ["--data-dir", str(deployment.data_dir), "load", "--create", "-q"]
    director = [*base, "cli_orph_obj", str(sample.files["cli_orph_obj"]), "--ra", "ra", "--dec", "decl"]
    made = CliRunner().invoke(main, [*director, "--id", "objectId", "--chunk-order", "2"])
    assert made.exit_code == 0, made.output
    child = [*base, "cli_orph_src", str(sample.files["cli_orph_src"]), "--role", "child"]
    child += ["--director", "cli_orph_obj", "--director-key", "objectId", "--ra", "ra", "--dec", "decl"]
    refused = CliRunner().invoke(main, [*child, "--orphans", "refuse"])
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert "40 rows refer to objects that are not in cat.cli_orph_obj" in refused.output
    loaded = CliRunner().invoke(main, child)
    assert loaded.exit_code == 0, loaded.output
    assert "60 rows without a director row were placed by their own position" in loaded.output
