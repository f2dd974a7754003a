"""The Level 2 QC computations, pure functions of arrays: astrometric offsets against Gaia, photometric
repeatability, PSF size, completeness against a truth table, objects per patch.

Positions are in degrees, fluxes in any linear unit (nJy in DP1); every function returns plain floats.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord, match_coordinates_sky

#: FWHM of a Gaussian in units of its sigma.
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


@dataclass(frozen=True)
class Match:
    """Nearest neighbours of `ra, dec` in a reference set within a radius."""

    index: np.ndarray  # into the reference, for the matched positions
    matched: np.ndarray  # boolean per position
    separation_arcsec: np.ndarray  # of the matched positions


def nearest(
    ra: np.ndarray, dec: np.ndarray, ref_ra: np.ndarray, ref_dec: np.ndarray, radius_arcsec: float
) -> Match:
    """Match each position to its nearest reference position, kept when closer than `radius_arcsec`."""
    if len(ra) == 0 or len(ref_ra) == 0:
        return Match(np.zeros(0, int), np.zeros(len(ra), bool), np.zeros(0))
    idx, sep, _ = match_coordinates_sky(
        SkyCoord(ra * u.deg, dec * u.deg), SkyCoord(ref_ra * u.deg, ref_dec * u.deg)
    )
    arcsec = sep.to_value(u.arcsec)
    matched = arcsec < radius_arcsec
    return Match(np.asarray(idx)[matched], matched, arcsec[matched])


def astrometric_offsets(
    ra: np.ndarray, dec: np.ndarray, gaia_ra: np.ndarray, gaia_dec: np.ndarray, radius_arcsec: float
) -> tuple[float, float, int]:
    """(median, RMS) separation in mas between each position and its Gaia match, and the matches."""
    match = nearest(ra, dec, gaia_ra, gaia_dec, radius_arcsec)
    if match.separation_arcsec.size == 0:
        return float("nan"), float("nan"), 0
    mas = 1000.0 * match.separation_arcsec
    return float(np.median(mas)), float(np.sqrt(np.mean(mas**2))), int(mas.size)


def photometric_repeatability(
    object_id: np.ndarray, flux: np.ndarray, min_measurements: int = 3
) -> tuple[float, int]:
    """Repeatability in mmag: the pooled standard deviation of each object's magnitudes about their mean,
    sqrt(sum (m - mean_object)^2 / sum (n_object - 1)), over objects measured at least `min_measurements`
    times with positive flux (an unbiased estimate of one measurement's scatter); and the objects used."""
    good = np.isfinite(flux) & (flux > 0)
    ids, mags = object_id[good], -2.5 * np.log10(flux[good])
    uniq, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    keep = counts[inverse] >= min_measurements
    if not keep.any():
        return float("nan"), 0
    inverse, mags = inverse[keep], mags[keep]
    n = np.bincount(inverse, minlength=len(uniq)).astype(float)
    mean = np.bincount(inverse, weights=mags, minlength=len(uniq)) / np.where(n > 0, n, 1)
    squares = np.sum((mags - mean[inverse]) ** 2)
    dof = np.sum(np.maximum(n - 1, 0))
    return float(1000.0 * np.sqrt(squares / dof)), int(np.count_nonzero(n))


def psf_fwhm(
    seeing_arcsec: np.ndarray | None,
    psf_sigma_pix: np.ndarray | None = None,
    pixel_scale: np.ndarray | None = None,
) -> tuple[float, int]:
    """Median PSF FWHM in arcsec over detector-visits: CcdVisit.seeing where given, otherwise psfSigma
    (pixels) times pixelScale (arcsec/pixel) times 2 sqrt(2 ln 2); and how many went in."""
    values = np.full(0, np.nan)
    if seeing_arcsec is not None:
        values = np.asarray(seeing_arcsec, float)
    if psf_sigma_pix is not None and pixel_scale is not None:
        derived = np.asarray(psf_sigma_pix, float) * np.asarray(pixel_scale, float) * FWHM_PER_SIGMA
        values = derived if values.size == 0 else np.where(np.isfinite(values), values, derived)
    values = values[np.isfinite(values) & (values > 0)]
    return (float(np.median(values)), int(values.size)) if values.size else (float("nan"), 0)


def completeness(
    truth_ra: np.ndarray, truth_dec: np.ndarray, ra: np.ndarray, dec: np.ndarray, radius_arcsec: float
) -> tuple[float, int]:
    """Fraction of truth positions with a catalog position within `radius_arcsec`, and the truth count."""
    if len(truth_ra) == 0:
        return float("nan"), 0
    match = nearest(truth_ra, truth_dec, ra, dec, radius_arcsec)
    return float(np.mean(match.matched)), len(truth_ra)


def objects_per_patch(tract: np.ndarray, patch: np.ndarray) -> dict[tuple[int, int], int]:
    """Objects per (tract, patch)."""
    keys, counts = np.unique(np.stack([tract, patch], axis=1).astype(np.int64), axis=0, return_counts=True)
    return {(int(t), int(p)): int(n) for (t, p), n in zip(keys, counts, strict=True)}
