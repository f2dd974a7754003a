"""What queries see of loads (issue 11, items 9 and 12).

- PostgreSQL shards are read only for the loads the query's registry snapshot lists as committed: a load in
  flight (rows written, not committed) is not seen even by a query whose snapshot predates it, and a load that
  failed (an exception, or a process that died and is found stale by the next load) leaves no rows behind.
- `--like` is a column of its own: `--description` no longer loses the layout link, and migration c0008
  carries an existing row's link out of its description.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from dms import migrate
from dms.cli import main
from dms.deployment import Deployment
from dms.errors import DMSError
from dms.loaders import catalog as catalog_loader
from dms.loaders.catalog import TableOptions, load_files
from dms.query.engine import QueryEngine
from tests.answers_support import drop_databases, held_commit, in_thread, new_database, star_file
from tests.catalog_fixtures import canonical_rows, make_sample, reference, reference_connection
from tests.pg_support import seed_default_shard

HIP_OPTIONS = (
    "--ra",
    "ra",
    "--dec",
    "dec",
    "--id",
    "hip",
    "--like",
    "gaia",
    "--description",
    "Hipparcos 2",
    "-q",
)
COUNT = "SELECT COUNT(*) AS n FROM cat.x WHERE ra >= 0"  # not answered from the registry's row count


@pytest.fixture()
def pg_deployment(pg_server: Any, tmp_path: Path) -> Iterator[tuple[Deployment, list[str]]]:
    """A deployment whose catalog is on two PostgreSQL shards (databases of the session's server)."""
    from tests.catalog_fixtures import add_postgres_shards

    created: list[str] = []
    deployment = Deployment.create(
        tmp_path / "dep", database_url=new_database(pg_server, created, migrated=True)
    )
    seed_default_shard(deployment, pg_server)
    shards = [new_database(pg_server, created, shard=True) for _ in range(2)]
    try:
        add_postgres_shards(deployment, shards)
        yield deployment, shards
    finally:
        deployment.dispose()
        drop_databases(pg_server, created)


def _shard_rows(shards: list[str], table: str, load_id: int | None = None) -> int:
    """Rows stored for `table` on the shards, not counting overlap copies (of one load when given), counted
    directly on each shard."""
    total = 0
    for uri in shards:
        with psycopg.connect(uri) as conn:
            if conn.execute("SELECT to_regclass(%s)", (f"cat.{table}",)).fetchone() == (None,):
                continue
            query = psycopg.sql.SQL("SELECT count(*) FROM cat.{} WHERE NOT _overlap").format(
                psycopg.sql.Identifier(table)
            )
            if load_id is not None:
                query += psycopg.sql.SQL(" AND _load_id = {}").format(load_id)
            total += conn.execute(query).fetchone()[0]  # type: ignore[index]
    return total


def _load_states(deployment: Deployment, table: str) -> dict[int, str]:
    with deployment.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT load_id, state FROM dms.catalog_load WHERE table_name = :t"), {"t": table}
        )
        return {int(i): str(s) for i, s in rows}


def _count(engine: QueryEngine) -> int:
    return int(engine.execute(COUNT).table.column(0)[0].as_py())


