"""Exposures as FITS (templates, difference images): IMAGE, VARIANCE and MASK extensions with the WCS.

The primary header carries the identity (visit, detector, band, MJD) and the PSF width; each image extension
carries the WCS, so any FITS viewer places the pixels on the sky.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from dms.services.prompt.exposure import Exposure
from dms.services.prompt.payload.errors import PayloadError

IDENTITY = {
    "VISIT": "visit",
    "DETECTOR": "detector",
    "BAND": "band",
    "MJD-MID": "mjd_tai",
    "PSFFWHM": "psf_fwhm_pixels",
    "EXPTIME": "exposure_time",
}


def exposure_to_hdus(exposure: Exposure, kind: str = "calexp") -> fits.HDUList:
    """An Exposure as a FITS HDUList (float32 image and variance, int32 mask)."""
    primary = fits.PrimaryHDU()
    for key, attribute in IDENTITY.items():
        primary.header[key] = getattr(exposure, attribute)
    primary.header["DMSKIND"] = kind
    for key, value in exposure.metadata.items():
        if len(key) <= 8 and isinstance(value, int | float | str | bool):
            primary.header[key.upper()] = value
    wcs_header = exposure.wcs.to_header()
    hdus = [primary]
    for name, data in (
        ("IMAGE", exposure.image.astype(np.float32)),
        ("VARIANCE", exposure.variance.astype(np.float32)),
        ("MASK", exposure.mask.astype(np.int32)),
    ):
        hdu = fits.ImageHDU(data, name=name)
        hdu.header.update(wcs_header)
        hdus.append(hdu)
    return fits.HDUList(hdus)


def exposure_from_hdus(hdus: fits.HDUList, label: str = "exposure") -> Exposure:
    """The Exposure written by `exposure_to_hdus`, or a PayloadError naming what is missing."""
    try:
        header = hdus[0].header
        image, variance, mask = (hdus[name] for name in ("IMAGE", "VARIANCE", "MASK"))
        values: dict[str, Any] = {attr: header[key] for key, attr in IDENTITY.items()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(image.header)
        return Exposure(
            image=np.asarray(image.data, np.float32),
            variance=np.asarray(variance.data, np.float32),
            mask=np.asarray(mask.data).astype(np.uint32),
            wcs=wcs,
            psf_fwhm_pixels=float(values["psf_fwhm_pixels"]),
            band=str(values["band"]),
            visit=int(values["visit"]),
            detector=int(values["detector"]),
            mjd_tai=float(values["mjd_tai"]),
            exposure_time=float(values["exposure_time"]),
        )
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise PayloadError(
            f"{label}: not an exposure FITS file (IMAGE, VARIANCE, MASK extensions and VISIT, DETECTOR, "
            f"BAND, MJD-MID, PSFFWHM, EXPTIME keywords): {exc}"
        ) from exc
