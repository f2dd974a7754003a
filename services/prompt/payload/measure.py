"""Measurement of difference-image sources and forced photometry: PSF flux by a weighted linear fit of the
PSF model at a position, the position from the peak of the S/N image (the maximum-likelihood position of a
point source, refined to sub-pixel by a parabola through the 3 x 3 pixels around it), adaptive second
moments, dipoles (a positive and a negative lobe within two PSF widths), and mask flags."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.signal import fftconvolve

from dms.services.prompt.exposure import MASK_EDGE, MASK_NO_DATA, MASK_SAT
from dms.services.prompt.payload.psf import adaptive_moments, psf_stamp


@dataclass(frozen=True)
class PsfFit:
    flux: float
    error: float
    chi2: float
    ndata: int
    truncated: bool  # the stamp ran off the image or over masked pixels


def psf_flux(
    image: np.ndarray,
    variance: np.ndarray,
    good: np.ndarray,
    x: float,
    y: float,
    sigma: float,
    correlation: float = 1.0,
    kernel: np.ndarray | None = None,
) -> PsfFit:
    """Flux (and error) of the PSF model centred at (x, y): sum(P D / V) / sum(P^2 / V) over good pixels;
    `correlation` scales the error for correlated noise (a difference image's). The model is a Gaussian of
    `sigma`, convolved with `kernel` when given (a difference of a convolved science image: its PSF is the
    science PSF convolved with the matching kernel, and the flux is in the science image's units)."""
    rows, cols = image.shape
    reach = 0 if kernel is None else kernel.shape[0] // 2
    half = int(np.ceil(3 * sigma)) + 1 + reach
    xi, yi = round(x), round(y)
    x0, x1 = max(0, xi - half), min(cols, xi + half + 1)
    y0, y1 = max(0, yi - half), min(rows, yi + half + 1)
    truncated = (x1 - x0) < 2 * half + 1 or (y1 - y0) < 2 * half + 1
    if x0 >= x1 or y0 >= y1:
        return PsfFit(np.nan, np.nan, np.nan, 0, True)
    if kernel is None:
        model = psf_stamp(x, y, sigma, x0, y0, (y1 - y0, x1 - x0))
    else:
        wide = psf_stamp(x, y, sigma, x0 - reach, y0 - reach, (y1 - y0 + 2 * reach, x1 - x0 + 2 * reach))
        model = fftconvolve(wide, kernel, mode="valid")
    use = good[y0:y1, x0:x1]
    truncated = truncated or not use.all()
    if use.sum() < 3:
        return PsfFit(np.nan, np.nan, np.nan, int(use.sum()), True)
    d = image[y0:y1, x0:x1][use]
    v = variance[y0:y1, x0:x1][use]
    p = model[use]
    information = float(np.sum(p * p / v))
    flux = float(np.sum(p * d / v) / information)
    chi2 = float(np.sum((d - flux * p) ** 2 / v))
    return PsfFit(flux, float(correlation / np.sqrt(information)), chi2, int(use.sum()), truncated)


def refine_peak(snr: np.ndarray, xpeak: int, ypeak: int, sign: int) -> tuple[float, float]:
    """Sub-pixel position of an S/N peak: the vertex of a parabola through the peak and its neighbours."""
    rows, cols = snr.shape
    x, y = float(xpeak), float(ypeak)
    if 0 < xpeak < cols - 1:
        left, mid, right = (sign * snr[ypeak, xpeak - 1 : xpeak + 2]).tolist()
        curvature = left - 2 * mid + right
        if curvature < 0:
            x += float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))
    if 0 < ypeak < rows - 1:
        down, mid, up = (sign * snr[ypeak - 1 : ypeak + 2, xpeak]).tolist()
        curvature = down - 2 * mid + up
        if curvature < 0:
            y += float(np.clip(0.5 * (down - up) / curvature, -0.5, 0.5))
    return x, y


def pair_dipoles(peaks: pd.DataFrame, radius: float) -> pd.DataFrame:
    """Give each positive peak its nearest negative partner within `radius` pixels (partner index or -1);
    a partnered negative peak is dropped (the pair is one dipole source)."""
    peaks = peaks.reset_index(drop=True).copy()
    peaks["partner"] = -1
    positive = np.flatnonzero(peaks["sign"].to_numpy() > 0)
    negative = np.flatnonzero(peaks["sign"].to_numpy() < 0)
    taken: set[int] = set()
    if len(positive) and len(negative):
        px, py = peaks["x"].to_numpy()[positive], peaks["y"].to_numpy()[positive]
        nx, ny = peaks["x"].to_numpy()[negative], peaks["y"].to_numpy()[negative]
        distance = np.hypot(px[:, None] - nx[None, :], py[:, None] - ny[None, :])
        for i in np.argsort(distance.min(axis=1)):
            j = int(np.argmin(np.where(np.isin(negative, list(taken)), np.inf, distance[i])))
            if distance[i, j] <= radius and negative[j] not in taken:
                peaks.loc[positive[i], "partner"] = negative[j]
                taken.add(int(negative[j]))
    return peaks.drop(index=list(taken)).reset_index(drop=True)


def stamp_flags(mask: np.ndarray, x: float, y: float, half: int) -> dict[str, bool]:
    """Rubin's pixelFlags_* for the pixels around (x, y) (`...Center`: the 3 x 3 pixels at the centre)."""
    rows, cols = mask.shape
    xi, yi = round(x), round(y)
    region = mask[max(0, yi - half) : yi + half + 1, max(0, xi - half) : xi + half + 1]
    centre = mask[max(0, yi - 1) : yi + 2, max(0, xi - 1) : xi + 2]
    off = xi - half < 0 or yi - half < 0 or xi + half >= cols or yi + half >= rows
    flags = {
        "pixelFlags_edge": bool(off or (region & MASK_EDGE).any()),
        "pixelFlags_nodata": bool((region & MASK_NO_DATA).any()),
        "pixelFlags_nodataCenter": bool((centre & MASK_NO_DATA).any()),
        "pixelFlags_saturated": bool((region & MASK_SAT).any()),
        "pixelFlags_saturatedCenter": bool((centre & MASK_SAT).any()),
        "pixelFlags_offimage": not (0 <= xi < cols and 0 <= yi < rows),
    }
    flags["pixelFlags"] = any(flags.values())
    return flags


def shape_of(
    image: np.ndarray, x: float, y: float, sign: int, psf_sigma: float
) -> tuple[float, float, float]:
    """Adaptive second moments (ixx, iyy, ixy) of the source, PSF-sized weight to start."""
    _, _, ixx, iyy, ixy = adaptive_moments(sign * image, x, y, psf_sigma)
    return ixx, iyy, ixy
