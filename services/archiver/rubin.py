"""Rubin camera raws (LSSTCam, LSSTComCam, LATISS and their simulated cameras), translated by Rubin's rules.

The rules are the facts of Rubin's own translators (lsst/obs_lsst: lsst.py, lsstCam.py, comCam.py,
latiss.py, lsstCamSim.py, comCamSim.py), re-expressed here: instrument names as the cameras actually write
them, exposure ids with the controller offsets, Rubin's detector numbering (from camera_geometry.yaml),
observation types as the Butler and ConsDB name them, physical filters (LATISS FILTER~GRATING), pointing
from RASTART/DECSTART, shutter-open exposure times, and the known header errors of header_corrections.yaml.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

import astropy.units as u
from astropy.io import fits
from astropy.time import Time

from dms.services.archiver import camera as cameras
from dms.services.archiver.bands import band_of
from dms.services.archiver.corrections import correct
from dms.services.archiver.errors import HeaderError
from dms.services.archiver.metadata import (
    ExposureMetadata,
    Headers,
    _cards,
    _float,
    _geometry,
    _missing_error,
    _str,
)

# INSTRUME values the cameras write (compared case-insensitively) -> Rubin's instrument name.
INSTRUMENT_NAMES = {
    "lsstcam": "LSSTCam",
    "lsstcomcam": "LSSTComCam",
    "comcam": "LSSTComCam",
    "lsstcamsim": "LSSTCamSim",
    "comcamsim": "LSSTComCamSim",
    "lsstcomcamsim": "LSSTComCamSim",
    "latiss": "LATISS",
    "lsst_atiss": "LATISS",
    "lsstcam-imsim": "LSSTCam-imSim",
}
# 2019 lab data wrote INSTRUME = LSST_CAMERA; the camera code (TELCODE or CAMCODE) says which camera.
CAMERA_CODES = {"CC": "LSSTComCam", "MC": "LSSTCam"}
SIMULATED = frozenset({"LSSTCamSim", "LSSTComCamSim", "LSSTCam-imSim"})

# Exposure ids: day_obs * 100000 + seq_num, plus 1000 years (10**7 on day_obs) per controller index in
# "OCHPQS" (OCS, CCS, pHosim, simulated OCS, simulated CCS, simulated images). CCS shares OCS's counter
# after day_obs 20231004, and P/Q/S after 20250417: those get no offset.
CONTROLLERS = "OCHPQS"
CONTROLLER_INCREMENT = 1000_00_00
SEQ_PER_DAY = 100_000
UNIFIED_AFTER = {"C": 20231004, "P": 20250417, "Q": 20250417, "S": 20250417}

NOT_ON_SKY = frozenset({"bias", "flat"})  # darks are sometimes taken tracking (obs_lsst)
LATISS_ON_MOUNTAIN = Time("2020-01-01T00:00:00", scale="utc")
PLACEHOLDER_YEAR = 1972  # the camera wrote 1970-01-01T00:00:08 when it had no time


def recognise(headers: Headers) -> str | None:
    """Rubin's instrument name for these headers, or None when they are not a Rubin camera's."""
    value = headers.get("INSTRUME")
    if not isinstance(value, str):
        return None
    name = INSTRUMENT_NAMES.get(value.strip().lower())
    if name is None and value.strip().lower() == "lsst_camera":
        name = CAMERA_CODES.get(str(headers.get("TELCODE", "CAMCODE") or ""))
    return name


def exposure_id(day_obs: int, seq_num: int, controller: str | None) -> int:
    """Rubin's exposure id for a day, sequence number and controller code (obs_lsst compute_exposure_id)."""
    if not 0 <= seq_num < SEQ_PER_DAY:
        raise ValueError(f"sequence number {seq_num} outside 0..99999")
    if controller is not None and day_obs > UNIFIED_AFTER.get(controller, 99999999):
        controller = None
    offset = 0
    if controller is not None:
        index = CONTROLLERS.find(controller)
        if index < 0:
            raise ValueError(f"controller {controller!r} is not one of {', '.join(CONTROLLERS)}")
        offset = index * CONTROLLER_INCREMENT
    return (day_obs + offset) * SEQ_PER_DAY + seq_num


