"""Exposure metadata from raw FITS headers, by translators registered per instrument family.

A translator reads the headers of one raw file (primary first, then the first extension, where HST and
others put times) and returns an `ExposureMetadata`. `rubin.RubinTranslator` reads Rubin camera headers
(LSSTCam, LSSTComCam, LATISS and their simulated cameras, by Rubin's rules); `GenericTranslator` reads
the common FITS keywords (INSTRUME/TELESCOP, DATE-OBS or MJD-OBS or EXPSTART, EXPTIME, FILTER, RA/DEC).
Missing required keys raise HeaderError naming every missing key and the alternatives that would do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import astropy.units as u
from astropy.io import fits
from astropy.time import Time

from dms.services.archiver.bands import band_of
from dms.services.archiver.errors import HeaderError
from dms.services.archiver.footprint import Footprint, footprint, image_corners

SEQ_PER_DAY = 100_000  # exposure id = day_obs * 100000 + seq_num, as Rubin numbers exposures


@dataclass(frozen=True)
class ExposureMetadata:
    """What the registry, ConsDB and ObsCore need to know about one raw file (one detector)."""

    instrument: str
    exposure_id: int
    obs_id: str
    day_obs: int
    seq_num: int
    detector: int
    detector_name: str
    physical_filter: str
    band: str | None
    begin: Time  # TAI
    end: Time  # TAI
    exposure_time: float
    dark_time: float | None = None
    tracking_ra: float | None = None
    tracking_dec: float | None = None
    sky_angle: float | None = None
    azimuth: float | None = None
    zenith_angle: float | None = None
    observation_type: str | None = None
    observation_reason: str | None = None
    science_program: str | None = None
    target_name: str | None = None
    group_name: str | None = None
    controller: str = "O"
    telescope: str | None = None
    footprint: Footprint | None = None
    image_size: tuple[int, int] | None = None
    purpose: str = "SCIENCE"  # detector purpose: SCIENCE, WAVEFRONT or GUIDER
    simulated: bool = False
    notes: tuple[str, ...] = ()  # corrections and substitutions made while translating, reported to the user
    cards: dict[str, Any] = field(default_factory=dict)


class Headers:
    """Keyword lookup across the primary header and the first extension's."""

    def __init__(self, hdus: fits.HDUList, label: str) -> None:
        self.headers = [hdus[0].header] + ([hdus[1].header] if len(hdus) > 1 else [])
        self.label = label
        self.overrides: dict[str, Any] = {}  # corrected values (None: treat the key as absent)

    def get(self, *keys: str) -> Any:
        for key in keys:
            if key in self.overrides:
                if self.overrides[key] is not None:
                    return self.overrides[key]
                continue
            for header in self.headers:
                value = header.get(key)
                if value is not None and not (isinstance(value, str) and not value.strip()):
                    return value.strip() if isinstance(value, str) else value
        return None

    def has(self, key: str) -> bool:
        return self.get(key) is not None

    def require(self, missing: list[str], *keys: str) -> Any:
        value = self.get(*keys)
        if value is None:
            missing.append(" or ".join(keys))
        return value


class Translator(Protocol):
    name: ClassVar[str]

    def can_translate(self, headers: Headers) -> bool: ...

    def translate(self, headers: Headers, hdus: fits.HDUList) -> ExposureMetadata: ...


def _time(value: Any, scale: str, fmt: str | None = None) -> Time:
    return Time(
        value, format=fmt, scale=scale.lower() if scale.lower() in ("tai", "utc", "tt") else "utc"
    ).tai


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _day_obs(begin: Time) -> int:
    """Observing day: the date in the UTC-12h time zone, so a night does not straddle two days."""
    shifted = Time(begin.utc.mjd - 0.5, format="mjd", scale="utc")
    return int(shifted.strftime("%Y%m%d"))


def _missing_error(headers: Headers, missing: list[str]) -> HeaderError:
    return HeaderError(
        f"{headers.label}: missing required header keys: {'; '.join(missing)} "
        "(raw files need an instrument, an observation start time and an exposure time)"
    )


