"""Sources to pixels: Gaussian PSFs integrated over each pixel (exact fluxes), galaxies as elliptical
Gaussians convolved with the PSF (a Gaussian convolved with a Gaussian is the Gaussian of summed covariances,
so the convolution is exact), then sky, Poisson and read noise, flat field, gain and bias."""

from __future__ import annotations

import numpy as np
from scipy.special import erf

SQRT2 = np.sqrt(2.0)


def _pixel_integral(edges_low: np.ndarray, centre: float, sigma: float) -> np.ndarray:
    """Fraction of a 1-d Gaussian in each pixel [k - 0.5, k + 0.5)."""
    upper = erf((edges_low + 1.0 - centre) / (SQRT2 * sigma))
    lower = erf((edges_low - centre) / (SQRT2 * sigma))
    return 0.5 * (upper - lower)


def add_point_sources(
    image: np.ndarray, x: np.ndarray, y: np.ndarray, electrons: np.ndarray, sigma: float
) -> None:
    """Add Gaussian PSFs of total `electrons` at pixel positions (x, y), in place."""
    rows, cols = image.shape
    for xc, yc, total in zip(x, y, electrons, strict=True):
        if total <= 0:
            continue
        # out to where the profile drops below 0.1 electron (bright stars get wide stamps)
        reach = sigma * np.sqrt(2 * np.log(max(total / (2 * np.pi * sigma**2) / 0.1, 2.0)))
        half = int(np.ceil(min(reach, 60.0 * sigma))) + 1
        x0, x1 = max(0, int(xc) - half), min(cols, int(xc) + half + 2)
        y0, y1 = max(0, int(yc) - half), min(rows, int(yc) + half + 2)
        if x0 >= x1 or y0 >= y1:
            continue
        px = _pixel_integral(np.arange(x0, x1) - 0.5, xc, sigma)
        py = _pixel_integral(np.arange(y0, y1) - 0.5, yc, sigma)
        image[y0:y1, x0:x1] += total * np.outer(py, px)


def add_galaxies(
    image: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    electrons: np.ndarray,
    sigma_major: np.ndarray,
    q: np.ndarray,
    theta: np.ndarray,
    psf_sigma: float,
) -> None:
    """Add elliptical Gaussian galaxies (pixel units) convolved with the Gaussian PSF, in place."""
    rows, cols = image.shape
    for xc, yc, total, s, axis_ratio, angle in zip(x, y, electrons, sigma_major, q, theta, strict=True):
        c, si = np.cos(angle), np.sin(angle)
        rotation = np.array([[c, -si], [si, c]])
        cov = rotation @ np.diag([s**2, (s * axis_ratio) ** 2]) @ rotation.T + np.eye(2) * psf_sigma**2
        half = int(np.ceil(5 * np.sqrt(np.max(np.linalg.eigvalsh(cov))))) + 1
        x0, x1 = max(0, int(xc) - half), min(cols, int(xc) + half + 2)
        y0, y1 = max(0, int(yc) - half), min(rows, int(yc) + half + 2)
        if x0 >= x1 or y0 >= y1:
            continue
        gy, gx = np.mgrid[y0:y1, x0:x1]
        d = np.stack([gx - xc, gy - yc], axis=-1)
        inverse = np.linalg.inv(cov)
        exponent = -0.5 * np.einsum("...i,ij,...j->...", d, inverse, d)
        norm = 1.0 / (2 * np.pi * np.sqrt(np.linalg.det(cov)))
        image[y0:y1, x0:x1] += total * norm * np.exp(exponent)


def master_bias(rng: np.random.Generator, shape: tuple[int, int], level: float = 15000.0) -> np.ndarray:
    """A bias frame in ADU: a level, column structure and a gentle gradient (the per-detector pattern)."""
    rows, cols = shape
    columns = rng.normal(0.0, 3.0, cols)
    gradient = np.linspace(-5.0, 5.0, rows)[:, None]
    return (level + columns[None, :] + gradient).astype(np.float32)


def master_flat(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A flat field normalised to mean 1: vignetting towards the corners and 1% pixel-to-pixel response."""
    rows, cols = shape
    yy, xx = np.mgrid[0:rows, 0:cols]
    r2 = ((xx - cols / 2) / cols) ** 2 + ((yy - rows / 2) / rows) ** 2
    flat = (1.0 - 0.08 * r2) * rng.normal(1.0, 0.01, shape)
    return (flat / flat.mean()).astype(np.float32)


def expose(
    rng: np.random.Generator,
    source_electrons: np.ndarray,
    sky_electrons: float,
    bias: np.ndarray,
    flat: np.ndarray,
    *,
    gain: float,
    read_noise: float,
    full_well: float,
) -> np.ndarray:
    """Raw ADU (int32) from the expected electrons: flat response, Poisson noise, full well, gain, read
    noise (in electrons) and the bias."""
    expected = (source_electrons + sky_electrons) * flat
    electrons = rng.poisson(np.clip(expected, 0, None)).astype(np.float64)
    electrons = np.minimum(electrons, full_well)
    electrons += rng.normal(0.0, read_noise, electrons.shape)
    return np.round(electrons / gain + bias).astype(np.int32)
