"""The APDB on real PostgreSQL: round trips, versions, history windows, region reads against an independent
numpy/astropy selection, one transaction per visit, and bad input refused with nothing stored."""

from __future__ import annotations

import time

import astropy.units as u
import numpy as np
import pandas as pd
import psycopg
import pytest
from apdb_support import (
    FIELD_RADIUS,
    conninfo,
    field_positions,
    make_forced,
    make_objects,
    make_sources,
    tai,
)
from astropy.coordinates import SkyCoord
from psycopg import sql

from dms.deployment import Deployment
from dms.services.apdb import (
    Apdb,
    ApdbConfig,
    ApdbConflictError,
    ApdbInputError,
    Circle,
    ConvexPolygon,
)
from dms.services.apdb.api import latest_in, region_select
from dms.services.apdb.tables import apdb_table

pytest_plugins = ["apdb_support"]  # the apdb_deployment and apdb fixtures

RA0, DEC0 = 53.13, -28.10  # the Extended Chandra Deep Field South, an LSST deep-drilling field
MJD0 = 60_700.25


def _visit(rng: np.random.Generator, n: int = 2_000, first_id: int = 1) -> pd.DataFrame:
    positions = field_positions(rng, n, RA0, DEC0, FIELD_RADIUS)
    return make_objects(rng, np.arange(first_id, first_id + n), positions, MJD0)


