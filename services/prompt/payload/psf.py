"""The PSF: Gaussian model fluxes at a position, and the seeing measured from the stars of an image.

The PSF model is a circular Gaussian integrated over pixels, its width the image's measured FWHM. The seeing
is measured with adaptive moments (a Gaussian weight iterated to the object's own width, as HSM does) of
bright, isolated, unsaturated sources; stars form the tight locus of the smallest widths, galaxies lie above.
"""

from __future__ import annotations

import numpy as np
import sep
from scipy.special import erf

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
SQRT2 = np.sqrt(2.0)
PIXEL_VARIANCE = 1.0 / 12.0  # a pixel adds the variance of a unit box to measured moments


def psf_stamp(x: float, y: float, sigma: float, x0: int, y0: int, shape: tuple[int, int]) -> np.ndarray:
    """A unit-flux pixel-integrated Gaussian centred at (x, y) on the pixels [y0:y0+rows, x0:x0+cols]."""
    rows, cols = shape
    ex = np.arange(x0, x0 + cols) - 0.5
    ey = np.arange(y0, y0 + rows) - 0.5
    px = 0.5 * (erf((ex + 1.0 - x) / (SQRT2 * sigma)) - erf((ex - x) / (SQRT2 * sigma)))
    py = 0.5 * (erf((ey + 1.0 - y) / (SQRT2 * sigma)) - erf((ey - y) / (SQRT2 * sigma)))
    return np.outer(py, px)


def adaptive_moments(
    image: np.ndarray, x: float, y: float, sigma0: float, iterations: int = 12
) -> tuple[float, float, float, float, float]:
    """Adaptive second moments (x, y, ixx, iyy, ixy) of the object near (x, y): a Gaussian weight matched to
    the object, whose weighted moments are half the object's for a Gaussian object."""
    rows, cols = image.shape
    sigma = sigma0
    cx, cy, ixx, iyy, ixy = x, y, sigma0**2, sigma0**2, 0.0
    for _ in range(iterations):
        half = int(np.ceil(4 * sigma)) + 1
        x0, x1 = max(0, round(cx) - half), min(cols, round(cx) + half + 1)
        y0, y1 = max(0, round(cy) - half), min(rows, round(cy) + half + 1)
        if x1 - x0 < 3 or y1 - y0 < 3:
            return cx, cy, np.nan, np.nan, np.nan
        gy, gx = np.mgrid[y0:y1, x0:x1]
        stamp = image[y0:y1, x0:x1]
        weight = np.exp(-0.5 * ((gx - cx) ** 2 + (gy - cy) ** 2) / sigma**2)
        wf = weight * stamp
        total = wf.sum()
        if not total > 0:
            return cx, cy, np.nan, np.nan, np.nan
        cx, cy = (wf * gx).sum() / total, (wf * gy).sum() / total
        mxx = (wf * (gx - cx) ** 2).sum() / total
        myy = (wf * (gy - cy) ** 2).sum() / total
        mxy = (wf * (gx - cx) * (gy - cy)).sum() / total
        # a Gaussian object of variance s2 under a weight of variance w2: 1/m = 1/s2 + 1/w2
        w2 = sigma**2
        ixx = 1.0 / max(1.0 / max(mxx, 1e-6) - 1.0 / w2, 1e-6)
        iyy = 1.0 / max(1.0 / max(myy, 1e-6) - 1.0 / w2, 1e-6)
        ixy = mxy * (ixx / max(mxx, 1e-6))
        new_sigma = float(np.sqrt(max(0.5 * (ixx + iyy), 0.25)))
        if abs(new_sigma - sigma) < 1e-4:
            sigma = new_sigma
            break
        sigma = float(np.clip(new_sigma, 0.3, 20.0))
    return float(cx), float(cy), float(ixx), float(iyy), float(ixy)


def measure_fwhm(
    image: np.ndarray, variance: np.ndarray, bad: np.ndarray, *, min_snr: float = 50.0, guess: float = 4.0
) -> tuple[float, int]:
    """The PSF FWHM (pixels) from the stellar locus of bright isolated sources, and how many stars made it.

    Returns (nan, 0) when fewer than three stars qualify."""
    data = np.ascontiguousarray(image, dtype=np.float32)
    err = np.ascontiguousarray(np.sqrt(np.clip(variance, 1e-12, None)), dtype=np.float32)
    mask = np.ascontiguousarray(bad)
    background = sep.Background(data, mask=mask, bw=64, bh=64)
    found = sep.extract(data - background.back(), 10.0, err=err, mask=mask, minarea=5)
    if len(found) < 3:
        return float("nan"), 0
    xs, ys = found["x"], found["y"]
    distance = np.hypot(xs[:, None] - xs[None, :], ys[:, None] - ys[None, :])
    np.fill_diagonal(distance, np.inf)
    isolated = distance.min(axis=1) > 6 * guess
    rows, cols = image.shape
    inside = (xs > 15) & (xs < cols - 16) & (ys > 15) & (ys < rows - 16)
    peak_snr = found["peak"] / np.median(err)
    candidates = np.flatnonzero(isolated & inside & (found["flag"] == 0) & (peak_snr > min_snr / 5))
    flux_order = candidates[np.argsort(-found["flux"][candidates])][:200]
    clean = data - background.back()
    sigmas = []
    for k in flux_order:
        x0, x1 = int(xs[k]) - 12, int(xs[k]) + 13
        y0, y1 = int(ys[k]) - 12, int(ys[k]) + 13
        if mask[max(0, y0) : y1, max(0, x0) : x1].any():
            continue
        _, _, ixx, iyy, _ = adaptive_moments(clean, float(xs[k]), float(ys[k]), guess / FWHM_PER_SIGMA)
        if np.isfinite(ixx) and np.isfinite(iyy):
            sigmas.append(np.sqrt(max(0.5 * (ixx + iyy) - PIXEL_VARIANCE, 0.01)))
    if len(sigmas) < 3:
        return float("nan"), len(sigmas)
    values = np.sort(np.asarray(sigmas))
    low = float(np.percentile(values, 20))
    locus = values[(values > 0.9 * low) & (values < 1.1 * low)]
    if len(locus) < 3:
        locus = values[: max(3, len(values) // 3)]
    return float(np.median(locus) * FWHM_PER_SIGMA), len(locus)