class GenericTranslator:
    """Any imaging camera writing the common FITS keywords (HST, small telescopes, ...)."""

    name: ClassVar[str] = "generic"

    def can_translate(self, headers: Headers) -> bool:
        return True

    def translate(self, headers: Headers, hdus: fits.HDUList) -> ExposureMetadata:
        missing: list[str] = []
        instrument = headers.require(missing, "INSTRUME", "TELESCOP")
        begin = self._begin(headers, missing)
        exptime = _float(headers.get("EXPTIME", "EXPOSURE", "ITIME"))
        end = self._end(headers, begin, exptime)
        if begin is not None and exptime is None and end is not None:
            exptime = float((end - begin).sec)
        if begin is not None and end is None:
            missing.append("EXPTIME or EXPOSURE or MJD-END or DATE-END or EXPEND")
        if missing or begin is None or end is None or exptime is None:
            raise _missing_error(headers, missing)
        day_obs = _day_obs(begin)
        seq = headers.get("SEQNUM", "EXPNUM", "FRAMENUM", "OBSNUM")
        if isinstance(seq, int) and 0 <= seq < SEQ_PER_DAY:
            seq_num = seq
        else:  # no usable sequence number: seconds since the observing day began, unique per start time
            day_start = Time(
                f"{str(day_obs)[:4]}-{str(day_obs)[4:6]}-{str(day_obs)[6:]}T12:00:00", scale="utc"
            )
            seq_num = round((begin.utc - day_start).sec) % SEQ_PER_DAY
        obs_id = headers.get("OBSID", "ROOTNAME", "OBS_ID", "EXPID", "FILENAME")
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(instrument))[:32]
        physical_filter = _generic_filter(headers)
        ra, dec = (
            _float(headers.get("RA_TARG", "RA_OBJ", "OBJCTRA")),
            _float(headers.get("DEC_TARG", "DEC_OBJ")),
        )
        if ra is None and isinstance(headers.get("RA"), float):
            ra, dec = _float(headers.get("RA")), _float(headers.get("DEC"))
        return ExposureMetadata(
            instrument=name,
            exposure_id=day_obs * SEQ_PER_DAY + seq_num,
            obs_id=str(obs_id or f"{name}_{begin.utc.isot}")[:64],
            day_obs=day_obs,
            seq_num=seq_num,
            detector=_int_key(headers, "DETECTOR", "CCDCHIP"),
            detector_name=str(headers.get("DETNAME", "DETECTOR", "CCDCHIP") or "0")[:32],
            physical_filter=physical_filter,
            band=band_of(physical_filter),
            begin=begin,
            end=end,
            exposure_time=exptime,
            dark_time=_float(headers.get("DARKTIME")),
            tracking_ra=None if ra is None else ra % 360.0,
            tracking_dec=dec,
            observation_type=_lower(headers.get("IMAGETYP", "IMGTYPE", "OBSTYPE")) or "science",
            science_program=_str(headers.get("PROPOSID", "PROGRAM", "PROGID")),
            target_name=_str(headers.get("TARGNAME", "OBJECT")),
            telescope=_str(headers.get("TELESCOP")),
            **_geometry(hdus),
            cards=_cards(hdus[0].header),
        )

    def _begin(self, headers: Headers, missing: list[str]) -> Time | None:
        scale = str(headers.get("TIMESYS") or "UTC")
        for key, fmt in (("MJD-BEG", "mjd"), ("DATE-BEG", "isot"), ("EXPSTART", "mjd"), ("MJD-OBS", "mjd")):
            value = headers.get(key)
            if value is not None:
                return _time(float(value) if fmt == "mjd" else value, scale, fmt)
        date = headers.get("DATE-OBS")
        if date is None:
            missing.append("DATE-OBS or DATE-BEG or MJD-OBS or MJD-BEG or EXPSTART")
            return None
        return _time(_iso_date(str(date), headers.get("TIME-OBS", "UT")), scale, "isot")

    def _end(self, headers: Headers, begin: Time | None, exptime: float | None) -> Time | None:
        scale = str(headers.get("TIMESYS") or "UTC")
        for key, fmt in (("MJD-END", "mjd"), ("DATE-END", "isot"), ("EXPEND", "mjd")):
            value = headers.get(key)
            if value is not None:
                return _time(float(value) if fmt == "mjd" else value, scale, fmt)
        if begin is not None and exptime is not None:
            return begin + exptime * u.s
        return None


def _iso_date(date: str, time_of_day: Any) -> str:
    """An ISO time from DATE-OBS (ISO or the pre-2000 'dd/mm/yy' form) and an optional TIME-OBS."""
    old = re.fullmatch(r"(\d\d)/(\d\d)/(\d\d)", date)
    if old:
        date = f"19{old.group(3)}-{old.group(2)}-{old.group(1)}"
    if "T" not in date and time_of_day:
        date = f"{date}T{time_of_day}"
    return date


def _generic_filter(headers: Headers) -> str:
    for key in ("FILTER", "FILTNAM1", "FILTER1", "FILTER2", "FILTNAM2"):
        value = headers.get(key)
        if isinstance(value, str) and not value.upper().startswith("CLEAR"):
            return value[:32]
    return "none"


def _int_key(headers: Headers, *keys: str) -> int:
    """The first of `keys` holding an integer (DETECTOR is a name such as 'WFC' for some instruments)."""
    for key in keys:
        value = headers.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return 0


def _lower(value: Any) -> str | None:
    return str(value).lower()[:16] if value is not None else None


def _str(value: Any) -> str | None:
    return None if value is None else str(value)[:64]


def _geometry(hdus: fits.HDUList) -> dict[str, Any]:
    corners = image_corners(hdus)
    size = None
    for hdu in hdus:
        if hdu.header.get("NAXIS", 0) >= 2 and hdu.header.get("NAXIS1") and hdu.header.get("NAXIS2"):
            size = (int(hdu.header["NAXIS1"]), int(hdu.header["NAXIS2"]))
            break
    return {"footprint": footprint(corners), "image_size": size}


def _cards(header: fits.Header) -> dict[str, Any]:
    """The primary header's cards as JSON-able values (COMMENT/HISTORY dropped)."""
    result: dict[str, Any] = {}
    for card in header.cards:
        if card.keyword in ("", "COMMENT", "HISTORY") or card.keyword in result:
            continue
        value = card.value
        result[card.keyword] = value if isinstance(value, bool | int | float | str) else str(value)
    return result


from dms.services.archiver.rubin import RubinTranslator  # noqa: E402  (it builds on the helpers above)

TRANSLATORS: tuple[Translator, ...] = (RubinTranslator(), GenericTranslator())


def translate(hdus: fits.HDUList, label: str) -> ExposureMetadata:
    """Metadata of a raw file by the first translator that recognises its headers."""
    headers = Headers(hdus, label)
    for translator in TRANSLATORS:
        if translator.can_translate(headers):
            return translator.translate(headers, hdus)
    raise HeaderError(f"{label}: no translator recognises these headers")  # pragma: no cover
