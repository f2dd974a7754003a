"""Rubin PT1.2-shaped catalog tables for the Qserv comparison suite (our own rows, realistic values).

Shapes follow the PT1.2 schema Qserv's integration tests load (lsst/qserv data/case01, case02 schemas):
camelCase columns (`objectId`, `ra_PS`, `decl_PS`, `filterId`, `scienceCcdExposureId`), Object as the
director, Source and ForcedSource placed by their object, RefObject partitioned like Object, and the small
Filter, Science_Ccd_Exposure and RefSrcMatch tables replicated. A subset of each table's columns is kept
(PT1.2 Object has ~230); floating-point columns are double so MariaDB and the shards hold the same values.
Positions lie around (ra, decl) = (2, 1), where PT1.2's test region is, with a strip across ra = 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import healpy
import numpy as np
import pyarrow as pa

from dms.loaders.catalog import TableOptions
from dms.loaders.samples import write_parquet

CHUNK_ORDER = 5
SUBCHUNK_ORDER = 12
N_OBJECTS = 1_500
FILTERS = ["u", "g", "r", "i", "z", "y", "Y", "NB921", "i2"]  # LSST's six, HSC's Y, NB921 and new i


@dataclass
class QservTables:
    tables: dict[str, pa.Table]  # name -> rows (as loaded into DMS and MariaDB)
    files: dict[str, Path]
    options: dict[str, TableOptions]
    order: list[str]  # load order (directors before children)
    virtual: dict[str, tuple[np.ndarray, np.ndarray]]  # partitioned table -> (chunkId, subChunkId) per row


def _nuniq_chunk(ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Qserv's chunkId/subChunkId as DMS defines them, computed independently with healpy."""
    chunk = healpy.ang2pix(2**CHUNK_ORDER, ra, dec, nest=True, lonlat=True).astype(np.int64)
    sub = healpy.ang2pix(2**SUBCHUNK_ORDER, ra, dec, nest=True, lonlat=True).astype(np.int64)
    return chunk + 4 * 4**CHUNK_ORDER, sub


def _mag_to_flux(mag: np.ndarray) -> np.ndarray:
    """AB magnitude -> flux density in erg/cm^2/s/Hz (PT1.2's flux unit)."""
    return np.power(10.0, -0.4 * (mag + 48.6))


def _objects(rng: np.random.Generator) -> pa.Table:
    n = N_OBJECTS
    ra = np.where(rng.random(n) < 0.06, rng.uniform(359.2, 360.0, n), rng.uniform(0.0, 4.5, n)) % 360.0
    dec = rng.uniform(-3.0, 5.0, n)
    ids = 386_937_898_687_249 + np.cumsum(rng.integers(1, 5_000, n))
    r_mag = rng.uniform(17.0, 24.5, n)
    iau = [
        None if rng.random() < 0.3 else f"LSST-J{r / 15:08.5f}{'+' if d >= 0 else '-'}{abs(d):07.4f}"
        for r, d in zip(ra, dec, strict=True)
    ]
    return pa.table(
        {
            "objectId": pa.array(ids, pa.int64()),
            "iauId": pa.array(iau, pa.string()),
            "ra_PS": ra,
            "ra_PS_Sigma": rng.uniform(1e-6, 3e-5, n),
            "decl_PS": dec,
            "decl_PS_Sigma": rng.uniform(1e-6, 3e-5, n),
            "raRange": pa.array([None if rng.random() < 0.1 else float(v) for v in rng.uniform(0, 2e-4, n)]),
            "declRange": rng.uniform(0, 2e-4, n),
            "muRa_PS": rng.normal(0, 5e-7, n),
            "muDecl_PS": rng.normal(0, 5e-7, n),
            "parallax_PS": np.abs(rng.normal(0, 2e-7, n)),
            "extendedness": pa.array(rng.choice([0, 1], n, p=[0.6, 0.4]), pa.int16()),
            "varProb": rng.random(n),
            "earliestObsTime": rng.uniform(51_075.0, 51_500.0, n),
            "latestObsTime": rng.uniform(53_500.0, 54_400.0, n),
            "flags": pa.array(rng.choice([0, 1, 2, 4, 6, 16, 32], n), pa.int32()),
            "rNumObs": pa.array(rng.integers(0, 60, n), pa.int32()),
            "uFlux_PS": _mag_to_flux(r_mag + rng.normal(1.5, 0.5, n)),
            "gFlux_PS": _mag_to_flux(r_mag + rng.normal(0.6, 0.3, n)),
            "rFlux_PS": _mag_to_flux(r_mag),
            "iFlux_PS": _mag_to_flux(r_mag - rng.normal(0.3, 0.2, n)),
            "zFlux_PS": pa.array(
                [None if rng.random() < 0.05 else float(v) for v in _mag_to_flux(r_mag - 0.5)]
            ),
            "iRadius_SG": rng.uniform(0.0, 2.0, n),
        }
    )


