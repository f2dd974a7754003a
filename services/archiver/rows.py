"""The database rows an archived raw file adds: Butler dimension records, ConsDB exposure, ObsCore.

All written inside the archiving transaction (see ingest.archive_file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from dms.query import regions
from dms.services.archiver.bands import wavelength_range
from dms.services.archiver.errors import ExposureConflictError
from dms.services.archiver.metadata import ExposureMetadata
from dms.services.backbone.registry import DatasetRef

INSTRUMENT_CLASSES = {  # Rubin's Butler instrument classes and detector counts
    "LSSTCam": ("lsst.obs.lsst.LsstCam", 205),
    "LSSTComCam": ("lsst.obs.lsst.LsstComCam", 9),
    "LATISS": ("lsst.obs.lsst.Latiss", 1),
    "LSSTCamSim": ("lsst.obs.lsst.LsstCamSim", 205),
    "LSSTComCamSim": ("lsst.obs.lsst.LsstComCamSim", 9),
    "LSSTCam-imSim": ("lsst.obs.lsst.LsstCamImSim", 205),
}
#: The ConsDB schema of each instrument that has one (Rubin's cdb_* definitions, schema/__init__.py).
CONSDB_INSTRUMENTS = {
    "LSSTCam": "cdb_lsstcam",
    "LSSTComCam": "cdb_lsstcomcam",
    "LSSTComCamSim": "cdb_lsstcomcamsim",
    "LATISS": "cdb_latiss",
}
GENERIC_CLASS = "dms.services.archiver.metadata.GenericTranslator"
ID_MAX = 10**13  # exposure ids are day_obs * 100000 + seq_num < 10**13


def write_exposure(conn: sa.Connection, meta: ExposureMetadata, label: str) -> None:
    """Instrument, filter, day_obs, detector and exposure records (kept if present), then ConsDB rows."""
    class_name, detector_max = INSTRUMENT_CLASSES.get(meta.instrument, (GENERIC_CLASS, 1000))
    _insert(
        conn,
        "dms.instrument",
        {
            "name": meta.instrument,
            "class_name": class_name,
            "detector_max": detector_max,
            "exposure_max": ID_MAX,
            "visit_max": ID_MAX,
        },
    )
    _insert(
        conn,
        "dms.physical_filter",
        {"instrument": meta.instrument, "name": meta.physical_filter, "band": meta.band},
    )
    _insert(
        conn, "dms.day_obs", {"instrument": meta.instrument, "id": meta.day_obs, **_day_span(meta.day_obs)}
    )
    _insert(
        conn,
        "dms.detector",
        {
            "instrument": meta.instrument,
            "id": meta.detector,
            "full_name": meta.detector_name,
            "raft": meta.detector_name.split("_")[0] if "_" in meta.detector_name else None,
            "name_in_raft": meta.detector_name.split("_")[1] if "_" in meta.detector_name else None,
            "purpose": meta.purpose,
        },
    )
    _check_exposure(conn, meta, label)
    _insert(
        conn,
        "dms.exposure",
        {
            "instrument": meta.instrument,
            "id": meta.exposure_id,
            "obs_id": meta.obs_id,
            "physical_filter": meta.physical_filter,
            "day_obs": meta.day_obs,
            "seq_num": meta.seq_num,
            "group_name": meta.group_name,
            "observation_type": meta.observation_type,
            "observation_reason": meta.observation_reason,
            "science_program": meta.science_program,
            "target_name": meta.target_name,
            "exposure_time": meta.exposure_time,
            "dark_time": meta.dark_time,
            "tracking_ra": meta.tracking_ra,
            "tracking_dec": meta.tracking_dec,
            "sky_angle": meta.sky_angle,
            "azimuth": meta.azimuth,
            "zenith_angle": meta.zenith_angle,
            "timespan_begin": meta.begin.tai.datetime,
            "timespan_end": meta.end.tai.datetime,
        },
    )
    if meta.instrument in CONSDB_INSTRUMENTS:
        _write_consdb(conn, meta, CONSDB_INSTRUMENTS[meta.instrument])


def _check_exposure(conn: sa.Connection, meta: ExposureMetadata, label: str) -> None:
    clash = conn.execute(
        sa.text(
            # day_obs + seq_num is not an identity: Rubin's controllers numbered exposures separately
            "SELECT id, obs_id, day_obs, seq_num FROM dms.exposure WHERE instrument = :i AND "
            "(id = :id OR obs_id = :o) "
            "AND NOT (id = :id AND obs_id = :o AND day_obs = :d AND seq_num = :s)"
        ),
        {
            "i": meta.instrument,
            "id": meta.exposure_id,
            "o": meta.obs_id,
            "d": meta.day_obs,
            "s": meta.seq_num,
        },
    ).first()
    if clash is not None:
        raise ExposureConflictError(
            f"{label}: exposure {meta.exposure_id} (obs id {meta.obs_id}, day_obs {meta.day_obs}, seq_num "
            f"{meta.seq_num}) clashes with archived exposure {clash.id} (obs id {clash.obs_id}, day_obs "
            f"{clash.day_obs}, seq_num {clash.seq_num}) of {meta.instrument}: duplicate exposure id or obs "
            "id; nothing archived"
        )


def _write_consdb(conn: sa.Connection, meta: ExposureMetadata, namespace: str) -> None:
    mid = meta.begin + (meta.end - meta.begin) / 2
    zd = meta.zenith_angle
    _insert(
        conn,
        f"{namespace}.exposure",
        {
            "exposure_id": meta.exposure_id,
            "exposure_name": meta.obs_id[:20],
            "controller": meta.controller,
            "day_obs": meta.day_obs,
            "seq_num": meta.seq_num,
            "physical_filter": meta.physical_filter,
            "band": meta.band,
            "s_ra": meta.tracking_ra,
            "s_dec": meta.tracking_dec,
            "sky_rotation": meta.sky_angle,
            "azimuth_start": meta.azimuth,
            "altitude_start": None if zd is None else 90.0 - zd,
            "zenith_distance_start": zd,
            "exp_midpt": mid.tai.datetime,
            "exp_midpt_mjd": mid.tai.mjd,
            "obs_start": meta.begin.tai.datetime,
            "obs_start_mjd": meta.begin.tai.mjd,
            "obs_end": meta.end.tai.datetime,
            "obs_end_mjd": meta.end.tai.mjd,
            "exp_time": meta.exposure_time,
            "dark_time": meta.dark_time,
            "group_id": meta.group_name,
            "img_type": meta.observation_type,
            "science_program": meta.science_program,
            "observation_reason": meta.observation_reason,
            "target_name": meta.target_name,
            "simulated": meta.simulated,
        },
        key=("day_obs", "seq_num"),
    )
    _insert(
        conn,
        f"{namespace}.ccdexposure",
        {
            "ccdexposure_id": meta.exposure_id * 1000 + meta.detector,
            "exposure_id": meta.exposure_id,
            "day_obs": meta.day_obs,
            "seq_num": meta.seq_num,
            "detector": meta.detector,
            "s_region": meta.footprint.stcs() if meta.footprint else None,
        },
        key=("day_obs", "seq_num", "detector"),
    )


def write_obscore(conn: sa.Connection, meta: ExposureMetadata, ref: DatasetRef, file: Path, run: str) -> None:
    """The ObsCore row through which SIA finds the image (one per raw file, i.e. per detector)."""
    em_min, em_max = wavelength_range(meta.physical_filter, meta.band)
    fp = meta.footprint
    row: dict[str, Any] = {
        "dataproduct_type": "image",
        "dataproduct_subtype": "lsst.raw",
        "calib_level": 1,
        "obs_collection": run[:128],
        "obs_id": meta.obs_id,
        "obs_publisher_did": f"ivo://dms/backbone?id={ref.id}",
        "obs_title": f"{meta.instrument} raw {meta.obs_id} detector {meta.detector}"[:256],
        "facility_name": (meta.telescope or meta.instrument)[:128],
        "instrument_name": meta.instrument,
        "target_name": (meta.target_name or None) and meta.target_name[:32],
        "access_url": file.resolve().as_uri(),
        "access_format": "image/fits",
        "s_ra": fp.ra if fp else meta.tracking_ra,
        "s_dec": fp.dec if fp else meta.tracking_dec,
        "s_fov": fp.fov if fp else None,
        "s_region": fp.stcs() if fp else None,  # TEXT since c0018: never cut
        "s_xel1": meta.image_size[0] if meta.image_size else None,
        "s_xel2": meta.image_size[1] if meta.image_size else None,
        "t_min": meta.begin.tai.mjd,
        "t_max": meta.end.tai.mjd,
        "t_exptime": meta.exposure_time,
        "t_resolution": meta.exposure_time,
        "t_xel": 1,
        "em_min": em_min,
        "em_max": em_max,
        "em_xel": 1,
        "o_ucd": "phot.count",
        "lsst_detector": meta.detector,
        "lsst_band": (meta.band or None) and meta.band[:10],
        "lsst_filter": meta.physical_filter[:10],
    }
    row.update(regions.column_values(row["s_region"]))  # the footprint's shape and HEALPix coverage
    columns = ", ".join(f'"{k}"' for k in row)
    conn.execute(
        sa.text(f'INSERT INTO ivoa."ObsCore" ({columns}) VALUES ({", ".join(":" + k for k in row)})'), row
    )


def _insert(
    conn: sa.Connection, table: str, values: dict[str, Any], key: tuple[str, ...] | None = None
) -> None:
    columns = ", ".join(values)
    conflict = f"({', '.join(key)})" if key else ""
    conn.execute(
        sa.text(
            f"INSERT INTO {table} ({columns}) VALUES ({', '.join(':' + k for k in values)}) "
            f"ON CONFLICT {conflict} DO NOTHING"
        ),
        values,
    )


def _day_span(day_obs: int) -> dict[str, Any]:
    import astropy.units as u
    from astropy.time import Time

    text = str(day_obs)
    begin = Time(f"{text[:4]}-{text[4:6]}-{text[6:]}T12:00:00", scale="utc")
    return {"timespan_begin": begin.tai.datetime, "timespan_end": (begin + 1 * u.day).tai.datetime}
