"""Sky patches of the coadds: nested HEALPix pixels (order 11 by default, about 1.7 arcmin), each coadded on
a TAN grid of LSSTCam's pixel scale centred on the pixel. An Object belongs to the patch whose HEALPix pixel
holds it (`detect_isPrimary`), so neighbouring patches' coadds overlap but their Objects never repeat."""

from __future__ import annotations

import healpy as hp
import numpy as np
from astropy.wcs import WCS

PIXEL_SCALE_ARCSEC = 0.2
MARGIN_PIXELS = 16


def patch_of(ra: np.ndarray, dec: np.ndarray, order: int) -> np.ndarray:
    """The patch (nested HEALPix pixel at `order`) holding each position."""
    return np.asarray(hp.ang2pix(2**order, np.asarray(ra), np.asarray(dec), nest=True, lonlat=True))


def patch_grid(patch: int, order: int) -> tuple[WCS, tuple[int, int]]:
    """The coadd grid of a patch: TAN WCS at the pixel's centre and a shape (rows, cols) holding its
    boundary plus a margin."""
    nside = 2**order
    ra0, dec0 = hp.pix2ang(nside, patch, nest=True, lonlat=True)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [float(ra0), float(dec0)]
    scale = PIXEL_SCALE_ARCSEC / 3600.0
    wcs.wcs.cd = [[-scale, 0.0], [0.0, scale]]
    corners = hp.boundaries(nside, patch, step=4, nest=True)
    ra, dec = hp.vec2ang(corners.T, lonlat=True)
    x, y = wcs.world_to_pixel_values(ra, dec)
    half_x = int(np.ceil(np.max(np.abs(x)))) + MARGIN_PIXELS
    half_y = int(np.ceil(np.max(np.abs(y)))) + MARGIN_PIXELS
    wcs.wcs.crpix = [half_x + 1, half_y + 1]
    wcs.wcs.set()
    return wcs, (2 * half_y + 1, 2 * half_x + 1)


def patches_touching(corners_ra: np.ndarray, corners_dec: np.ndarray, order: int) -> list[int]:
    """The patches a convex footprint (corner positions, in order) touches."""
    vectors = hp.ang2vec(np.asarray(corners_ra), np.asarray(corners_dec), lonlat=True)
    found = hp.query_polygon(2**order, vectors, inclusive=True, nest=True)
    return sorted(int(p) for p in found)


def object_id(patch: int, index: int) -> int:
    """Object ids: patch * 10**6 + index (order-11 patches are < 5.1e7, so ids fit in 63 bits)."""
    if not 0 <= index < 10**6:
        raise ValueError(f"object index {index} outside 0..999999")
    return int(patch) * 10**6 + index
