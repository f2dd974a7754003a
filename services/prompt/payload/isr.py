"""Instrument signature removal: a raw FITS file to a calibrated Exposure (nJy per pixel).

Bias subtraction (the master bias), gain (electrons per ADU from the raw's header), flat division (the master
flat of the raw's band), variance from the Poisson noise of the electrons and the read noise, the photometric
scale (the band's nominal zero point: nJy per electron), the WCS from the image extension, and the mask:
saturated pixels (at full well, grown by one pixel) and the detector's edge pixels. The raw's identity
(exposure, detector, band, times) comes from the archiver's header translation, so ISR reads raws exactly as
the archive registered them.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from pydantic import Field
from scipy import ndimage

from dms.services.archiver.errors import ArchiveError
from dms.services.archiver.metadata import ExposureMetadata, translate
from dms.services.prompt import photometry
from dms.services.prompt.exposure import MASK_EDGE, MASK_SAT, Exposure
from dms.services.prompt.payload.errors import CalibrationError, CorruptRawError, UnknownDetectorError
from dms.services.prompt.payload.psf import measure_fwhm
from dms.tasks import Task, TaskConfig, register_task

RawInput: TypeAlias = fits.HDUList | Path | str | bytes


class IsrConfig(TaskConfig):
    edge_pixels: int = Field(default=4, ge=0, le=100, description="Pixels along each side masked as EDGE.")
    saturation_grow: int = Field(default=1, ge=0, le=10, description="Grow the SAT mask by this many pixels.")
    default_fwhm_arcsec: float = Field(
        default=0.9, gt=0, description="Seeing assumed when too few stars measure it (arcsec)."
    )


@register_task
class IsrTask(Task[IsrConfig, Exposure]):
    """Raw -> calibrated exposure (bias, gain, flat, variance, photometric scale, WCS, mask, seeing)."""

    name = "prompt.isr"
    ConfigClass = IsrConfig

    def run(self, raw: RawInput, bias: fits.HDUList | None, flat: fits.HDUList | None) -> Exposure:
        with self.timed("read"):
            hdus, label = _open(raw)
            meta = _metadata(hdus, label)
            image_hdu = _image_hdu(hdus, label)
            data = np.asarray(image_hdu.data, np.float64)
            header = image_hdu.header
            gain, read_noise, saturate = (
                _number(header, key, label) for key in ("GAIN", "RDNOISE", "SATURATE")
            )
            band = meta.band or ""
            if band not in photometry.ZERO_POINTS:
                raise CorruptRawError(f"{label}: band {band!r} is not one of ugrizy; no photometric scale")
            bias_data = _calibration(bias, "bias", meta, data.shape, None, label)
            flat_data = _calibration(flat, "flat", meta, data.shape, band, label)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FITSFixedWarning)
                wcs = WCS(header)
            if not wcs.has_celestial:
                raise CorruptRawError(f"{label}: the image extension has no celestial WCS")
        with self.timed("calibrate"):
            above_bias = data - bias_data
            electrons = above_bias * gain
            if np.any(flat_data <= 0):
                raise CalibrationError(f"{label}: the flat has zero or negative pixels; not a master flat")
            scale = photometry.njy_per_electron(band, meta.exposure_time)
            image = electrons / flat_data * scale
            variance = (np.clip(electrons, 0.0, None) + read_noise**2) / flat_data**2 * scale**2
            mask = np.zeros(data.shape, np.uint32)
            saturated = above_bias >= saturate - 5 * read_noise / gain
            if self.config.saturation_grow:
                saturated = ndimage.binary_dilation(saturated, iterations=self.config.saturation_grow)
            mask[saturated] |= MASK_SAT
            edge = self.config.edge_pixels
            if edge:
                mask[:edge, :] |= MASK_EDGE
                mask[-edge:, :] |= MASK_EDGE
                mask[:, :edge] |= MASK_EDGE
                mask[:, -edge:] |= MASK_EDGE
        with self.timed("characterize"):
            fwhm, stars = measure_fwhm(image, variance, mask != 0, guess=0.9 / photometry.PIXEL_SCALE)
            if not np.isfinite(fwhm):
                fwhm = self.config.default_fwhm_arcsec / photometry.PIXEL_SCALE
                self.log.warning("%s: %d stars measured the seeing; assuming %.2f px", label, stars, fwhm)
        mid = meta.begin.tai.mjd + (meta.end.tai.mjd - meta.begin.tai.mjd) / 2
        return Exposure(
            image=image.astype(np.float32),
            variance=variance.astype(np.float32),
            mask=mask,
            wcs=wcs,
            psf_fwhm_pixels=float(fwhm),
            band=band,
            visit=int(meta.exposure_id),
            detector=int(meta.detector),
            mjd_tai=float(mid),
            exposure_time=float(meta.exposure_time),
            metadata={
                "instrument": meta.instrument,
                "obs_id": meta.obs_id,
                "psf_stars": stars,
                "gain": gain,
                "read_noise": read_noise,
                "zero_point": photometry.zero_point(band) + 2.5 * np.log10(meta.exposure_time),
            },
        )


def _open(raw: RawInput) -> tuple[fits.HDUList, str]:
    if isinstance(raw, fits.HDUList):
        return raw, str(raw.filename() or "raw")
    label = "raw bytes" if isinstance(raw, bytes) else str(raw)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if isinstance(raw, bytes):
                hdus = fits.open(io.BytesIO(raw), memmap=False, lazy_load_hdus=False)
            else:
                if not Path(raw).is_file():
                    raise CorruptRawError(f"{label}: no such raw file")
                hdus = fits.open(raw, memmap=False, lazy_load_hdus=False)
            for hdu in hdus:
                _ = hdu.data  # read now: a truncated file fails here, not later
    except CorruptRawError:
        raise
    except (OSError, ValueError, TypeError, IndexError) as exc:
        raise CorruptRawError(f"{label}: not a readable FITS raw ({exc})") from exc
    return hdus, label


def _metadata(hdus: fits.HDUList, label: str) -> ExposureMetadata:
    try:
        return translate(hdus, label)
    except ArchiveError as exc:
        if "has no detector" in str(exc):
            raise UnknownDetectorError(str(exc)) from exc
        raise CorruptRawError(f"{label}: headers ISR cannot use: {exc}") from exc


def _image_hdu(hdus: fits.HDUList, label: str) -> Any:
    for hdu in hdus:
        data = getattr(hdu, "data", None)
        if data is not None and getattr(data, "ndim", 0) == 2:
            return hdu
    raise CorruptRawError(f"{label}: no 2-d image in any extension")


def _number(header: fits.Header, key: str, label: str) -> float:
    value = header.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool) or not np.isfinite(value) or value < 0:
        raise CorruptRawError(f"{label}: the image header's {key} is {value!r}, not a non-negative number")
    return float(value)


def _calibration(
    hdus: fits.HDUList | None,
    kind: str,
    meta: ExposureMetadata,
    shape: tuple[int, ...],
    band: str | None,
    label: str,
) -> np.ndarray:
    """The master calibration's pixels, checked against the raw: detector, shape, band."""
    where = f"{label} (exposure {meta.exposure_id}, detector {meta.detector})"
    if hdus is None:
        raise CalibrationError(f"{where}: no master {kind}; ISR needs a bias and a flat for the detector")
    header = hdus[0].header
    data = hdus[0].data
    if data is None or data.ndim != 2:
        raise CalibrationError(f"{where}: the master {kind} holds no 2-d image")
    if header.get("CALIBTYP", kind) != kind:
        raise CalibrationError(f"{where}: given a {header.get('CALIBTYP')} as the master {kind}")
    if header.get("DETECTOR") is not None and int(header["DETECTOR"]) != meta.detector:
        raise CalibrationError(f"{where}: the master {kind} is for detector {header['DETECTOR']}")
    if data.shape != shape:
        raise CalibrationError(f"{where}: the master {kind} is {data.shape} pixels, the raw {shape}")
    if band is not None and header.get("BAND") not in (None, band):
        raise CalibrationError(f"{where}: the master flat is for band {header['BAND']}, the raw is {band}")
    return np.asarray(data, np.float64)
