"""Level 2 QC of a data release: DP1-shaped Object/Source/CcdVisit tables around real Gaia stars, with known
injected astrometric and photometric scatter, incompleteness and seeing, loaded with the real catalog
loaders; every metric is checked against an independent numpy/pandas computation from the same arrays (not
through the query engine), and a breached specification raises an alarm that reaches the gateway's stream."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pytest
from click.testing import CliRunner

from dms import migrate
from dms.cli import main
from dms.deployment import Deployment
from dms.loaders.catalog import TableOptions, load_files
from dms.loaders.samples import gaia_table, write_parquet
from dms.services.qc import level2
from tests.pg_support import control_database, drop_database, seed_default_shard

CENTRE = (56.75, 24.12)  # the Pleiades: many Gaia stars with G < 10
RADIUS_DEG = 2.0
ASTROM_SIGMA_MAS = 30.0  # per axis
PHOT_SIGMA_MAG = {"g": 0.003, "r": 0.012}  # r breaches PA1 (minimum 8 mmag)
SEEING = {"g": (0.8, 0.05), "r": (1.2, 0.05)}  # r breaches the design PSF FWHM (1.0 arcsec)
FORCED_SIGMA_MAG = 0.007  # ForcedSource in i: no psfFluxErr column, every row counts
DETECTED = 0.95
VISITS = 6


@dataclass
class Survey:
    gaia: pd.DataFrame  # the whole Gaia sample (the reference loaded into the catalog)
    truth: pd.DataFrame  # simulator-shaped: kind, id, visit, detector, ra, dec, flux
    objects: pd.DataFrame
    sources: pd.DataFrame
    ccd_visits: pd.DataFrame
    forced: pd.DataFrame
    truth_path: Path


def _angsep_deg(ra1: np.ndarray, dec1: np.ndarray, ra2: np.ndarray, dec2: np.ndarray) -> np.ndarray:
    """Haversine separations of every pair (rows: first set), in degrees."""
    r1, d1, r2, d2 = (np.radians(np.asarray(a, float)) for a in (ra1, dec1, ra2, dec2))
    h = (
        np.sin((d2[None, :] - d1[:, None]) / 2) ** 2
        + np.cos(d1[:, None]) * np.cos(d2[None, :]) * np.sin((r2[None, :] - r1[:, None]) / 2) ** 2
    )
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0, 1))))


def make_survey(directory: Path, seed: int = 5) -> Survey:
    rng = np.random.default_rng(seed)
    gaia = gaia_table().to_pandas()
    # the reference loaded into the catalog: real Gaia DR3 stars of a 20 x 20 degree region around the field
    gaia = gaia[(abs(gaia["dec"] - CENTRE[1]) < 10) & (abs(gaia["ra"] - CENTRE[0]) < 10)].reset_index(
        drop=True
    )
    near = _angsep_deg(np.array([CENTRE[0]]), np.array([CENTRE[1]]), gaia["ra"], gaia["dec"])[0]
    stars = gaia[near < RADIUS_DEG]
    n_faint = 150  # fainter stars the simulator adds (not in Gaia G < 10)
    faint_ra = CENTRE[0] + rng.uniform(-1.2, 1.2, n_faint) / np.cos(np.radians(CENTRE[1]))
    faint_dec = CENTRE[1] + rng.uniform(-1.2, 1.2, n_faint)
    static = pd.DataFrame(
        {
            "kind": ["gaia_star"] * len(stars) + ["star"] * n_faint,
            "id": np.concatenate([stars["source_id"].to_numpy(), np.arange(n_faint)]),
            "ra": np.concatenate([stars["ra"].to_numpy(), faint_ra]),
            "dec": np.concatenate([stars["dec"].to_numpy(), faint_dec]),
            "flux": 10 ** rng.uniform(4, 6, len(stars) + n_faint),
        }
    )
    truth = pd.concat(
        [static.assign(visit=v, detector=np.int16(v % 3)) for v in range(1, VISITS + 1)]
        + [
            pd.DataFrame(
                {"kind": ["transient"], "id": [1], "ra": [CENTRE[0]], "dec": [CENTRE[1]], "flux": [1e5]}
            )
        ]
    ).fillna({"visit": 1, "detector": 0})
    truth_path = directory / "truth.parquet"
    truth.to_parquet(truth_path, index=False)

    found = static[rng.uniform(size=len(static)) < DETECTED].reset_index(drop=True)
    n = len(found)
    cos_dec = np.cos(np.radians(found["dec"].to_numpy()))
    offsets = rng.normal(0, ASTROM_SIGMA_MAS / 3.6e6, (2, n))
    objects = pd.DataFrame(
        {
            "objectId": np.arange(1, n + 1, dtype=np.int64) * 100 + 3,
            "coord_ra": found["ra"].to_numpy() + offsets[0] / cos_dec,
            "coord_dec": found["dec"].to_numpy() + offsets[1],
            "tract": np.zeros(n, np.int64),
            "patch": np.digitize(found["ra"].to_numpy(), [CENTRE[0] - 0.5, CENTRE[0] + 0.5]).astype(np.int64),
        }
    )
    rows = []
    for band, sigma in PHOT_SIGMA_MAG.items():
        for visit in range(VISITS):
            flux = found["flux"].to_numpy() * 10 ** (-0.4 * rng.normal(0, sigma, n))
            rows.append(
                pd.DataFrame(
                    {
                        "objectId": objects["objectId"],
                        "ra": objects["coord_ra"],
                        "dec": objects["coord_dec"],
                        "band": band,
                        "visit": np.int64(100 * (band == "r") + visit),
                        "psfFlux": flux,
                        # one in ten Sources at S/N 20: below PA1's S/N >= 50, so left out of it
                        "psfFluxErr": flux / np.where(rng.uniform(size=n) < 0.1, 20.0, 200.0),
                    }
                )
            )
    sources = pd.concat(rows, ignore_index=True)
    forced = pd.DataFrame(
        {
            "objectId": np.repeat(objects["objectId"].to_numpy(), 4),
            "band": "i",
            "visit": np.tile(np.arange(200, 204, dtype=np.int64), n),
            "psfFlux": np.repeat(found["flux"].to_numpy(), 4)
            * 10 ** (-0.4 * rng.normal(0, FORCED_SIGMA_MAG, 4 * n)),
        }
    )
    sources.insert(0, "sourceId", np.arange(1, len(sources) + 1, dtype=np.int64))
    ccd_rows = []
    for band, (mean, spread) in SEEING.items():
        for visit in range(VISITS):
            for detector in range(3):
                ccd_rows.append(
                    {
                        "ccdVisitId": 1000 * (100 * (band == "r") + visit) + detector,
                        "visitId": 100 * (band == "r") + visit,
                        "detector": detector,
                        "band": band,
                        "seeing": rng.normal(mean, spread),
                        "pixelScale": 0.2,
                        "psfSigma": rng.normal(mean, spread) / 0.2 / 2.3548,
                    }
                )
    return Survey(gaia, truth, objects, sources, pd.DataFrame(ccd_rows), forced, truth_path)


@pytest.fixture(scope="module")
def release(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Deployment, Survey]]:
    name = control_database(pg_server, "qc2")
    root = tmp_path_factory.mktemp("qc2")
    dep = Deployment.create(root / "dep", database_url=pg_server.get_uri(name))
    seed_default_shard(dep, pg_server)
    migrate.upgrade(dep)
    survey = make_survey(root)
    gaia_file = write_parquet(pa.Table.from_pandas(survey.gaia, preserve_index=False), root / "gaia.parquet")
    files = {
        t: write_parquet(pa.Table.from_pandas(df, preserve_index=False), root / f"{t}.parquet")
        for t, df in (
            ("Object", survey.objects),
            ("Source", survey.sources),
            ("CcdVisit", survey.ccd_visits),
            ("ForcedSource", survey.forced),
        )
    }
    for table, path, options in (
        ("gaia", gaia_file, TableOptions(ra="ra", dec="dec", id="source_id", chunk_order=3)),
        (
            "dp1.Object",
            files["Object"],
            TableOptions(ra="coord_ra", dec="coord_dec", id="objectId", chunk_order=5),
        ),
        (
            "dp1.Source",
            files["Source"],
            TableOptions(role="child", director="dp1.Object", director_key="objectId"),
        ),
        ("dp1.CcdVisit", files["CcdVisit"], TableOptions(role="replicated")),
        (
            "dp1.ForcedSource",
            files["ForcedSource"],
            TableOptions(role="child", director="dp1.Object", director_key="objectId"),
        ),
    ):
        load_files(dep, table, [path], create=options, progress=False)
    yield dep, survey
    dep.dispose()
    drop_database(pg_server, name)


def _conn(dep: Deployment) -> psycopg.Connection:
    url = dep.control_url().set(drivername="postgresql").render_as_string(hide_password=False)
    return psycopg.connect(url, autocommit=True)


def _nearest_mas(ra: np.ndarray, dec: np.ndarray, ref_ra: np.ndarray, ref_dec: np.ndarray) -> np.ndarray:
    """Separation to the nearest reference position, in mas (brute force)."""
    return 3.6e6 * _angsep_deg(ra, dec, ref_ra, ref_dec).min(axis=1)


def _by_metric(results: list[level2.Level2Result]) -> dict[tuple[str, str], float]:
    return {(r.metric, r.production): r.value for r in results}


def test_metrics_equal_an_independent_computation(release: tuple[Deployment, Survey]) -> None:
    dep, survey = release
    results = level2.level2_metrics(dep, "DR-T1", truth=survey.truth_path)
    got = _by_metric(results)
    o = survey.objects

    gaia = survey.gaia
    box = (abs(gaia["dec"] - CENTRE[1]) < RADIUS_DEG + 1) & (abs(gaia["ra"] - CENTRE[0]) < 5)
    sep = _nearest_mas(o["coord_ra"], o["coord_dec"], gaia["ra"][box], gaia["dec"][box])
    matched = sep[sep < 1000]
    assert got[("validate_drp.AA1", "DR-T1")] == pytest.approx(np.median(matched), rel=1e-6)
    assert got[("dms_drp.astrom_gaia_rms", "DR-T1")] == pytest.approx(np.sqrt(np.mean(matched**2)), rel=1e-6)
    # and the injected scatter: a 2-D offset of sigma per axis has median sigma sqrt(2 ln 2)
    assert np.median(matched) == pytest.approx(ASTROM_SIGMA_MAS * np.sqrt(2 * np.log(2)), rel=0.2)

    s = survey.sources
    s = s[s["psfFlux"] / s["psfFluxErr"] >= 50].assign(mag=lambda d: -2.5 * np.log10(d["psfFlux"]))
    for band, sigma in PHOT_SIGMA_MAG.items():
        groups = s[s["band"] == band].groupby("objectId")["mag"]
        n, var = groups.count(), groups.var(ddof=1)
        keep = n >= 3
        pooled = 1000 * np.sqrt(((n[keep] - 1) * var[keep]).sum() / (n[keep] - 1).sum())
        assert got[("validate_drp.PA1", f"DR-T1/band={band}")] == pytest.approx(pooled, rel=1e-9)
        assert pooled == pytest.approx(1000 * sigma, rel=0.1)

    f = survey.forced.assign(mag=lambda d: -2.5 * np.log10(d["psfFlux"]))
    groups = f.groupby("objectId")["mag"]
    pooled = 1000 * np.sqrt(((groups.count() - 1) * groups.var(ddof=1)).sum() / (groups.count() - 1).sum())
    assert got[("dms_drp.forced_repeatability", "DR-T1/band=i")] == pytest.approx(pooled, rel=1e-9)
    assert pooled == pytest.approx(1000 * FORCED_SIGMA_MAG, rel=0.1)

    c = survey.ccd_visits
    for band in SEEING:
        assert got[("dms_drp.psf_fwhm", f"DR-T1/band={band}")] == pytest.approx(
            np.median(c[c["band"] == band]["seeing"]), rel=1e-12
        )

    static = survey.truth[survey.truth["kind"] != "transient"].drop_duplicates(["kind", "id"])
    found = _nearest_mas(static["ra"], static["dec"], o["coord_ra"], o["coord_dec"]) < 1000
    assert got[("dms_drp.completeness", "DR-T1")] == pytest.approx(found.mean(), rel=1e-12)
    assert found.mean() == pytest.approx(DETECTED, abs=0.03)

    for (tract, patch), n in o.groupby(["tract", "patch"]).size().items():
        assert got[("dms_drp.objects_per_patch", f"DR-T1/patch={tract},{patch}")] == n
    assert (
        len([k for k in got if k[0] == "dms_drp.objects_per_patch"]) == o.groupby(["tract", "patch"]).ngroups
    )


def test_sources_without_object_ids_are_associated_by_position(release: tuple[Deployment, Survey]) -> None:
    dep, _ = release
    from dms.query.engine import QueryEngine

    with QueryEngine(dep) as engine:
        sources = level2.read_table(engine, "dp1.Source", ["ra", "dec", "objectId"])
        objects = level2.read_table(engine, "dp1.Object", ["objectId", "coord_ra", "coord_dec"])
    by_position = level2._source_objects(sources.drop_columns(["objectId"]), objects, 1.0)
    np.testing.assert_array_equal(by_position, sources["objectId"].to_numpy())


def test_breaches_raise_alarms_that_reach_the_gateway(release: tuple[Deployment, Survey]) -> None:
    dep, survey = release
    level2.level2_metrics(dep, "DR-T2", truth=survey.truth_path)
    with _conn(dep) as conn:
        alarms = {(a["threshold"], a["series"]["production"]): a for a in level2.alarms_of(conn, "DR-T2")}
        events = conn.execute(
            "SELECT payload FROM dms.gateway_event WHERE kind = 'qc_alarm_raised' "
            "AND payload->'data_id'->>'release' = 'DR-T2'"
        ).fetchall()
    # r: 12 mmag fails PA1 at every level, g: 3 mmag passes all (stretch is 3.0: <=, noise decides): only r
    assert alarms[("validate_drp.PA1.minimum", "DR-T2/band=r")]["severity"] == "critical"
    assert ("validate_drp.PA1.design", "DR-T2/band=g") not in alarms
    assert alarms[("dms_drp.psf_fwhm.design", "DR-T2/band=r")]["severity"] == "warning"
    assert ("dms_drp.psf_fwhm.minimum", "DR-T2/band=r") not in alarms
    # AA1: ~35 mas (30 mas per axis) passes design (50) and minimum (100), misses stretch (20): info only
    assert alarms[("validate_drp.AA1.stretch", "DR-T2")]["severity"] == "info"
    assert not any(
        t in alarms for t in (("validate_drp.AA1.design", "DR-T2"), ("validate_drp.AA1.minimum", "DR-T2"))
    )
    assert not any(t.startswith("dms_drp.completeness") for t, _ in alarms)  # 95 % detected
    assert "validate_drp.PA1 = " in alarms[("validate_drp.PA1.minimum", "DR-T2/band=r")]["message"]
    raised = {e[0]["threshold"] for e in events}
    assert {"validate_drp.PA1.minimum", "dms_drp.psf_fwhm.design"} <= raised


def test_cli_and_bad_input(release: tuple[Deployment, Survey], tmp_path: Path) -> None:
    dep, _ = release
    runner = CliRunner()
    ok = runner.invoke(main, ["--data-dir", str(dep.data_dir), "qc", "release", "DR-T3"])
    assert ok.exit_code == 0, ok.output
    assert "validate_drp.PA1" in ok.output and "alarm" in ok.output
    missing = runner.invoke(
        main, ["--data-dir", str(dep.data_dir), "qc", "release", "DR-T4", "--object-table", "dp9.Object"]
    )
    assert missing.exit_code != 0 and "Traceback" not in missing.output
    assert "table dp9.Object is not in the catalog" in missing.output
    bad = tmp_path / "truth.parquet"
    bad.write_bytes(b"not parquet")
    broken = runner.invoke(
        main, ["--data-dir", str(dep.data_dir), "qc", "release", "DR-T5", "--truth", str(bad)]
    )
    assert broken.exit_code != 0 and "cannot read truth table" in broken.output
    assert "--truth" in runner.invoke(main, ["qc", "release", "--help"]).output