def _filters() -> pa.Table:
    return pa.table(
        {
            "filterId": pa.array(range(len(FILTERS)), pa.int8()),
            "filterName": FILTERS,
            "photClam": [365.0, 480.0, 622.0, 754.0, 869.0, 971.0, 976.0, 921.0, 770.0],
            "photBW": [60.0, 140.0, 140.0, 150.0, 100.0, 90.0, 80.0, 13.0, 150.0],
        }
    )


def _exposures(rng: np.random.Generator) -> pa.Table:
    visits = np.sort(rng.choice(np.arange(85_400, 89_900), 20, replace=False))
    rows = []
    for visit in visits:
        filter_id = int(rng.integers(0, 6))
        for raft, ccd in ((22, 0), (22, 1), (23, 4)):
            rows.append((int(visit) * 1000 + raft * 10 + ccd, int(visit), raft, ccd, filter_id))
    n = len(rows)
    return pa.table(
        {
            "scienceCcdExposureId": pa.array([r[0] for r in rows], pa.int64()),
            "visit": pa.array([r[1] for r in rows], pa.int32()),
            "raft": pa.array([r[2] for r in rows], pa.int16()),
            "raftName": [f"{r[2] // 10},{r[2] % 10}" for r in rows],
            "ccd": pa.array([r[3] for r in rows], pa.int16()),
            "ccdName": [f"S{r[3] // 3}{r[3] % 3}" for r in rows],
            "filterId": pa.array([r[4] for r in rows], pa.int8()),
            "filterName": [FILTERS[r[4]] for r in rows],
            "ra": rng.uniform(0.0, 4.5, n),
            "decl": rng.uniform(-3.0, 5.0, n),
            "taiMjd": rng.uniform(51_075.0, 54_400.0, n),
            "expTime": np.full(n, 15.0),
            "fluxMag0": rng.uniform(1.5e11, 2.5e11, n),
            "fwhm": rng.uniform(0.6, 1.4, n),
        }
    )


def _sources(rng: np.random.Generator, objects: pa.Table, exposures: pa.Table) -> pa.Table:
    per = rng.integers(1, 6, objects.num_rows)
    parent = np.repeat(np.arange(objects.num_rows), per)
    n = len(parent)
    exposure = rng.integers(0, exposures.num_rows, n)
    jitter = rng.normal(0, 0.1 / 3600, (2, n))
    flux = objects["rFlux_PS"].to_numpy()[parent] * rng.lognormal(0, 0.1, n)
    return pa.table(
        {
            "sourceId": pa.array(29_710_725_217_517_000 + np.arange(n) * 7, pa.int64()),
            "scienceCcdExposureId": exposures["scienceCcdExposureId"].take(pa.array(exposure)),
            "filterId": exposures["filterId"].take(pa.array(exposure)),
            "objectId": objects["objectId"].take(pa.array(parent)),
            "ra": (objects["ra_PS"].to_numpy()[parent] + jitter[0]) % 360.0,
            "decl": objects["decl_PS"].to_numpy()[parent] + jitter[1],
            "taiMidPoint": exposures["taiMjd"].to_numpy()[exposure],
            "psfFlux": flux,
            "psfFluxErr": flux * rng.uniform(0.01, 0.2, n),
            "apFlux": flux * rng.uniform(0.9, 1.1, n),
            "snr": rng.uniform(3, 300, n),
            "flagForDetection": pa.array(rng.choice([0, 1, 8, 9], n), pa.int16()),
        }
    )


def _forced(rng: np.random.Generator, objects: pa.Table, exposures: pa.Table) -> pa.Table:
    parent = np.repeat(np.arange(objects.num_rows), 2)
    exposure = rng.integers(0, exposures.num_rows, len(parent))
    flux = objects["rFlux_PS"].to_numpy()[parent] * rng.lognormal(0, 0.2, len(parent))
    return pa.table(
        {
            "objectId": objects["objectId"].take(pa.array(parent)),
            "scienceCcdExposureId": exposures["scienceCcdExposureId"].take(pa.array(exposure)),
            "psfFlux": flux,
            "psfFluxSigma": flux * 0.05,
            "flags": pa.array(rng.choice([0, 0, 0, 3], len(parent)), pa.int32()),
        }
    )


