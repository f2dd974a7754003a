"""Wrong answers with status OK, closed (issue 11, items 6 and 8).

- The result cap applies to the final result only: a COUNT, AVG, IN-list, UNION ALL or WITH over an
  intermediate result sees all of its rows (checked against one unpartitioned DuckDB copy) through the Python
  API, `dms query` and TAP over HTTP; an intermediate result over the engine's limit is an error naming it.
- A long-lived engine (and a TAP server) sees a load that commits after a later-numbered load.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from dms import migrate
from dms.cli import main
from dms.deployment import Deployment
from dms.loaders.catalog import TableOptions, load_files
from dms.query.engine import QueryEngine
from dms.query.errors import QueryRefused
from dms.services.vo.server import running_server
from tests.answers_support import drop_databases, held_commit, in_thread, new_database, star_file
from tests.catalog_fixtures import (
    Sample,
    add_postgres_shards,
    canonical_rows,
    make_sample,
    reference,
    reference_connection,
)
from tests.pg_support import seed_default_shard

CAP = 1_000  # far below every intermediate result below (the Gaia sample has ~40,000 rows)
INNER = [
    "SELECT COUNT(*) AS n FROM (SELECT source_id FROM cat.gaia) AS x",
    "SELECT AVG(g) AS m, COUNT(*) AS n FROM (SELECT phot_g_mean_mag AS g FROM cat.gaia) AS x",
    "SELECT COUNT(*) AS n, SUM(flux) AS f FROM cat.obs "
    "WHERE source_id IN (SELECT source_id FROM cat.gaia WHERE dec > 0)",
    "SELECT COUNT(*) AS n FROM cat.obs WHERE source_id IN (SELECT source_id FROM cat.gaia WHERE dec > 80)",
    "SELECT COUNT(*) AS n FROM (SELECT source_id AS i FROM cat.gaia UNION ALL SELECT hip FROM cat.hip) AS u",
    "WITH g AS (SELECT source_id, dec FROM cat.gaia) SELECT COUNT(*) AS n, SUM(dec) AS s FROM g",
    "SELECT MAX(n) AS most FROM (SELECT visit, COUNT(*) AS n FROM cat.obs GROUP BY visit) AS v",
]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    return make_sample(tmp_path_factory.mktemp("sample"))


@pytest.fixture(scope="module")
def ref(sample: Sample) -> Iterator[Any]:
    conn = reference_connection(sample)
    yield conn
    conn.close()


def _load(deployment: Deployment, sample: Sample, storage: str) -> None:
    files = sample.files
    gaia = TableOptions(
        ra="ra", dec="dec", id="source_id", chunk_order=2, max_chunk_rows=3_000, storage=storage
    )
    load_files(deployment, "gaia", [files["gaia"]], progress=False, create=gaia)
    child = TableOptions(role="child", director="gaia", director_key="source_id")
    load_files(deployment, "obs", [files["obs"]], progress=False, create=child)
    hip = TableOptions(ra="ra", dec="dec", id="hip", like="gaia", storage=storage)
    load_files(deployment, "hip", [files["hip"]], progress=False, create=hip)


@pytest.fixture(scope="module")
def deployments(
    sample: Sample, pg_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Deployment]]:
    created: list[str] = []
    made = {}
    try:
        duck = Deployment.create(
            tmp_path_factory.mktemp("duck") / "dep",
            database_url=new_database(pg_server, created, migrated=True),
        )
        seed_default_shard(duck, pg_server)
        migrate.upgrade(duck)
        _load(duck, sample, "duckdb")
        made["duckdb"] = duck
        pg = Deployment.create(
            tmp_path_factory.mktemp("pg") / "dep",
            database_url=new_database(pg_server, created, migrated=True),
        )
        seed_default_shard(pg, pg_server)
        add_postgres_shards(pg, [new_database(pg_server, created, shard=True) for _ in range(2)])
        _load(pg, sample, "postgres")
        made["postgres"] = pg
        yield made
    finally:
        for deployment in made.values():
            deployment.dispose()
        drop_databases(pg_server, created)


@pytest.fixture(scope="module")
def engines(deployments: dict[str, Deployment]) -> Iterator[dict[str, QueryEngine]]:
    made = {name: QueryEngine(d) for name, d in deployments.items()}
    yield made
    for engine in made.values():
        engine.close()


@pytest.mark.parametrize("config", ["duckdb", "postgres"])
@pytest.mark.parametrize("sql", INNER)
def test_the_cap_does_not_cut_intermediate_results(
    engines: dict[str, QueryEngine], ref: Any, config: str, sql: str
) -> None:
    result = engines[config].execute(sql, max_rows=CAP)
    assert not result.overflow
    assert canonical_rows(result.table) == canonical_rows(reference(ref, sql))


def test_the_cap_still_cuts_and_reports_the_final_result(engines: dict[str, QueryEngine], ref: Any) -> None:
    for sql in (
        "SELECT source_id AS i FROM cat.gaia UNION ALL SELECT hip FROM cat.hip",
        "WITH g AS (SELECT source_id FROM cat.gaia) SELECT source_id FROM g",
        "SELECT source_id FROM cat.obs WHERE source_id IN (SELECT source_id FROM cat.gaia)",
    ):
        result = engines["duckdb"].execute(sql, max_rows=CAP)
        assert result.overflow and result.table.num_rows == CAP, sql
    union = "SELECT dec FROM cat.gaia UNION SELECT dec FROM cat.hip ORDER BY dec LIMIT 5"
    result = engines["duckdb"].execute(union, max_rows=3)
    assert (
        result.overflow
        and canonical_rows(result.table, ordered=True)
        == canonical_rows(reference(ref, union), ordered=True)[:3]
    )


def test_an_intermediate_result_over_the_limit_is_an_error_naming_it(
    deployments: dict[str, Deployment],
) -> None:
    with QueryEngine(deployments["duckdb"]) as engine:
        engine.inner_row_limit = 10_000
        for sql in (
            "SELECT COUNT(*) FROM (SELECT source_id FROM cat.gaia) AS x",
            "WITH g AS (SELECT source_id FROM cat.gaia) SELECT COUNT(*) FROM g",
            "SELECT COUNT(*) FROM cat.obs WHERE source_id IN (SELECT source_id FROM cat.gaia)",
        ):
            with pytest.raises(QueryRefused, match="more than 10,000 rows"):
                engine.execute(sql, max_rows=CAP)
        small = engine.execute(
            "SELECT COUNT(*) AS n FROM (SELECT source_id FROM cat.gaia WHERE dec > 60) AS x"
        )
        assert 0 < small.table.column(0)[0].as_py() <= 10_000


def test_dms_query_counts_a_derived_table_whole(deployments: dict[str, Deployment], sample: Sample) -> None:
    sql = "SELECT COUNT(*) AS n FROM (SELECT source_id FROM cat.gaia) AS x"
    result = CliRunner().invoke(
        main,
        [
            "--data-dir",
            str(deployments["duckdb"].data_dir),
            "query",
            sql,
            "--format",
            "csv",
            "--max-rows",
            "100",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.output)))
    assert rows[-1] == [str(sample.tables["gaia"].num_rows)]


def _tap_rows(url: str, query: str, maxrec: int) -> list[dict[str, str]]:
    response = httpx.post(
        f"{url}/tap/sync",
        data={"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": query, "MAXREC": str(maxrec), "FORMAT": "csv"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return list(csv.DictReader(io.StringIO(response.text)))


def test_tap_maxrec_applies_to_the_final_result_only(
    deployments: dict[str, Deployment], sample: Sample, ref: Any
) -> None:
    gaia = sample.tables["gaia"].num_rows
    with running_server(deployments["postgres"]) as url:
        assert _tap_rows(url, "SELECT COUNT(*) AS n FROM (SELECT source_id FROM cat.gaia) AS x", 100) == [
            {"n": str(gaia)}
        ]
        avg = "SELECT AVG(g) AS m FROM (SELECT phot_g_mean_mag AS g FROM cat.gaia) AS x"
        assert float(_tap_rows(url, avg, 100)[0]["m"]) == pytest.approx(
            reference(ref, avg).column(0)[0].as_py()
        )
        union = INNER[4]
        assert _tap_rows(url, union, 100) == [{"n": str(gaia + sample.tables["hip"].num_rows)}]
        assert len(_tap_rows(url, "SELECT source_id FROM cat.gaia", 100)) == 100


# --- item 8: loads that commit out of load-id order -------------------------------------------------------


def test_a_long_lived_engine_sees_a_load_that_commits_after_a_later_one(
    pg_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    created: list[str] = []
    deployment = Deployment.create(
        tmp_path / "dep", database_url=new_database(pg_server, created, migrated=True)
    )
    seed_default_shard(deployment, pg_server)
    try:
        migrate.upgrade(deployment)
        star = TableOptions(ra="ra", dec="dec", id="id", chunk_order=1)
        load_files(deployment, "x", [star_file(tmp_path, "x1", 0, 1000, 1)], progress=False, create=star)
        with QueryEngine(deployment) as engine, running_server(deployment) as url:
            counts = (
                "SELECT COUNT(*) AS n FROM cat.x",
                "SELECT COUNT(*) AS n FROM cat.x WHERE ra >= 0",
            )

            def seen() -> list[int]:
                local = [engine.execute(sql).table.column(0)[0].as_py() for sql in counts]
                return local + [int(_tap_rows(url, sql, 10)[0]["n"]) for sql in counts]

            assert seen() == [1000] * 4
            with held_commit(monkeypatch, "cat.x") as held:
                thread, outcome = in_thread(
                    load_files, deployment, "x", [star_file(tmp_path, "x2", 1000, 500, 2)], progress=False
                )
                assert held.reached.wait(60)
                later = load_files(
                    deployment, "y", [star_file(tmp_path, "y1", 0, 10, 3)], progress=False, create=star
                )
                assert seen() == [1000] * 4  # y committed; x's second load is still running
                held.release()
                thread.join(60)
            assert outcome and not isinstance(outcome[0], BaseException), outcome
            assert outcome[0].load_id < later.load_id  # the earlier load committed last
            assert seen() == [1500] * 4
            with deployment.connect() as conn:
                generation = conn.execute(
                    sa.text("SELECT generation FROM dms.catalog_generation")
                ).scalar_one()
            assert engine.registry.snapshot().generation == generation
    finally:
        deployment.dispose()
        drop_databases(pg_server, created)


def test_dms_query_reads_adql_from_a_file_or_standard_input(
    deployments: dict[str, Deployment], sample: Sample, tmp_path: Path
) -> None:
    """A query that starts with a comment, from -f FILE and from '-' (issue 17); a GALACTIC circle is
    transformed to ICRS (noted on stderr) and counts what astropy counts."""
    import numpy as np
    from astropy.coordinates import SkyCoord

    gaia = sample.tables["gaia"]
    stars = SkyCoord(np.asarray(gaia["ra"]), np.asarray(gaia["dec"]), unit="deg")
    centre = stars[0].galactic
    l_deg, b_deg = float(centre.l.deg), float(centre.b.deg)
    query = (
        "-- stars near the first one, in galactic coordinates\n"
        "SELECT COUNT(*) AS n FROM cat.gaia\n"
        f"WHERE CONTAINS(POINT(ra, dec), CIRCLE('GALACTIC', {l_deg!r}, {b_deg!r}, 20)) = 1"
    )
    expected = int((stars.separation(centre).deg <= 20).sum())
    path = tmp_path / "near.adql"
    path.write_text(query)
    base = ["--data-dir", str(deployments["duckdb"].data_dir), "query", "--lang", "adql", "--format", "csv"]
    for args, stdin in ((["-f", str(path)], None), (["-"], query)):
        result = CliRunner().invoke(main, [*base, *args], input=stdin)
        assert result.exit_code == 0, result.output
        assert "note: CIRCLE: 1 position(s) in 'GALACTIC' transformed to ICRS" in result.output
        assert result.output.strip().splitlines()[-1] == str(expected)
    assert 0 < expected < gaia.num_rows


def test_dms_query_votable_keeps_nulls_typed(
    deployments: dict[str, Deployment], sample: Sample, tmp_path: Path
) -> None:
    """`dms query --format votable`: a nullable double stays a double with its nulls masked (it was
    written as unicodeChar "None"), and votlint finds nothing wrong when stilts is installed (issue 17)."""
    import shutil
    import subprocess

    import numpy as np
    from astropy.io.votable import parse_single_table

    out = tmp_path / "west.vot"
    sql = (
        "SELECT source_id, CASE WHEN ra > 180 THEN NULL ELSE ra END AS ra_west, "
        "CASE WHEN ra > 180 THEN NULL ELSE 'west' END AS side FROM cat.gaia"
    )
    data_dir = str(deployments["duckdb"].data_dir)
    result = CliRunner().invoke(
        main,
        [
            "--data-dir",
            data_dir,
            "query",
            sql,
            "--format",
            "votable",
            "-o",
            str(out),
            "--max-rows",
            "1000000",
        ],
    )
    assert result.exit_code == 0, result.output
    table = parse_single_table(str(out))
    fields = {f.name: f for f in table.fields}
    assert fields["ra_west"].datatype == "double" and fields["source_id"].datatype == "long"
    ra = np.asarray(sample.tables["gaia"]["ra"])
    assert int(np.ma.count_masked(table.array["ra_west"])) == int((ra > 180).sum()) > 0
    assert b"None" not in out.read_bytes()
    if shutil.which("stilts"):
        lint = subprocess.run(
            ["stilts", "votlint", f"location={out}"], capture_output=True, text=True, timeout=300
        )
        problems = [
            line for line in (lint.stdout + lint.stderr).splitlines() if line.startswith(("ERROR", "WARN"))
        ]
        assert not problems, problems