def _sorted(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    return frame.sort_values(key).reset_index(drop=True)


def _count(dep: Deployment, table: str, where: str = "TRUE") -> int:
    with psycopg.connect(conninfo(dep)) as conn:
        row = conn.execute(f'SELECT count(*) FROM apdb."{table}" WHERE {where}').fetchone()
    assert row is not None
    return int(row[0])


def test_store_and_read_back_every_value(apdb: Apdb) -> None:
    rng = np.random.default_rng(1)
    objects = _visit(rng)
    sources = make_sources(rng, objects, visit=2025120300123, detector=94, mjd=MJD0, first_id=10_000)
    forced = make_forced(objects, visit=2025120300123, detector=94, mjd=MJD0, first_id=50_000)
    summary = apdb.store(tai(MJD0), objects, sources, forced)
    assert (summary.objects, summary.sources, summary.forced_sources) == (2000, 2000, 2000)

    region = Circle(RA0, DEC0, FIELD_RADIUS + 0.01)
    got = _sorted(apdb.get_dia_objects(region), "diaObjectId")
    assert len(got) == len(objects)
    for column in objects.columns:
        expected = objects[column].to_numpy()
        np.testing.assert_array_equal(got[column].to_numpy(dtype=expected.dtype), expected, err_msg=column)
    assert (got["validityStartMjdTai"] == tai(MJD0).mjd).all()
    assert got["validityEndMjdTai"].isna().all()
    # NaN in a float column is NULL: it comes back as missing, not as 0
    assert got["u_psfFluxMean"].isna().sum() == objects["u_psfFluxMean"].isna().sum() > 0

    back = _sorted(apdb.get_dia_sources(region, None, tai(MJD0 + 1)), "diaSourceId")  # type: ignore[arg-type]
    for column in sources.columns:
        expected = sources[column].to_numpy()
        np.testing.assert_array_equal(back[column].to_numpy(dtype=expected.dtype), expected, err_msg=column)
    forced_back = apdb.get_dia_forced_sources(region, objects["diaObjectId"][:10], tai(MJD0 + 1))
    assert forced_back is not None and sorted(forced_back["diaObjectId"]) == list(range(1, 11))
    assert apdb.contains_visit_detector(2025120300123, 94)
    assert not apdb.contains_visit_detector(2025120300123, 95)


@pytest.mark.parametrize("seed", range(6))
def test_region_reads_equal_an_astropy_selection(apdb: Apdb, seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    objects = _visit(rng, n=3_000)
    apdb.store(tai(MJD0), objects)
    coords = SkyCoord(objects["ra"].to_numpy() * u.deg, objects["dec"].to_numpy() * u.deg)

    centre = field_positions(rng, 1, RA0, DEC0, 1.0)[0]
    radius = float(rng.uniform(0.05, 0.8))
    inside = coords.separation(SkyCoord(centre[0] * u.deg, centre[1] * u.deg)) <= radius * u.deg
    got = apdb.get_dia_objects(Circle(float(centre[0]), float(centre[1]), radius))
    assert sorted(got["diaObjectId"]) == sorted(objects["diaObjectId"][inside])
    assert inside.sum() > 0

    # a detector-sized quadrilateral (rotated), checked against great-circle half-spaces computed by astropy
    half = float(rng.uniform(0.05, 0.4))
    angle = rng.uniform(0, 2 * np.pi)
    corners = []
    for k in range(4):
        offset = SkyCoord(centre[0] * u.deg, centre[1] * u.deg).directional_offset_by(
            (angle + np.pi / 4 + k * np.pi / 2) * u.rad, half * np.sqrt(2) * u.deg
        )
        corners.append((float(offset.ra.deg), float(offset.dec.deg)))
    xyz = np.stack([c.cartesian.xyz.value for c in [SkyCoord(r * u.deg, d * u.deg) for r, d in corners]])
    points = coords.cartesian.xyz.value.T
    sides = points @ np.cross(xyz, np.roll(xyz, -1, axis=0)).T
    expected = (sides >= 0).all(axis=1) | (sides <= 0).all(axis=1)
    got_poly = apdb.get_dia_objects(ConvexPolygon.from_vertices(corners))
    assert sorted(got_poly["diaObjectId"]) == sorted(objects["diaObjectId"][expected])
    assert expected.sum() > 0


def test_a_region_across_ra_zero_and_near_the_pole(apdb: Apdb) -> None:
    rng = np.random.default_rng(7)
    wrap = field_positions(rng, 1_000, 0.2, -5.0, 1.0)
    pole = field_positions(rng, 1_000, 10.0, -89.5, 1.0)
    objects = make_objects(rng, np.arange(1, 2_001), np.concatenate([wrap, pole]), MJD0)
    apdb.store(tai(MJD0), objects)
    coords = SkyCoord(objects["ra"].to_numpy() * u.deg, objects["dec"].to_numpy() * u.deg)
    for ra, dec, radius in ((359.9, -5.2, 0.7), (200.0, -89.9, 0.6)):
        inside = coords.separation(SkyCoord(ra * u.deg, dec * u.deg)) <= radius * u.deg
        got = apdb.get_dia_objects(Circle(ra, dec, radius))
        assert sorted(got["diaObjectId"]) == sorted(objects["diaObjectId"][inside]) and inside.sum() > 0


def test_new_versions_supersede_old_ones(apdb: Apdb, apdb_deployment: Deployment) -> None:
    rng = np.random.default_rng(2)
    first = _visit(rng, n=500)
    apdb.store(tai(MJD0), first)
    second = first.iloc[:200].copy()
    second["nDiaSources"] = second["nDiaSources"] + 1
    second["r_psfFluxMean"] = np.float32(1234.5)
    summary = apdb.store(tai(MJD0 + 1), second)
    assert summary.objects_superseded == 200

    got = _sorted(apdb.get_dia_objects(Circle(RA0, DEC0, FIELD_RADIUS + 0.01)), "diaObjectId")
    assert len(got) == 500  # one current version per object
    updated = got["diaObjectId"] <= 200
    assert (got.loc[updated, "r_psfFluxMean"] == np.float32(1234.5)).all()
    np.testing.assert_array_equal(got.loc[~updated, "r_psfFluxMean"], first["r_psfFluxMean"].iloc[200:])
    assert (got.loc[updated, "validityStartMjdTai"] == tai(MJD0 + 1).mjd).all()
    # the old versions are kept, closed at the new visit's time; DiaObjectLast mirrors the current ones
    assert _count(apdb_deployment, "DiaObject") == 700
    assert _count(apdb_deployment, "DiaObject", f'"validityEndMjdTai" = {float(tai(MJD0 + 1).mjd)!r}') == 200
    assert _count(apdb_deployment, "DiaObjectLast") == 500
    assert _count(apdb_deployment, "DiaObjectLast", '"nDiaSources" = 1') == apdb.count_unassociated_objects()


def test_history_window_of_sources(apdb_deployment: Deployment, apdb: Apdb) -> None:
    rng = np.random.default_rng(3)
    objects = _visit(rng, n=100)
    times = (MJD0 - 400, MJD0 - 300, MJD0 - 100, MJD0 - 1)
    apdb.store(tai(times[0]), objects)
    for k, mjd in enumerate(times):
        sources = make_sources(rng, objects, visit=1000 + k, detector=10, mjd=mjd, first_id=1 + 1000 * k)
        forced = make_forced(objects, visit=1000 + k, detector=10, mjd=mjd, first_id=1 + 1000 * k)
        if k:
            apdb.store(tai(mjd), objects.iloc[:0], sources, forced)
        else:
            apdb.store(tai(mjd + 0.5), objects.iloc[:0], sources, forced)
    region = Circle(RA0, DEC0, FIELD_RADIUS + 0.01)
    window = apdb.get_dia_sources(region, objects["diaObjectId"], tai(MJD0))
    assert window is not None and sorted(set(window["visit"])) == [1001, 1002, 1003]  # 360 days back
    by_region = apdb.get_dia_sources(region, None, tai(MJD0))
    assert by_region is not None and len(by_region) == 300
    short = Apdb.from_deployment(apdb_deployment, ApdbConfig(read_forced_sources_months=4))
    forced_window = short.get_dia_forced_sources(region, objects["diaObjectId"], tai(MJD0))
    assert forced_window is not None and sorted(set(forced_window["visit"])) == [1002, 1003]
    none = Apdb.from_deployment(apdb_deployment, ApdbConfig(read_sources_months=0))
    assert none.get_dia_sources(region, None, tai(MJD0)) is None
    assert apdb.get_dia_sources(region, [], tai(MJD0)) is not None
    short.close()
    none.close()


def test_a_failed_visit_stores_nothing(apdb: Apdb, apdb_deployment: Deployment) -> None:
    rng = np.random.default_rng(4)
    objects = _visit(rng, n=300)
    sources = make_sources(rng, objects, visit=1, detector=1, mjd=MJD0, first_id=1)
    apdb.store(tai(MJD0), objects, sources)
    before = {t: _count(apdb_deployment, t) for t in ("DiaObject", "DiaObjectLast", "DiaSource")}

    later = objects.iloc[:50].copy()
    repeated = make_sources(rng, later, visit=2, detector=1, mjd=MJD0 + 1, first_id=250)  # ids 250-299 exist
    with pytest.raises(ApdbConflictError, match=r"diaSourceId.*already exists.*nothing was stored"):
        apdb.store(tai(MJD0 + 1), later, repeated)
    after = {t: _count(apdb_deployment, t) for t in before}
    assert after == before
    assert _count(apdb_deployment, "DiaObject", '"validityEndMjdTai" IS NOT NULL') == 0


def test_the_same_visit_twice_or_out_of_order_is_refused(apdb: Apdb, apdb_deployment: Deployment) -> None:
    rng = np.random.default_rng(5)
    objects = _visit(rng, n=100)
    apdb.store(tai(MJD0), objects)
    with pytest.raises(ApdbConflictError, match="already has a version valid from"):
        apdb.store(tai(MJD0), objects)
    with pytest.raises(ApdbConflictError, match="stored in time order"):
        apdb.store(tai(MJD0 - 1), objects.iloc[:3])
    assert _count(apdb_deployment, "DiaObject") == 100


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.assign(colour=1.0), r"unknown columns \['colour'\]"),
        (lambda f: f.drop(columns=["ra"]), r"missing required columns \['ra'\]"),
        (lambda f: f.assign(nDiaSources="many"), r"DiaObject.nDiaSources: cannot be stored as int32"),
        (lambda f: f.assign(dec=np.where(f.index == 3, np.nan, f["dec"])), "DiaObject.dec: 1 rows are null"),
        (lambda f: f.assign(dec=np.where(f.index == 3, 95.0, f["dec"])), "no valid position"),
        (lambda f: f.assign(diaObjectId=np.where(f.index == 3, 1, f["diaObjectId"])), "more than once"),
        (lambda f: f.assign(diaObjectId=np.where(f.index == 3, None, f["diaObjectId"])), "NOT NULL"),
    ],
)
def test_bad_frames_are_refused_naming_the_column(
    apdb: Apdb, apdb_deployment: Deployment, change: object, message: str
) -> None:
    objects = _visit(np.random.default_rng(6), n=20)
    with pytest.raises(ApdbInputError, match=message):
        apdb.store(tai(MJD0), change(objects))  # type: ignore[operator]
    assert _count(apdb_deployment, "DiaObject") == 0


