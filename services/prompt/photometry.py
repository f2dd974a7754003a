"""Rubin's nominal photometric scale, shared by the simulator (to make raws) and ISR (to calibrate them).

Zero points are the AB magnitude giving 1 electron per second (SMTN-002, LSST throughputs 1.9); sky
brightness is the dark-sky zenith value in AB mag per square arcsecond from the same note. Calibrated images
are in nJy per pixel: 0 AB mag = 3631 Jy = 10**(31.4 / 2.5) nJy.
"""

from __future__ import annotations

import math

ZERO_POINTS = {"u": 26.52, "g": 28.51, "r": 28.36, "i": 28.17, "z": 27.78, "y": 26.82}
DARK_SKY = {"u": 23.05, "g": 22.25, "r": 21.20, "i": 20.46, "z": 19.61, "y": 18.60}
NJY_AB_ZERO = 31.4
PIXEL_SCALE = 0.2  # arcsec per pixel (LSSTCam, LSSTComCam)


def zero_point(band: str) -> float:
    """The nominal zero point of a band, or a ValueError naming the bands there are."""
    try:
        return ZERO_POINTS[band]
    except KeyError:
        raise ValueError(f"unknown band {band!r}; bands are {', '.join(ZERO_POINTS)}") from None


def njy_per_electron(band: str, exposure_time: float) -> float:
    """nJy of a source giving one electron in `exposure_time` seconds."""
    return 10 ** ((NJY_AB_ZERO - zero_point(band)) / 2.5) / exposure_time


def mag_to_njy(mag: float) -> float:
    return float(10 ** ((NJY_AB_ZERO - mag) / 2.5))


def njy_to_mag(flux: float) -> float:
    return NJY_AB_ZERO - 2.5 * math.log10(flux) if flux > 0 else math.nan


def sky_electrons_per_pixel(band: str, exposure_time: float) -> float:
    """Dark-sky electrons per pixel in an exposure."""
    per_arcsec2 = 10 ** ((zero_point(band) - DARK_SKY[band]) / 2.5) * exposure_time
    return per_arcsec2 * PIXEL_SCALE**2
