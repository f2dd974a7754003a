"""Cutouts for alert packets: small FITS images (with their WCS) around a DiaSource."""

from __future__ import annotations

import io

import numpy as np
from astropy.io import fits
from astropy.nddata import Cutout2D, NoOverlapError
from astropy.wcs import WCS

from dms.services.alerts.packets import AlertPacketError

DEFAULT_SIZE = 30  # pixels: Rubin's stamps are ~30 x 30


def stamp(image: np.ndarray, x: float, y: float, wcs: WCS | None = None, size: int = DEFAULT_SIZE) -> bytes:
    """A FITS file of the `size` x `size` pixels of `image` centred on pixel (x, y) (zero-based), with the
    cutout's WCS when `wcs` is given; parts outside the image are NaN."""
    try:
        cut = Cutout2D(image, (x, y), size, wcs=wcs, mode="partial", fill_value=np.nan, copy=True)
    except NoOverlapError:
        raise AlertPacketError(f"cutout at pixel ({x:.1f}, {y:.1f}) lies outside the image") from None
    header = cut.wcs.to_header() if cut.wcs is not None else fits.Header()
    buffer = io.BytesIO()
    fits.PrimaryHDU(np.asarray(cut.data, dtype=np.float32), header=header).writeto(buffer)
    return buffer.getvalue()
