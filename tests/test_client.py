"""dms.client against a live server, compared with direct SQL; the example notebooks run with nbclient."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from apdb_support import make_objects, make_sources, tai
from astropy.coordinates import SkyCoord
from astropy.table import Table
from click.testing import CliRunner
from vo_meta_support import MetaVO, meta_vo_fixture  # noqa: F401 (the meta_vo fixture)

from dms.cli import main
from dms.client import Client, ClientError
from dms.schema import felis_schema
from dms.services.apdb.api import Apdb
from dms.services.auth import add_user, issue_token
from dms.services.vo.tap_schema import sync

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
OBJECTS = 20


@pytest.fixture(scope="module")
def token(meta_vo: MetaVO) -> str:
    with meta_vo.deployment.connect() as conn:
        add_user(conn, "dana")
        _, secret = issue_token(conn, "dana")
        conn.commit()
    return secret


@pytest.fixture(scope="module")
def apdb_objects(meta_vo: MetaVO) -> list[int]:
    """Three visits of 20 DiaObjects in the APDB, published in TAP_SCHEMA."""
    rng = np.random.default_rng(3)
    ids = np.arange(1, OBJECTS + 1)
    positions = np.stack([rng.uniform(10, 11, OBJECTS), rng.uniform(20, 21, OBJECTS)], axis=1)
    with Apdb.from_deployment(meta_vo.deployment) as apdb:
        for visit in range(3):
            mjd = 60000.0 + visit
            objects = make_objects(rng, ids, positions, mjd)
            sources = make_sources(rng, objects, visit, 1, mjd, 1000 * (visit + 1))
            apdb.store(tai(mjd), objects, sources)
    with meta_vo.deployment.connect() as conn:
        sync(conn, extra=[felis_schema("apdb")])
        conn.commit()
    return [int(i) for i in ids]


def test_query_and_pandas_equal_direct_sql(meta_vo: MetaVO, token: str) -> None:
    client = Client(meta_vo.url, token)
    assert "dms_" not in repr(client)
    got = client.query("SELECT TOP 20 source_id, ra FROM cat.gaia WHERE dec > 0 ORDER BY source_id")
    gaia = meta_vo.gaia
    ids = np.sort(gaia["source_id"].to_numpy()[gaia["dec"].to_numpy() > 0])[:20]
    assert isinstance(got, Table) and got["source_id"].tolist() == ids.tolist()
    frame = client.to_pandas("SELECT count(*) AS n FROM survey.obj")
    with meta_vo.deployment.engine().connect() as conn:
        assert frame["n"][0] == conn.execute(sa.text("SELECT count(*) FROM survey.obj")).scalar_one()
    with pytest.raises(ClientError, match="unknown table"):
        client.query("SELECT * FROM user_nobody.t")


def test_cone_images_and_the_workspace(meta_vo: MetaVO, token: str) -> None:
    client = Client(meta_vo.url, token)
    near = client.cone(10.0, 20.0, 2.0, table="survey.obj")
    with meta_vo.deployment.engine().connect() as conn:
        expected = set(
            conn.execute(
                sa.text(
                    "SELECT id FROM survey.obj WHERE degrees(acos(least(1, sin(radians(dec)) * "
                    "sin(radians(20)) + cos(radians(dec)) * cos(radians(20)) * cos(radians(ra - 10))))) <= 2"
                )
            ).scalars()
        )
    assert set(near["id"].tolist()) == expected and expected
    images = client.images(10.0, 20.0)
    assert sorted(images["obs_id"].tolist()) == ["img0"]
    stars = client.query("SELECT TOP 30 source_id, ra, dec FROM cat.gaia ORDER BY source_id")
    stored = client.upload(stars, "picked")
    assert stored["qualified_name"] == "user_dana.picked" and stored["rows"] == 30
    back = client.query("SELECT source_id FROM user_dana.picked ORDER BY source_id")
    assert back["source_id"].tolist() == stars["source_id"].tolist()
    client.save("few", "SELECT TOP 3 source_id FROM cat.gaia ORDER BY source_id")
    assert [t["name"] for t in client.workspace()["tables"]] == ["few", "picked"]
    with pytest.raises(ClientError) as refused:
        client.share("picked", user="nobody")
    assert refused.value.status == 404
    client.drop("few")
    client.drop("picked")
    assert client.workspace()["tables"] == []
    with pytest.raises(ClientError) as anonymous:
        Client(meta_vo.url, "").workspace()
    assert anonymous.value.status == 401


def test_light_curve_equals_the_apdb(meta_vo: MetaVO, token: str, apdb_objects: list[int]) -> None:
    client = Client(meta_vo.url, token)
    curve = client.light_curve(apdb_objects[4])
    with meta_vo.deployment.engine().connect() as conn:
        rows = conn.execute(
            sa.text(
                'SELECT "diaSourceId", "psfFlux" FROM apdb."DiaSource" WHERE "diaObjectId" = :i '
                'ORDER BY "midpointMjdTai", "diaSourceId"'
            ),
            {"i": apdb_objects[4]},
        ).all()
    assert curve["diaSourceId"].tolist() == [r[0] for r in rows] and len(rows) == 3
    assert np.allclose(curve["psfFlux"], [r[1] for r in rows])


def test_dms_notebook_configures_the_client(meta_vo: MetaVO) -> None:
    result = CliRunner().invoke(
        main,
        [
            "--data-dir",
            str(meta_vo.deployment.data_dir),
            "notebook",
            "--url",
            meta_vo.url,
            "--user",
            "dana",
            "--print-env",
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"DMS_URL={meta_vo.url}" in result.output and "DMS_TOKEN is set" in result.output
    assert "dms_" not in result.output


def run_notebook(name: str, env: dict[str, str]) -> str:
    """Run a notebook with nbclient; the printed output of its last cell."""
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("ipykernel")
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    previous = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3").execute()
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    outputs = notebook.cells[-1].outputs
    return "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")


def test_example_notebooks_run_against_the_live_server(
    meta_vo: MetaVO, token: str, apdb_objects: list[int]
) -> None:
    env = {"DMS_URL": meta_vo.url, "DMS_TOKEN": token, "DMS_DIA_OBJECT": str(apdb_objects[0])}
    facts = json.loads(run_notebook("01_queries_and_workspace.ipynb", env))
    gaia = meta_vo.gaia
    order = np.lexsort((gaia["source_id"].to_numpy(), gaia["phot_g_mean_mag"].to_numpy()))
    assert facts["user"] == "dana"
    assert facts["bright"] == gaia["source_id"].to_numpy()[order][:100].tolist()
    assert facts["count"] == gaia.num_rows and facts["joined"] == 100
    assert facts["images"] == ["img0"]
    stars = SkyCoord(gaia["ra"].to_numpy(), gaia["dec"].to_numpy(), unit="deg")
    within = stars.separation(SkyCoord(10.0, 20.0, unit="deg")).deg <= 5.0
    assert facts["near"] == sorted(gaia["source_id"].to_numpy()[within].tolist()) and any(within)
    curve = json.loads(run_notebook("02_light_curve.ipynb", env))
    with meta_vo.deployment.engine().connect() as conn:
        ids = (
            conn.execute(
                sa.text(
                    'SELECT "diaSourceId" FROM apdb."DiaSource" WHERE "diaObjectId" = :i '
                    'ORDER BY "midpointMjdTai"'
                ),
                {"i": apdb_objects[0]},
            )
            .scalars()
            .all()
        )
    assert curve["ids"] == list(ids) and len(ids) == 3