def test_a_load_in_flight_is_not_read_even_by_an_older_snapshot(
    pg_deployment: tuple[Deployment, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment, shards = pg_deployment
    star = TableOptions(ra="ra", dec="dec", id="id", chunk_order=1, storage="postgres")
    load_files(deployment, "x", [star_file(tmp_path, "x1", 0, 1000, 1)], progress=False, create=star)
    with QueryEngine(deployment) as engine:
        assert _count(engine) == 1000
        before = engine.registry.snapshot()  # a query planned now, whose shard reads run later
        with held_commit(monkeypatch, "cat.x") as held:
            thread, outcome = in_thread(
                load_files, deployment, "x", [star_file(tmp_path, "x2", 1000, 500, 2)], progress=False
            )
            assert held.reached.wait(60)
            running = [i for i, s in _load_states(deployment, "cat.x").items() if s == "running"]
            assert len(running) == 1 and _shard_rows(shards, "x", running[0]) == 500  # written, uncommitted
            assert _count(engine) == 1000
            with monkeypatch.context() as patch:
                patch.setattr(engine.registry, "snapshot", lambda: before)
                assert _count(engine) == 1000
            held.release()
            thread.join(60)
        assert outcome and not isinstance(outcome[0], BaseException), outcome
        assert _count(engine) == 1500


def test_a_failed_load_leaves_no_rows(pg_deployment: tuple[Deployment, list[str]], tmp_path: Path) -> None:
    """The second shard refuses the rows (a table of another shape is in the way) after the first shard
    stored its part: the load fails, and since it was a --create, the table is removed again: the first
    shard's table and the registry rows, but not the table in the way, which is not DMS's."""
    deployment, shards = pg_deployment
    with psycopg.connect(shards[1], autocommit=True) as conn:
        conn.execute("CREATE SCHEMA cat")
        conn.execute("CREATE TABLE cat.z (something_else integer)")
        conn.execute("INSERT INTO cat.z VALUES (42)")
    star = TableOptions(ra="ra", dec="dec", id="id", chunk_order=1, storage="postgres")
    with pytest.raises(DMSError, match=r"shard 'pg1' cannot store the rows of cat\.z"):
        load_files(deployment, "z", [star_file(tmp_path, "z1", 0, 1000, 4)], progress=False, create=star)
    with psycopg.connect(shards[0], autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('cat.z')").fetchone() == (None,)
    with psycopg.connect(shards[1], autocommit=True) as conn:
        assert conn.execute("SELECT something_else FROM cat.z").fetchall() == [(42,)]
    assert _load_states(deployment, "cat.z") == {}
    with QueryEngine(deployment) as engine, pytest.raises(DMSError, match="z"):
        engine.execute("SELECT COUNT(*) AS n FROM cat.z WHERE ra >= 0")


def test_a_load_whose_process_died_is_cleaned_up_by_the_next(
    pg_deployment: tuple[Deployment, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment, shards = pg_deployment
    star = TableOptions(ra="ra", dec="dec", id="id", chunk_order=1, storage="postgres")
    load_files(deployment, "x", [star_file(tmp_path, "x1", 0, 1000, 1)], progress=False, create=star)

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # the process stops between writing the rows and committing them

    with monkeypatch.context() as patch:
        patch.setattr(catalog_loader, "_commit", killed)
        with pytest.raises(KeyboardInterrupt):
            load_files(deployment, "x", [star_file(tmp_path, "x3", 5000, 300, 5)], progress=False)
    (dead,) = [i for i, s in _load_states(deployment, "cat.x").items() if s == "running"]
    assert _shard_rows(shards, "x", dead) == 300
    with QueryEngine(deployment) as engine:
        assert _count(engine) == 1000
        load_files(deployment, "x", [star_file(tmp_path, "x4", 9000, 200, 6)], progress=False)
        assert _shard_rows(shards, "x", dead) == 0
        assert dead not in _load_states(deployment, "cat.x")
        assert _count(engine) == 1200 == _shard_rows(shards, "x")


# --- item 12: --like is a column ----------------------------------------------------------------------------


def test_description_keeps_the_like_layout(pg_server: Any, tmp_path: Path) -> None:
    sample = make_sample(tmp_path)
    created: list[str] = []
    deployment = Deployment.create(
        tmp_path / "dep", database_url=new_database(pg_server, created, migrated=True)
    )
    seed_default_shard(deployment, pg_server)
    ref = reference_connection(sample)
    try:
        migrate.upgrade(deployment)
        gaia = TableOptions(ra="ra", dec="dec", id="source_id", chunk_order=2, max_chunk_rows=1_500)
        load_files(deployment, "gaia", [sample.files["gaia"]], progress=False, create=gaia)
        base = ["--data-dir", str(deployment.data_dir)]
        loaded = CliRunner().invoke(
            main,
            [*base, "load", "hip", str(sample.files["hip"]), "--create", *HIP_OPTIONS],
        )
        assert loaded.exit_code == 0, loaded.output
        with deployment.connect() as conn:
            row = conn.execute(
                sa.text("SELECT description, like_table FROM dms.catalog_table WHERE name = 'cat.hip'")
            ).one()
            chunks = {
                name: set(
                    conn.execute(
                        sa.text("SELECT chunk_order, chunk_id FROM dms.chunk WHERE table_name = :t"),
                        {"t": name},
                    ).all()
                )
                for name in ("cat.gaia", "cat.hip")
            }
        assert tuple(row) == ("Hipparcos 2", "cat.gaia")
        assert chunks["cat.hip"] <= chunks["cat.gaia"]  # gaia's adaptive layout, not one of its own
        listing = CliRunner().invoke(main, [*base, "tables"])
        assert "chunks of cat.gaia" in listing.output
        match = (
            "SELECT COUNT(*) AS n FROM cat.hip h JOIN cat.gaia g "
            "ON scisql_angSep(h.ra, h.dec, g.ra, g.dec) < 0.001"
        )
        with QueryEngine(deployment) as engine:
            result = engine.execute(match)
        # The same pairs on the unpartitioned copy; the declination band (implied by the separation) lets
        # DuckDB use a range join instead of a nested loop over every pair.
        banded = match + " AND g.dec BETWEEN h.dec - 0.001 AND h.dec + 0.001"
        assert canonical_rows(result.table) == canonical_rows(reference(ref, banded))
        assert result.table.column(0)[0].as_py() > 0
    finally:
        ref.close()
        deployment.dispose()
        drop_databases(pg_server, created)


def test_migration_moves_the_like_link_out_of_the_description(pg_server: Any, tmp_path: Path) -> None:
    created: list[str] = []
    deployment = Deployment.create(tmp_path / "dep", database_url=new_database(pg_server, created))
    columns = "name, role, id_column, ra_column, dec_column, chunk_order, storage_kind, description"
    try:
        migrate.upgrade(deployment, "c0006")
        with deployment.engine().begin() as conn:
            conn.execute(
                sa.text(
                    f"INSERT INTO dms.catalog_table ({columns}) VALUES "
                    "('catalog.hip', 'director', 'hip', 'ra', 'dec', 2, 'duckdb', 'layout like gaia'), "
                    "('dp1.Match', 'director', 'id', 'ra', 'dec', 2, 'duckdb', 'layout like dp1.Object'), "
                    "('catalog.other', 'director', 'id', 'ra', 'dec', 2, 'duckdb', 'Other stars')"
                )
            )
        migrate.upgrade(deployment)  # c0024 renames catalog.* to cat.*, references included
        query = sa.text("SELECT name, description, like_table FROM dms.catalog_table ORDER BY name")
        with deployment.connect() as conn:
            assert [tuple(r) for r in conn.execute(query)] == [
                ("cat.hip", None, "cat.gaia"),
                ("cat.other", "Other stars", None),
                ("dp1.Match", None, "dp1.Object"),
            ]
            # c0024's renames are registry changes: plans cached under the old names must not be reused
            assert conn.execute(sa.text("SELECT generation FROM dms.catalog_generation")).scalar_one() > 0
        migrate.downgrade(deployment, "c0006")
        with deployment.engine().connect() as conn:
            rows = conn.execute(sa.text("SELECT name, description FROM dms.catalog_table ORDER BY name"))
            assert [tuple(r) for r in rows] == [
                ("catalog.hip", "layout like catalog.gaia"),
                ("catalog.other", "Other stars"),
                ("dp1.Match", "layout like dp1.Object"),
            ]
    finally:
        deployment.dispose()
        drop_databases(pg_server, created)
