"""Measurement on calibrated exposures and coadds: sep's background, point-source detection on the
PSF-matched-filter S/N image (the prompt payload's `detect`), PSF fluxes by a weighted linear fit, and the
wing fit of saturated reference stars (Gaia's G < 10 stars saturate LSSTCam in 30 s: their flux, position
and PSF width are fitted on the unsaturated pixels around the saturated core)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd
import sep
from scipy.optimize import least_squares

from dms.services.prompt.exposure import MASK_EDGE, MASK_NO_DATA, MASK_SAT
from dms.services.prompt.payload import measure
from dms.services.prompt.payload.detect import detect, snr_image
from dms.services.prompt.payload.psf import psf_stamp

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
BAD = MASK_SAT | MASK_NO_DATA | MASK_EDGE


def subtract_background(image: np.ndarray, mask: np.ndarray, mesh: int) -> tuple[np.ndarray, float]:
    """The image minus sep's mesh background (masked pixels ignored), and the global background level."""
    data = np.ascontiguousarray(np.nan_to_num(image), dtype=np.float64)
    bad = np.ascontiguousarray((mask & (MASK_SAT | MASK_NO_DATA)) != 0)
    size = int(min(mesh, max(16, min(data.shape) // 2)))
    background = sep.Background(data, mask=bad, bw=size, bh=size)
    return data - background.back(), float(background.globalback)


def find_sources(
    image: np.ndarray, variance: np.ndarray, mask: np.ndarray, psf_sigma: float, threshold: float
) -> tuple[pd.DataFrame, np.ndarray]:
    """Positive point-source peaks above `threshold` S/N with sub-pixel positions (x, y, snr), and the S/N
    image they came from."""
    bad = (mask & BAD) != 0
    snr = snr_image(image, variance, bad, psf_sigma)
    peaks = detect(snr, bad, threshold)
    peaks = peaks[peaks["sign"] > 0].reset_index(drop=True)
    refined = [
        measure.refine_peak(snr, int(x), int(y), 1)
        for x, y in zip(peaks["xpeak"], peaks["ypeak"], strict=True)
    ]
    frame = pd.DataFrame(
        {
            "x": [r[0] for r in refined],
            "y": [r[1] for r in refined],
            "snr": peaks["peak"].to_numpy(float) if len(peaks) else np.zeros(0),
        }
    )
    return frame, snr


def psf_photometry(
    image: np.ndarray,
    variance: np.ndarray,
    mask: np.ndarray,
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    psf_sigma: float,
) -> pd.DataFrame:
    """PSF flux, error and flags at each position (the payload's weighted linear PSF fit)."""
    good = (mask & (MASK_SAT | MASK_NO_DATA)) == 0
    half = int(np.ceil(3 * psf_sigma)) + 1
    rows = []
    for xi, yi in zip(np.asarray(x, float), np.asarray(y, float), strict=True):
        fit = measure.psf_flux(image, variance, good, xi, yi, psf_sigma)
        flags = measure.stamp_flags(mask, xi, yi, half)
        rows.append(
            {
                "psfFlux": fit.flux,
                "psfFluxErr": fit.error,
                "psfFlux_flag": bool(not np.isfinite(fit.flux) or fit.truncated),
                "pixelFlags_saturated": flags["pixelFlags_saturated"],
                "pixelFlags_edge": flags["pixelFlags_edge"],
            }
        )
    columns = ["psfFlux", "psfFluxErr", "psfFlux_flag", "pixelFlags_saturated", "pixelFlags_edge"]
    return pd.DataFrame(rows, columns=columns)


def fit_saturated_star(
    image: np.ndarray,
    variance: np.ndarray,
    mask: np.ndarray,
    x0: float,
    y0: float,
    psf_sigma: float,
    search: float = 25.0,
) -> dict[str, float] | None:
    """Flux, position and PSF sigma of a bright star near (x0, y0) fitted on the unsaturated pixels out to
    ten PSF sigmas (None when the star is off the image or too few pixels are usable). The start is the
    centroid of the saturated core (or the brightest pixel when nothing saturated)."""
    rows, cols = image.shape
    yy, xx = np.mgrid[0:rows, 0:cols]
    near = np.hypot(xx - x0, yy - y0) < search
    core = near & ((mask & MASK_SAT) != 0)
    if core.any():
        xs, ys = float(xx[core].mean()), float(yy[core].mean())
        reach = np.sqrt(core.sum() / np.pi)
    elif near.any():
        k = np.argmax(np.where(near, image, -np.inf))
        ys, xs = float(k // cols), float(k % cols)
        reach = 0.0
    else:
        return None
    half = int(np.ceil(reach + 8 * psf_sigma))
    xa, xb = max(0, int(xs) - half), min(cols, int(xs) + half + 1)
    ya, yb = max(0, int(ys) - half), min(rows, int(ys) + half + 1)
    if xb - xa < 5 or yb - ya < 5:
        return None
    use = ((mask[ya:yb, xa:xb] & (MASK_SAT | MASK_NO_DATA)) == 0) & np.isfinite(image[ya:yb, xa:xb])
    if use.sum() < 20:
        return None
    data = image[ya:yb, xa:xb][use].astype(np.float64)
    weight = 1.0 / np.sqrt(np.clip(variance[ya:yb, xa:xb][use].astype(np.float64), 1e-12, None))
    shape = (yb - ya, xb - xa)
    start_flux = float(
        np.sum(image[ya:yb, xa:xb][use]) / max(1e-6, psf_stamp(xs, ys, psf_sigma, xa, ya, shape)[use].sum())
    )

    def residuals(p: np.ndarray) -> np.ndarray:
        model = p[0] * psf_stamp(p[1], p[2], p[3], xa, ya, shape)[use]
        return (data - model) * weight

    try:
        fit = least_squares(
            residuals,
            [max(start_flux, 1.0), xs, ys, psf_sigma],
            x_scale=[max(start_flux, 1.0), 0.1, 0.1, 0.05],
            bounds=([0, xa, ya, 0.3 * psf_sigma], [np.inf, xb, yb, 3 * psf_sigma]),
        )
    except ValueError:
        return None
    if not fit.success:
        return None
    flux, x, y, sigma = (float(v) for v in fit.x)
    return {
        "flux": flux,
        "x": x,
        "y": y,
        "sigma": sigma,
        "pixels": int(use.sum()),
        "saturated": bool(core.any()),
    }