def test_bad_regions_and_times_are_refused(apdb: Apdb) -> None:
    with pytest.raises(ApdbInputError, match="radius"):
        Circle(10.0, 0.0, -1.0)
    with pytest.raises(ApdbInputError, match="not a sky position"):
        Circle(10.0, 91.0, 1.0)
    with pytest.raises(ApdbInputError, match="3 to 20 vertices"):
        ConvexPolygon(((0.0, 0.0), (1.0, 0.0)))
    with pytest.raises(ApdbInputError, match="one astropy Time"):
        apdb.get_dia_sources(Circle(1.0, 1.0, 1.0), None, 60000.0)  # type: ignore[arg-type]
    with pytest.raises(ApdbInputError, match="must be integers"):
        apdb.get_dia_sources(Circle(1.0, 1.0, 1.0), ["x"], tai(MJD0))  # type: ignore[list-item]


def test_region_reads_are_index_range_scans(apdb: Apdb, apdb_deployment: Deployment) -> None:
    rng = np.random.default_rng(8)
    everywhere = np.stack([rng.uniform(0, 360, 30_000), np.degrees(np.arcsin(rng.uniform(-1, 1, 30_000)))], 1)
    apdb.store(tai(MJD0), make_objects(rng, np.arange(1, 30_001), everywhere, MJD0))
    region = Circle(RA0, DEC0, 0.5)
    query = region_select(
        sql.Identifier("apdb", "DiaObject"), apdb_table("DiaObject"), region, latest_in(region)
    )
    assert query is not None
    with psycopg.connect(conninfo(apdb_deployment)) as conn:
        # before statistics exist (a fresh APDB) and after
        plans = [_plan(conn, query)]
        conn.execute('ANALYZE apdb."DiaObject"')
        plans.append(_plan(conn, query))
    for plan in plans:
        assert "IDX_DiaObject_latest_hpx" in plan and 'Seq Scan on "DiaObject"' not in plan, plan


