"""TAP (ADQL) and SCS over the partitioned catalog: a real Gaia sample loaded with `dms load`, queried
through pyvo against a live server, checked against astropy on the same rows."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest
import pyvo
from astropy.coordinates import SkyCoord

from dms import migrate
from dms.deployment import Deployment
from dms.loaders.catalog import TableOptions, load_files
from dms.loaders.samples import gaia_table, write_parquet
from dms.services.vo.server import running_server
from tests.pg_support import control_database, drop_database, seed_default_shard


@dataclass
class Live:
    url: str
    gaia: pa.Table


@pytest.fixture(scope="module")
def live(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    name = control_database(pg_server, "vc")
    directory = tmp_path_factory.mktemp("vocat")
    deployment = Deployment.create(directory / "dep", database_url=pg_server.get_uri(name))
    seed_default_shard(deployment, pg_server)
    gaia = gaia_table().take(pa.array(np.arange(0, 482_176, 20)))
    try:
        migrate.upgrade(deployment)
        path = write_parquet(gaia, directory / "gaia.parquet")
        load_files(
            deployment,
            "gaia",
            [path],
            progress=False,
            create=TableOptions(ra="ra", dec="dec", id="source_id", chunk_order=2),
        )
        with running_server(deployment) as url:
            yield Live(url, gaia)
    finally:
        deployment.dispose()
        drop_database(pg_server, name)


def _inside(gaia: pa.Table, ra: float, dec: float, radius: float) -> set[int]:
    separation = (
        SkyCoord(gaia["ra"].to_numpy(), gaia["dec"].to_numpy(), unit="deg")
        .separation(SkyCoord(ra, dec, unit="deg"))
        .deg
    )
    return set(gaia["source_id"].to_numpy()[separation <= radius].tolist())


def test_adql_cone_on_the_partitioned_catalog(live: Live) -> None:
    tap = pyvo.dal.TAPService(f"{live.url}/tap")
    result = tap.search(
        "SELECT source_id, ra, dec FROM cat.gaia "
        "WHERE CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', 83.6, 22.0, 4)) = 1"
    ).to_table()
    assert set(result["source_id"].tolist()) == _inside(live.gaia, 83.6, 22.0, 4) != set()


def test_adql_aggregate_top_and_distance(live: Live) -> None:
    tap = pyvo.dal.TAPService(f"{live.url}/tap")
    top = tap.search(
        "SELECT TOP 3 source_id, DISTANCE(POINT('ICRS', ra, dec), POINT('ICRS', 10, 10)) AS d "
        "FROM cat.gaia WHERE DISTANCE(POINT('ICRS', ra, dec), POINT('ICRS', 10, 10)) < 5 ORDER BY d"
    ).to_table()
    separation = (
        SkyCoord(live.gaia["ra"].to_numpy(), live.gaia["dec"].to_numpy(), unit="deg")
        .separation(SkyCoord(10, 10, unit="deg"))
        .deg
    )
    nearest = live.gaia["source_id"].to_numpy()[np.argsort(separation)[:3]]
    assert top["source_id"].tolist() == nearest.tolist()
    count = tap.search("SELECT COUNT(*) AS n FROM cat.gaia WHERE dec > 60").to_table()
    assert int(count["n"][0]) == int((live.gaia["dec"].to_numpy() > 60).sum())


def test_maxrec_overflow_and_tables(live: Live) -> None:
    tap = pyvo.dal.TAPService(f"{live.url}/tap")
    result = tap.search("SELECT source_id FROM cat.gaia", maxrec=10)
    assert len(result) == 10 and result.query_status == "OVERFLOW"
    assert "cat.gaia" in [t.name for t in tap.tables]


def test_cone_search_on_a_loaded_catalog(live: Live) -> None:
    result = pyvo.dal.SCSService(f"{live.url}/scs/cat.gaia").search(pos=(200.0, -40.0), radius=3.0)
    assert set(result.to_table()["source_id"].tolist()) == _inside(live.gaia, 200.0, -40.0, 3.0) != set()


def test_bad_catalog_queries_get_a_votable_error(live: Live) -> None:
    for query in (
        "SELECT nope FROM cat.gaia",
        "SELECT * FROM cat.gaia a, cat.gaia b WHERE a.ra < b.ra",
    ):
        response = httpx.get(f"{live.url}/tap/sync", params={"LANG": "ADQL", "QUERY": query})
        assert response.status_code == 400 and 'value="ERROR"' in response.text, query


def test_legacy_catalog_names_resolve_with_a_warning(live: Live) -> None:
    """`catalog.gaia` (CATALOG is an ADQL reserved word) is read as `cat.gaia` for now, said in an INFO."""
    from astropy.io.votable import parse

    body = httpx.post(
        f"{live.url}/tap/sync",
        data={"LANG": "ADQL", "QUERY": "SELECT COUNT(*) AS n FROM catalog.gaia WHERE dec > 60"},
        timeout=120,
    ).content
    votable = parse(io.BytesIO(body))
    count = votable.get_first_table().to_table()["n"][0]
    assert int(count) == int((live.gaia["dec"].to_numpy() > 60).sum())
    infos = {i.name: i.value for i in votable.resources[0].infos}
    assert infos["QUERY_STATUS"] == "OK" and "catalog.gaia is now cat.gaia" in infos["WARNING"]
