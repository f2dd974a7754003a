"""What the Alert Production payload takes and gives per detector (the payload's contract with the service).

`Exposure` is a calibrated image (or a template, or a difference image) with what measurement needs beside the
pixels: variance, mask planes, the WCS, the PSF width, and the visit's identity. `DetectorResult` is what the
payload hands to the prompt service for one detector: the DiaSources (columns named as in Rubin's apdb.yaml
DiaSource table, so `Apdb.store` and association take them as they are), the difference image, and the
detector's QC metrics. The service (services/prompt/service.py) associates, stores, and sends alerts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from astropy.wcs import WCS

# Mask planes (bits of Exposure.mask), named as in Rubin's afw mask planes.
MASK_BAD = 1 << 0
MASK_SAT = 1 << 1
MASK_EDGE = 1 << 4
MASK_NO_DATA = 1 << 8


@dataclass
class Exposure:
    """Pixels in calibrated units (nJy per pixel for a calibrated image), variance, mask, WCS and identity."""

    image: np.ndarray  # float32 (rows, columns)
    variance: np.ndarray  # same shape, per-pixel variance of `image`
    mask: np.ndarray  # uint32 bit planes (MASK_*)
    wcs: WCS
    psf_fwhm_pixels: float
    band: str  # one of ugrizy
    visit: int
    detector: int
    mjd_tai: float  # exposure midpoint
    exposure_time: float = 30.0  # seconds
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shape = self.image.shape
        if self.image.ndim != 2 or shape != self.variance.shape or shape != self.mask.shape:
            raise ValueError(
                f"image, variance and mask must be 2-d arrays of one shape, not {self.image.shape}, "
                f"{self.variance.shape} and {self.mask.shape}"
            )


@dataclass
class DetectorResult:
    """The payload's output for one detector of one visit."""

    visit: int
    detector: int
    dia_sources: pd.DataFrame  # apdb.yaml DiaSource columns (diaSourceId, visit, detector, ra, dec, ...)
    difference: Exposure | None  # None when the detector could not be subtracted (e.g. no template)
    forced_sources: pd.DataFrame | None = None  # DiaForcedSource columns, one per known DiaObject
    metrics: dict[str, float] = field(default_factory=dict)  # QC metrics (seeing, n_sources, kernel rms, ...)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step
    warnings: list[str] = field(default_factory=list)