def _plan(conn: psycopg.Connection, query: sql.Composable) -> str:
    return "\n".join(row[0] for row in conn.execute(sql.SQL("EXPLAIN {}").format(query)))


def test_the_readme_example_runs(
    apdb: Apdb,
    apdb_deployment: Deployment,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = re.search(r"## Alert Production Database \(APDB\).*?```python\n(.*?)```", readme, re.S)
    assert block is not None
    objects = _visit(np.random.default_rng(9), n=400)
    apdb.store(tai(60_990.0), objects)  # November 2025: before the example's visit
    monkeypatch.setenv("DMS_DATA_DIR", str(apdb_deployment.data_dir))
    exec(compile(block.group(1), "README.md", "exec"), {})
    assert capsys.readouterr().out.strip() == "400 DiaObject versions stored; 400 superseded"
    assert _count(apdb_deployment, "DiaObject") == 800


def test_reads_by_id_do_not_scan_the_history(apdb: Apdb, apdb_deployment: Deployment) -> None:
    """A visit's objects are found through the indexes however young the tables: the per-visit cost must not
    grow with the history (Rubin's relational APDB grew linearly, to 10-15 s per visit)."""
    rng = np.random.default_rng(10)
    objects = _visit(rng, n=20_000)
    apdb.store(tai(MJD0), objects, make_sources(rng, objects, visit=1, detector=1, mjd=MJD0, first_id=1))
    scans = "SELECT seq_scan, idx_scan FROM pg_stat_user_tables WHERE relname = %s"
    with psycopg.connect(conninfo(apdb_deployment), autocommit=True) as conn:
        before = conn.execute(scans, ("DiaSource",)).fetchone()
        reader = Apdb.from_deployment(apdb_deployment)
        back = reader.get_dia_sources(Circle(RA0, DEC0, 0.1), range(1, 5_001), tai(MJD0 + 1))
        reader.close()  # a backend's statistics are flushed when it ends
        time.sleep(0.5)
        conn.execute("SELECT pg_stat_clear_snapshot()")
        after = conn.execute(scans, ("DiaSource",)).fetchone()
    assert back is not None and sorted(back["diaObjectId"]) == list(range(1, 5_001))
    assert before is not None and after is not None
    assert after[0] == before[0], "the read scanned the whole DiaSource table"
    assert after[1] > before[1]
