"""Detection on a difference image: the PSF-matched-filter S/N image, thresholded by sep.

For an image D with per-pixel variance V and PSF P, the maximum-likelihood flux of a point source at each
pixel is (D/V * P) / (1/V * P^2) with error 1 / sqrt(1/V * P^2) (* is correlation), so their ratio is the
detection S/N of a point source there; masked pixels carry no weight. Positive and negative sources are found
on +S/N and -S/N alike (a fading variable or a template-only source is negative).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import sep
from scipy.signal import fftconvolve

from dms.services.prompt.payload.psf import psf_stamp


def psf_kernel(sigma: float) -> np.ndarray:
    half = int(np.ceil(4 * sigma))
    return psf_stamp(0.0, 0.0, sigma, -half, -half, (2 * half + 1, 2 * half + 1))


def snr_image(difference: np.ndarray, variance: np.ndarray, bad: np.ndarray, psf_sigma: float) -> np.ndarray:
    """The point-source detection S/N at every pixel (0 where no good pixel contributes)."""
    kernel = psf_kernel(psf_sigma)
    good = ~bad & np.isfinite(difference) & np.isfinite(variance) & (variance > 0)
    inverse = np.where(good, 1.0 / np.where(good, variance, 1.0), 0.0)
    weighted = np.where(good, difference, 0.0) * inverse
    numerator = fftconvolve(weighted, kernel[::-1, ::-1], mode="same")
    denominator = fftconvolve(inverse, (kernel**2)[::-1, ::-1], mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = numerator / np.sqrt(denominator)
    # too few good pixels under the kernel: no detection there
    coverage = fftconvolve(good.astype(np.float64), kernel[::-1, ::-1], mode="same")
    snr[~np.isfinite(snr) | (coverage < 0.5)] = 0.0
    return snr


def detect(snr: np.ndarray, bad: np.ndarray, threshold: float, *, max_sources: int = 100_000) -> pd.DataFrame:
    """Peaks above `threshold` on +S/N (sign +1) and -S/N (sign -1): x, y, peak S/N, sign, npix."""
    frames = []
    mask = np.ascontiguousarray(bad)
    sep.set_extract_pixstack(max(300_000, snr.size))
    sep.set_sub_object_limit(4096)
    for sign in (1, -1):
        data = np.ascontiguousarray(sign * snr, dtype=np.float32)
        found = sep.extract(
            data, threshold, mask=mask, minarea=2, filter_kernel=None, deblend_cont=0.005, clean=False
        )
        if len(found):
            frames.append(
                pd.DataFrame(
                    {
                        "x": found["x"],
                        "y": found["y"],
                        "xpeak": found["xpeak"],
                        "ypeak": found["ypeak"],
                        "peak": found["peak"],
                        "sign": sign,
                        "npix": found["npix"],
                    }
                )
            )
    if not frames:
        return pd.DataFrame(columns=["x", "y", "xpeak", "ypeak", "peak", "sign", "npix"])
    result = pd.concat(frames, ignore_index=True).sort_values("peak", ascending=False, ignore_index=True)
    return result.head(max_sources)
