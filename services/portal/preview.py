"""PNG previews of the FITS images SIA finds: the first 2-D image HDU, optionally cut out around a
position (astropy Cutout2D on the image's WCS), scaled with IRAF's zscale (astropy ZScaleInterval)."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import Cutout2D, NoOverlapError
from astropy.utils.exceptions import AstropyWarning
from astropy.visualization import ZScaleInterval
from astropy.wcs import WCS
from PIL import Image

from dms.services.vo.errors import ServiceError

MAX_SIDE = 1024
"""A preview is at most this many pixels on a side (larger images are binned by block means)."""


def image_data(path: Path) -> tuple[np.ndarray, fits.Header]:
    """The first HDU holding a 2-D (or 3-D: first plane) image, as float64, with its header."""
    try:
        with fits.open(path, memmap=False) as hdus:
            for hdu in hdus:
                if (
                    isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU))
                    and hdu.data is not None
                ):
                    data = np.asarray(hdu.data, dtype=np.float64)
                    while data.ndim > 2:
                        data = data[0]
                    if data.ndim == 2:
                        return data, hdu.header.copy()
    except (OSError, ValueError, TypeError) as exc:
        raise ServiceError(f"the file is not a readable FITS image: {exc}", status=422) from None
    raise ServiceError("the FITS file has no 2-D image to preview", status=422)


def cutout(data: np.ndarray, header: fits.Header, ra: float, dec: float, size_deg: float) -> np.ndarray:
    """The part of the image within `size_deg` (a square) of (ra, dec), by its celestial WCS."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        wcs = WCS(header, naxis=2)
    if not wcs.has_celestial:
        raise ServiceError("this image has no celestial WCS: a cutout needs one (ask for the whole image)")
    try:
        cut = Cutout2D(data, SkyCoord(ra, dec, unit="deg"), size_deg * u.deg, wcs=wcs, mode="trim")
    except (NoOverlapError, ValueError):  # ValueError: the position projects outside the WCS (NaN)
        raise ServiceError(f"the position {ra}, {dec} is not on this image", status=422) from None
    return np.asarray(cut.data)


def binned(data: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    """Block means so that neither side exceeds `max_side` (NaN-aware)."""
    factor = int(np.ceil(max(data.shape) / max_side))
    if factor <= 1:
        return data
    rows, cols = (data.shape[0] // factor) * factor, (data.shape[1] // factor) * factor
    blocks = data[:rows, :cols].reshape(rows // factor, factor, cols // factor, factor)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks stay NaN
        return np.nanmean(blocks, axis=(1, 3))


def scaled(data: np.ndarray) -> np.ndarray:
    """8-bit grey levels: zscale limits map to 0 and 255; NaN is black. Row 0 is the top of the picture
    (FITS row 0 is the bottom)."""
    finite = np.isfinite(data)
    if not finite.any():
        return np.zeros(data.shape, dtype=np.uint8)
    low, high = ZScaleInterval().get_limits(data[finite])
    span = high - low if high > low else 1.0
    levels = np.clip((np.where(finite, data, low) - low) / span, 0.0, 1.0) * 255.0
    return np.flipud(np.round(levels).astype(np.uint8))


def png(levels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(levels).save(buffer, format="PNG")
    return buffer.getvalue()


def preview_png(
    path: Path, ra: float | None = None, dec: float | None = None, size_deg: float | None = None
) -> bytes:
    """The PNG preview of the image file at `path` (a cutout when ra, dec and size are given)."""
    data, header = image_data(path)
    if ra is not None and dec is not None and size_deg is not None:
        data = cutout(data, header, ra, dec, size_deg)
    return png(scaled(binned(data)))
