"""Realistic regions for the region-column tests: LSSTCam detector footprints on the sky, and the
independent answer (STScI's spherical-geometry polygons) of whether two regions meet."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from astropy.wcs import WCS
from spherical_geometry.polygon import SphericalPolygon

# LSSTCam's layout: 21 science rafts on a 127 mm pitch (the 5 x 5 grid without its corners), 3 x 3 sensors
# on a 42.25 mm pitch, each 4072 x 4000 pixels of 10 um; 0.2 arcsec per pixel, i.e. 20 arcsec per mm.
RAFT_PITCH = 127.0
SENSOR_PITCH = 42.25
SENSOR_MM = (40.72, 40.0)
ARCSEC_PER_MM = 20.0


def detector_centres_mm() -> list[tuple[float, float]]:
    centres = []
    for rx in range(5):
        for ry in range(5):
            if rx in (0, 4) and ry in (0, 4):
                continue  # the corner positions hold wavefront and guider sensors
            for sx in range(3):
                for sy in range(3):
                    centres.append(
                        (
                            (rx - 2) * RAFT_PITCH + (sx - 1) * SENSOR_PITCH,
                            (ry - 2) * RAFT_PITCH + (sy - 1) * SENSOR_PITCH,
                        )
                    )
    return centres


def visit_footprints(ra: float, dec: float, rotation: float) -> list[list[float]]:
    """The 189 science detectors of one LSSTCam visit as flat vertex lists [ra1, dec1, ...] (TAN WCS)."""
    theta = math.radians(rotation)
    step = ARCSEC_PER_MM / 3600.0
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [1.0, 1.0]
    wcs.wcs.cd = step * np.array([[-math.cos(theta), math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    w, h = SENSOR_MM
    footprints = []
    for cx, cy in detector_centres_mm():
        corners = np.array(
            [
                [cx - w / 2, cy - h / 2],
                [cx + w / 2, cy - h / 2],
                [cx + w / 2, cy + h / 2],
                [cx - w / 2, cy + h / 2],
            ]
        )
        sky = wcs.all_pix2world(corners, 0)
        footprints.append([c for r, d in sky for c in (float(r) % 360.0, float(d))])
    return footprints


def stcs_polygon(vertices: Sequence[float]) -> str:
    return "POLYGON ICRS " + " ".join(f"{v:.8f}" for v in vertices)


def spherical(shape: Sequence[float]) -> SphericalPolygon:
    """`shape` (a DALI polygon) as a spherical-geometry polygon."""
    return SphericalPolygon.from_radec(list(shape[0::2]), list(shape[1::2]), degrees=True)


def meets(a: Sequence[float], b: Sequence[float]) -> bool | None:
    """Whether regions a and b (points, circles, polygons) meet, by spherical-geometry; None when the answer
    changes with a 0.1 arcsec change of a circle's radius (too close to call for an independent answer)."""
    if len(a) == 2 and len(b) == 2:
        return bool(a[0] == b[0] and a[1] == b[1])
    if len(b) == 2:
        a, b = b, a
    if len(a) == 2:
        if len(b) == 3:
            return None if _near_radius(a, b) else _separation(a, b) <= b[2]
        return bool(spherical(b).contains_radec(a[0], a[1], degrees=True))
    if len(a) == 3 and len(b) == 3:
        return _separation(a, b) <= a[2] + b[2]
    if len(a) > 3 and len(b) > 3:
        return bool(spherical(a).intersects_poly(spherical(b)))
    circle, polygon = (a, b) if len(a) == 3 else (b, a)
    if spherical(polygon).contains_radec(circle[0], circle[1], degrees=True):
        return True
    distance = _boundary_distance(polygon, circle[:2])
    return None if abs(distance - circle[2]) < 3e-5 else bool(distance <= circle[2])


def _unit(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    lon, lat = np.radians(lon), np.radians(lat)
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)


def _boundary_distance(polygon: Sequence[float], point: Sequence[float]) -> float:
    """Degrees from `point` to the polygon's edges, sampled every ~0.4 arcsec along each great circle."""
    vertices = _unit(np.array(polygon[0::2]), np.array(polygon[1::2]))
    p = _unit(np.array([point[0]]), np.array([point[1]]))[0]
    best = math.inf
    for a, b in zip(vertices, np.roll(vertices, -1, axis=0), strict=True):
        omega = math.acos(min(1.0, float(a @ b)))
        t = np.linspace(0.0, 1.0, max(2, int(omega / 2e-6)))[:, None]
        arc = a if omega == 0 else (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / math.sin(omega)
        best = min(best, float(np.degrees(np.arccos(np.clip(np.atleast_2d(arc) @ p, -1, 1))).min()))
    return best


def _separation(a: Sequence[float], b: Sequence[float]) -> float:
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    return float(SkyCoord(a[0] * u.deg, a[1] * u.deg).separation(SkyCoord(b[0] * u.deg, b[1] * u.deg)).deg)


def _near_radius(point: Sequence[float], circle: Sequence[float]) -> bool:
    return abs(_separation(point, circle) - circle[2]) < 3e-5