@dataclass
class _Times:
    begin: Time
    end: Time
    notes: list[str]


class RubinTranslator:
    """Headers of Rubin's cameras: one file per detector, the camera's primary-header keywords."""

    name: ClassVar[str] = "rubin"

    def can_translate(self, headers: Headers) -> bool:
        return recognise(headers) is not None

    def translate(self, headers: Headers, hdus: fits.HDUList) -> ExposureMetadata:
        instrument = recognise(headers)
        assert instrument is not None
        notes = self._correct(headers, instrument)
        missing: list[str] = []
        obs_id = headers.require(missing, "OBSID", "IMGNAME")
        seq = headers.require(missing, "SEQNUM")
        if headers.get("EXPTIME") is None:
            missing.append("EXPTIME")
        elif _float(headers.get("EXPTIME")) is None:
            exptime = headers.get("EXPTIME")
            raise HeaderError(f"{headers.label}: EXPTIME {exptime!r} is not a number of seconds")
        times = self._times(headers, missing)
        if missing or times is None:
            raise _missing_error(headers, missing)
        day_obs = _day_obs(headers, times.begin)
        controller = _controller(headers)
        try:
            exp_id = exposure_id(day_obs, int(seq), controller)
        except (TypeError, ValueError) as exc:
            raise HeaderError(
                f"{headers.label}: no Rubin exposure id from DAYOBS {day_obs}, SEQNUM {seq}: {exc}"
            ) from exc
        detector = self._detector(headers, instrument)
        obs_type = _observation_type(headers, instrument, times.begin)
        physical_filter = _physical_filter(headers, instrument)
        exposure_time = _exposure_time(headers, instrument)
        pointing = _pointing(headers, obs_type)
        sky_angle = _float(headers.get("ROTPA", "ROTANGLE"))
        return ExposureMetadata(
            instrument=instrument,
            exposure_id=exp_id,
            obs_id=str(obs_id),
            day_obs=day_obs,
            seq_num=int(seq),
            detector=detector.id,
            detector_name=detector.name,
            physical_filter=physical_filter,
            band=band_of(physical_filter, _str(headers.get("FILTBAND"))),
            begin=times.begin,
            end=times.end,
            exposure_time=exposure_time,
            dark_time=_dark_time(headers, instrument, exposure_time),
            tracking_ra=None if pointing is None else pointing[0],
            tracking_dec=None if pointing is None else pointing[1],
            sky_angle=sky_angle,
            azimuth=_azimuth(headers),
            zenith_angle=_zenith_angle(headers),
            observation_type=obs_type,
            observation_reason=_lower(headers.get("REASON", "TESTTYPE")),
            science_program=_str(headers.get("PROGRAM", "RUNNUM")),
            target_name=_str(headers.get("OBJECT")),
            group_name=_str(headers.get("GROUPID")),
            controller=controller or "O",
            telescope=_str(headers.get("TELESCOP")),
            purpose=detector.purpose,
            simulated=instrument in SIMULATED or (controller or "O") in "HPQS",
            notes=tuple(notes + times.notes),
            **self._geometry(hdus, instrument, detector, pointing, sky_angle),
            cards=_cards(hdus[0].header),
        )

    def _correct(self, headers: Headers, instrument: str) -> list[str]:
        """Apply the known-header-error table before reading anything else."""
        seq = headers.get("SEQNUM")
        day = headers.get("DAYOBS")
        begin = _first_time(headers)
        overrides, notes = correct(
            headers.get,
            instrument,
            int(day) if _is_int(day) else None,
            int(seq) if _is_int(seq) else None,
            begin,
        )
        headers.overrides.update(overrides)
        return [f"corrected {note}" for note in notes]

    def _times(self, headers: Headers, missing: list[str]) -> _Times | None:
        begin = _first_time(headers)
        if begin is None:
            missing.append("MJD-BEG or DATE-BEG or MJD-OBS or DATE-OBS")
            return None
        notes: list[str] = []
        exptime = _float(headers.get("EXPTIME")) or 0.0
        end = _time_of(headers, "MJD-END", "DATE-END")
        if begin.utc.datetime.year < PLACEHOLDER_YEAR:
            begin, end = _placeholder_start(headers, begin), None
            notes.append(
                f"DATE-BEG {_text(headers, 'DATE-BEG', 'MJD-BEG')} is the camera's 1970 placeholder;"
                f" start = the file's DATE {headers.get('DATE')}, end = DATE + EXPTIME (Rubin's rule)"
            )
        if end is None:
            end = begin + max(exptime, 0.0) * u.s
        if end < begin:
            raise HeaderError(
                f"{headers.label}: the exposure ends before it begins: DATE-END/MJD-END "
                f"{_text(headers, 'DATE-END', 'MJD-END')} is {(begin - end).sec:.3f} s before "
                f"DATE-BEG/MJD-BEG {_text(headers, 'DATE-BEG', 'MJD-BEG')}; nothing archived (fix the header "
                "or add a correction to header_corrections.yaml)"
            )
        return _Times(begin, end, notes)

    def _detector(self, headers: Headers, instrument: str) -> cameras.Detector:
        geometry = cameras.camera(instrument)
        assert geometry is not None, instrument
        if instrument == "LATISS":  # a single detector, whatever RAFTBAY/CCDSLOT say
            return geometry.detectors["RXX_S00"]
        raft, slot = headers.get("RAFTBAY"), headers.get("CCDSLOT")
        name = f"{raft}_{slot}" if raft and slot else _str(headers.get("CHIPID", "DETNAME"))
        detector = geometry.detector(name or "")
        if detector is None:
            known = sorted(geometry.detectors)
            raise HeaderError(
                f"{headers.label}: {instrument} has no detector {name or '(no RAFTBAY/CCDSLOT)'}; "
                f"RAFTBAY_CCDSLOT must name one of its {len(known)} detectors ({known[0]} ... {known[-1]})"
            )
        return detector

    def _geometry(
        self,
        hdus: fits.HDUList,
        instrument: str,
        detector: cameras.Detector,
        pointing: tuple[float, float] | None,
        sky_angle: float | None,
    ) -> dict[str, Any]:
        """The detector's footprint from the boresight and camera geometry (raws carry no sky WCS)."""
        found = _geometry(hdus)
        geometry = cameras.camera(instrument)
        if pointing is not None and sky_angle is not None and geometry is not None:
            found["footprint"] = geometry.detector_footprint(detector, pointing[0], pointing[1], sky_angle)
        elif pointing is None:
            found["footprint"] = None  # no position: a WCS in an amplifier header is not to be trusted either
        found["image_size"] = (detector.nx, detector.ny)
        return found