def _references(rng: np.random.Generator, objects: pa.Table) -> tuple[pa.Table, np.ndarray]:
    matched = np.flatnonzero(rng.random(objects.num_rows) < 0.8)
    n = len(matched)
    jitter = rng.normal(0, 0.2 / 3600, (2, n))
    mag = rng.uniform(17.0, 24.5, n)
    table = pa.table(
        {
            "refObjectId": pa.array(np.arange(1, n + 1) * 3 + 1_000, pa.int64()),
            "isStar": pa.array(rng.choice([0, 1], n), pa.int8()),
            "varClass": pa.array(rng.choice([0, 0, 0, 1, 2], n), pa.int8()),
            "ra": (objects["ra_PS"].to_numpy()[matched] + jitter[0]) % 360.0,
            "decl": objects["decl_PS"].to_numpy()[matched] + jitter[1],
            "gMag": mag + 0.5,
            "rMag": mag,
            "iMag": mag - 0.3,
            "redshift": pa.array(
                [
                    None if s else float(z)
                    for s, z in zip(rng.random(n) < 0.5, rng.uniform(0, 2, n), strict=True)
                ]
            ),
        }
    )
    return table, matched


def _matches(references: pa.Table, matched: np.ndarray, sources: pa.Table, objects: pa.Table) -> pa.Table:
    first_source = {}
    for i, object_id in enumerate(sources["objectId"].to_pylist()):
        first_source.setdefault(object_id, i)
    ids = objects["objectId"].to_pylist()
    rows = [
        (ref, first_source[ids[obj]])
        for ref, obj in zip(references["refObjectId"].to_pylist(), matched, strict=True)
    ]
    src = np.array([s for _, s in rows])
    r_ra, r_dec = references["ra"].to_numpy(), references["decl"].to_numpy()
    s_ra, s_dec = sources["ra"].to_numpy()[src], sources["decl"].to_numpy()[src]
    separation = np.degrees(
        2
        * np.arcsin(
            np.sqrt(
                np.sin(np.radians(s_dec - r_dec) / 2) ** 2
                + np.cos(np.radians(r_dec))
                * np.cos(np.radians(s_dec))
                * np.sin(np.radians(s_ra - r_ra) / 2) ** 2
            )
        )
    )
    return pa.table(
        {
            "refObjectId": pa.array([r for r, _ in rows], pa.int64()),
            "sourceId": sources["sourceId"].take(pa.array(src)),
            "angSep": separation,
            "nRefMatches": pa.array(np.ones(len(rows)), pa.int32()),
            "nSrcMatches": pa.array(np.ones(len(rows)), pa.int32()),
        }
    )


def make_qserv_tables(directory: Path, seed: int = 1_2) -> QservTables:
    rng = np.random.default_rng(seed)
    objects = _objects(rng)
    exposures = _exposures(rng)
    sources = _sources(rng, objects, exposures)
    forced = _forced(rng, objects, exposures)
    references, matched = _references(rng, objects)
    tables = {
        "Object": objects,
        "Source": sources,
        "ForcedSource": forced,
        "Filter": _filters(),
        "Science_Ccd_Exposure": exposures,
        "RefObject": references,
        "RefSrcMatch": _matches(references, matched, sources, objects),
    }
    director = TableOptions(
        ra="ra_PS", dec="decl_PS", id="objectId", chunk_order=CHUNK_ORDER, max_chunk_rows=10_000_000
    )
    options = {
        "Object": director,
        "Source": TableOptions(role="child", director="Object", director_key="objectId"),
        "ForcedSource": TableOptions(role="child", director="Object", director_key="objectId"),
        "Filter": TableOptions(role="replicated"),
        "Science_Ccd_Exposure": TableOptions(role="replicated"),
        "RefObject": TableOptions(ra="ra", dec="decl", id="refObjectId", like="Object"),
        "RefSrcMatch": TableOptions(role="replicated"),
    }
    obj_virtual = _nuniq_chunk(objects["ra_PS"].to_numpy(), objects["decl_PS"].to_numpy())
    position = {oid: i for i, oid in enumerate(objects["objectId"].to_pylist())}
    virtual = {
        "Object": obj_virtual,
        "RefObject": _nuniq_chunk(references["ra"].to_numpy(), references["decl"].to_numpy()),
    }
    for child in ("Source", "ForcedSource"):
        at = np.array([position[o] for o in tables[child]["objectId"].to_pylist()])
        virtual[child] = (obj_virtual[0][at], obj_virtual[1][at])
    files = {name: write_parquet(t, directory / f"{name}.parquet") for name, t in tables.items()}
    order = ["Object", "Source", "ForcedSource", "Filter", "Science_Ccd_Exposure", "RefObject", "RefSrcMatch"]
    return QservTables(tables, files, options, order, virtual)
