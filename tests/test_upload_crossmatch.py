"""An upload crossmatched with a partitioned catalog table reads only the chunks the upload's circles touch
and joins each chunk by declination zone, with the same answer as the unpartitioned DuckDB copy and as
astropy (issue 11, item 19)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io.votable import from_table
from astropy.table import Table
from vo_meta_support import MetaVO, meta_vo_fixture  # noqa: F401 (the meta_vo fixture)

from dms import migrate
from dms.deployment import Deployment
from dms.query.engine import QueryEngine
from tests.catalog_fixtures import Sample, add_postgres_shards, load_sample, make_sample, reference_connection
from tests.pg_support import (
    control_database,
    drop_database,
    seed_default_shard,
    shard_database,
)

RADIUS_ARCSEC = 36.0
ADQL = (
    "SELECT u.k, g.source_id FROM TAP_UPLOAD.t AS u JOIN cat.gaia AS g "
    f"ON DISTANCE(POINT('ICRS', u.ra, u.dec), POINT('ICRS', g.ra, g.dec)) < {RADIUS_ARCSEC / 3600!r}"
)
CONTAINS = (
    "SELECT u.k, g.source_id FROM cat.gaia AS g, TAP_UPLOAD.t AS u WHERE "
    f"CONTAINS(POINT('ICRS', g.ra, g.dec), CIRCLE('ICRS', u.ra, u.dec, {RADIUS_ARCSEC / 3600!r})) = 1"
)


def make_upload(gaia: pa.Table, rows: int, seed: int) -> pa.Table:
    """Half the rows near catalog stars (within 0 to 30 arcsec), half anywhere on the sky."""
    rng = np.random.default_rng(seed)
    near = rng.choice(gaia.num_rows, rows // 2, replace=False)
    stars = SkyCoord(gaia["ra"].to_numpy()[near], gaia["dec"].to_numpy()[near], unit="deg")
    moved = stars.directional_offset_by(
        rng.uniform(0, 360, len(near)) * u.deg, rng.uniform(0, 30, len(near)) * u.arcsec
    )
    far = rows - len(near)
    ra = np.concatenate([moved.ra.deg, rng.uniform(0, 360, far)])
    dec = np.concatenate([moved.dec.deg, np.degrees(np.arcsin(rng.uniform(-1, 1, far)))])
    return pa.table({"k": np.arange(rows, dtype=np.int64), "ra": ra, "dec": dec})


def astropy_pairs(upload: pa.Table, gaia: pa.Table) -> set[tuple[int, int]]:
    ups = SkyCoord(upload["ra"].to_numpy(), upload["dec"].to_numpy(), unit="deg")
    stars = SkyCoord(gaia["ra"].to_numpy(), gaia["dec"].to_numpy(), unit="deg")
    i, j, _, _ = stars.search_around_sky(ups, RADIUS_ARCSEC * u.arcsec)
    keys, ids = upload["k"].to_numpy(), gaia["source_id"].to_numpy()
    return {(int(keys[a]), int(ids[b])) for a, b in zip(i, j, strict=True)}


def _pairs(table: pa.Table) -> list[tuple[int, int]]:
    return sorted(zip(table["k"].to_pylist(), table["source_id"].to_pylist(), strict=True))


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    return make_sample(tmp_path_factory.mktemp("xmatch"))


@pytest.fixture(scope="module", params=["duckdb", "postgres"])
def engine(
    request: pytest.FixtureRequest, sample: Sample, pg_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[QueryEngine]:
    names = [control_database(pg_server, "xm"), shard_database(pg_server, "xm")]  # control, shard
    deployment = Deployment.create(tmp_path_factory.mktemp("xm"), database_url=pg_server.get_uri(names[0]))
    seed_default_shard(deployment, pg_server)
    try:
        migrate.upgrade(deployment)
        if request.param == "postgres":
            add_postgres_shards(deployment, [pg_server.get_uri(names[1])])
            deployment.config.shards = [s for s in deployment.config.shards if s.kind == "postgres"]
        load_sample(deployment, sample, chunk_order=3)
        with QueryEngine(deployment) as made:
            yield made
    finally:
        deployment.dispose()
        drop_database(pg_server, *names)


@pytest.mark.parametrize("query", [ADQL, CONTAINS])
def test_upload_crossmatch_equals_the_reference(engine: QueryEngine, sample: Sample, query: str) -> None:
    gaia = sample.tables["gaia"]
    upload = make_upload(gaia, 1_000, seed=3)
    result = engine.execute(query, lang="adql", uploads={"t": upload})
    expected = astropy_pairs(upload, gaia)
    assert len(expected) > 400
    assert _pairs(result.table) == sorted(expected)
    conn = reference_connection(sample)
    conn.register("up", upload)
    reference = conn.sql(
        "SELECT u.k, g.source_id FROM up u, cat.gaia g "
        f"WHERE scisql_angSep(u.ra, u.dec, g.ra, g.dec) < {RADIUS_ARCSEC / 3600!r}"
    ).to_arrow_table()
    assert _pairs(result.table) == _pairs(reference)
    plan = "\n".join(result.plan)
    assert "upload crossmatch: zone join" in plan and "_zone" in plan


def test_rows_without_a_position_and_outer_joins(engine: QueryEngine, sample: Sample) -> None:
    gaia = sample.tables["gaia"]
    upload = make_upload(gaia, 200, seed=4)
    ra = upload["ra"].to_pylist()
    ra[0] = None
    upload = upload.set_column(1, "ra", pa.array(ra, pa.float64()))
    inner = engine.execute(ADQL, lang="adql", uploads={"t": upload})
    expected = {p for p in astropy_pairs(upload.slice(1), gaia)}
    assert set(_pairs(inner.table)) == expected
    # Selecting every column shows the upload's own columns only, each match once.
    star = engine.execute(
        ADQL.replace("u.k, g.source_id", "u.*, g.source_id"), lang="adql", uploads={"t": upload}
    )
    assert star.table.column_names == ["k", "ra", "dec", "source_id"]
    assert set(_pairs(star.table)) == expected and star.table.num_rows == len(expected)
    # A LEFT JOIN keeps every upload row once: not a zone join, still right.
    left = engine.execute(ADQL.replace(" JOIN ", " LEFT JOIN "), lang="adql", uploads={"t": upload})
    assert sorted(left.table["k"].to_pylist()) == sorted(
        [k for k, _ in expected] + [k for k in range(200) if k not in {p[0] for p in expected}]
    )


def test_upload_crossmatch_over_tap(meta_vo: MetaVO) -> None:
    upload = make_upload(meta_vo.gaia, 1_000, seed=5)
    document = io.BytesIO()
    from_table(Table(upload.to_pydict())).to_xml(document, tabledata_format="binary2")
    response = httpx.post(
        f"{meta_vo.url}/tap/sync",
        data={"LANG": "ADQL", "QUERY": ADQL, "UPLOAD": "t,param:f", "MAXREC": "100000"},
        files={"f": ("t.xml", document.getvalue())},
        timeout=300,
    )
    assert response.status_code == 200, response.text
    got = Table.read(io.BytesIO(response.content), format="votable")
    pairs = sorted(zip(got["k"].tolist(), got["source_id"].tolist(), strict=True))
    assert pairs == sorted(astropy_pairs(upload, meta_vo.gaia)) and pairs