def _is_int(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().isdigit()
    return isinstance(value, int) and not isinstance(value, bool)


def _time_of(headers: Headers, mjd_key: str, iso_key: str) -> Time | None:
    """A TAI time from an MJD key or an ISO key (Rubin's headers are TAI whatever TIMESYS says)."""
    mjd, iso = headers.get(mjd_key), headers.get(iso_key)
    try:
        if isinstance(mjd, int | float) and not isinstance(mjd, bool):
            return Time(float(mjd), format="mjd", scale="tai")
        if isinstance(iso, str):
            return Time(iso, format="isot", scale="tai")
    except ValueError as exc:
        raise HeaderError(
            f"{headers.label}: unreadable {mjd_key}/{iso_key} ({mjd!r}, {iso!r}): {exc}"
        ) from exc
    return None


def _first_time(headers: Headers) -> Time | None:
    return _time_of(headers, "MJD-BEG", "DATE-BEG") or _time_of(headers, "MJD-OBS", "DATE-OBS")


def _text(headers: Headers, *keys: str) -> str:
    return next((str(headers.get(k)) for k in keys if headers.get(k) is not None), "(absent)")


def _placeholder_start(headers: Headers, begin: Time) -> Time:
    """The file's creation time (DATE, MJD) standing in for a 1970 start time, or a refusal saying why."""
    written = _time_of(headers, "MJD", "DATE")
    if written is None or written.utc.datetime.year < PLACEHOLDER_YEAR:
        raise HeaderError(
            f"{headers.label}: DATE-BEG {begin.isot} is the camera's 1970 placeholder, not an observation "
            "time, and no file DATE replaces it; nothing archived (times before 1972 cannot be converted "
            "to TAI for the EFD)"
        )
    return written


def _day_obs(headers: Headers, begin: Time) -> int:
    """DAYOBS, else the TAI date 12 hours before the start (Rubin's observing day, SITCOMTN-032)."""
    day = headers.get("DAYOBS")
    if _is_int(day):
        return int(day)
    return int((begin.tai - 12 * u.hour).strftime("%Y%m%d"))


def _controller(headers: Headers) -> str | None:
    value = headers.get("CONTRLLR")
    return str(value).strip()[:1].upper() if value else None


def _observation_type(headers: Headers, instrument: str, begin: Time) -> str | None:
    """Rubin's observation type: IMGTYPE lower-cased, OBJECT and SKYEXP are 'science'."""
    keys = ("OBSTYPE", "IMGTYPE") if instrument == "LATISS" else ("IMGTYPE",)
    value = headers.get(*keys)
    if value is None:
        if instrument != "LATISS":
            return None
        return "bias" if _float(headers.get("EXPTIME")) == 0.0 else "unknown"
    kind = str(value).strip().lower()
    if kind == "object" and instrument == "LATISS" and begin < LATISS_ON_MOUNTAIN:
        return "labobject"  # LATISS in the lab: no sky
    return "science" if kind in ("object", "skyexp") else kind[:16]


def _is_empty(name: str) -> bool:
    return bool(re.fullmatch(r"empty_?\d*", name.strip().lower()))


def _physical_filter(headers: Headers, instrument: str) -> str:
    """LATISS: FILTER~GRATING, always both; others: FILTER[~FILTER1][~FILTER2], trailing ~empty dropped."""
    primary = headers.get("FILTER")
    first = "unknown" if primary is None else ("empty" if _is_empty(str(primary)) else str(primary))
    if instrument == "LATISS":
        grating = headers.get("GRATING")
        second = "unknown" if grating is None else ("empty" if _is_empty(str(grating)) else str(grating))
        return f"{first}~{second}"[:32]
    parts = [first] + [str(v) for v in (headers.get("FILTER1"), headers.get("FILTER2")) if v is not None]
    joined = "~".join("empty" if _is_empty(p) else p for p in parts).replace("NONE", "none")
    while joined.endswith("~empty"):
        joined = joined[: -len("~empty")]
    return joined[:32]


def _exposure_time(headers: Headers, instrument: str) -> float:
    """Shutter-open time (SHUTTIME) when positive, else the requested EXPTIME; LATISS always EXPTIME."""
    shutter = _float(headers.get("SHUTTIME"))
    if instrument != "LATISS" and shutter is not None and shutter > 0.0:
        return shutter
    return float(_float(headers.get("EXPTIME")) or 0.0)


def _dark_time(headers: Headers, instrument: str, exposure_time: float) -> float | None:
    dark = _float(headers.get("DARKTIME"))
    if instrument == "LATISS" and (dark is None or dark < exposure_time):
        return exposure_time  # Rubin: LATISS dark time never below the exposure time
    return dark


def _pointing(headers: Headers, observation_type: str | None) -> tuple[float, float] | None:
    """Tracking RA/Dec: RASTART/DECSTART, else RA/DEC; none for bias/flat, non-RADEC tracking or RA=DEC=0."""
    if observation_type in NOT_ON_SKY:
        return None
    tracking = headers.get("TRACKSYS")
    if isinstance(tracking, str) and tracking.strip() and tracking.strip().upper() != "RADEC":
        return None
    for ra_key, dec_key in (("RASTART", "DECSTART"), ("RA", "DEC")):
        ra, dec = _float(headers.get(ra_key)), _float(headers.get(dec_key))
        if ra is None or dec is None or (ra == 0.0 and dec == 0.0):
            continue  # absent, or the camera's placeholder for "no position"
        if -90.0 <= dec <= 90.0:
            return ra % 360.0, dec
    return None


def _azimuth(headers: Headers) -> float | None:
    azimuth = _float(headers.get("AZSTART"))
    return None if azimuth is None else azimuth % 360.0


def _zenith_angle(headers: Headers) -> float | None:
    elevation = _float(headers.get("ELSTART"))
    return None if elevation is None or not -5.55 <= elevation <= 95.55 else 90.0 - elevation


def _lower(value: Any) -> str | None:
    return None if value is None else str(value).strip().lower()[:64]
