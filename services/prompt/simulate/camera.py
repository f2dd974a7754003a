"""Where simulated detectors sit: LSSTCamSim's science detectors (Rubin's geometry), nearest the centre
first, each simulated as its central (rows, cols) pixels, with a TAN WCS from the boresight, the sky
rotation and the detector's place on the focal plane (0.2 arcsec per pixel)."""

from __future__ import annotations

import numpy as np
from astropy.wcs import WCS

from dms.services.archiver.camera import Camera, Detector, camera

INSTRUMENT = "LSSTCamSim"


def sim_camera() -> Camera:
    geometry = camera(INSTRUMENT)
    assert geometry is not None
    return geometry


def science_detectors(count: int) -> list[Detector]:
    """The `count` science detectors closest to the focal-plane centre (R22_S11 first)."""
    geometry = sim_camera()
    science = [d for d in geometry.detectors.values() if d.purpose == "SCIENCE"]
    if not 1 <= count <= len(science):
        raise ValueError(f"detectors must be 1..{len(science)} (LSSTCam's science detectors), not {count}")
    science.sort(key=lambda d: (round(np.hypot(d.x, d.y), 3), d.id))
    return science[:count]


def detector_by_id(detector_id: int) -> Detector | None:
    return next((d for d in sim_camera().detectors.values() if d.id == detector_id), None)


def detector_wcs(
    detector: Detector, shape: tuple[int, int], ra: float, dec: float, rotation: float = 0.0
) -> WCS:
    """TAN WCS of the central `shape` pixels of a detector for a boresight and sky rotation angle."""
    geometry = sim_camera()
    rows, cols = shape
    cd = geometry.sky_matrix(rotation) * geometry.pixel_size  # degrees per pixel, (east, north)
    yaw = np.radians(detector.yaw)
    rotate = np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]])
    cd = cd @ rotate
    # the boresight (focal plane 0, 0) in this crop's FITS pixels: centre pixel minus the detector offset
    offset = np.linalg.solve(rotate, -np.array([detector.x, detector.y]) / geometry.pixel_size)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [(cols + 1) / 2 + offset[0], (rows + 1) / 2 + offset[1]]
    wcs.wcs.cd = cd
    wcs.wcs.set()
    return wcs
