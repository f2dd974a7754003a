"""The sky footprint of an image file from the WCS of its image HDUs (all amplifiers/chips together).

The corners of every image HDU with a celestial WCS are projected on the tangent plane at their mean
direction; the footprint is their convex hull (an STC-S POLYGON for ObsCore's s_region), its centre the
mean direction and its field of view the diameter of the smallest centred circle holding every corner.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Footprint:
    ra: float
    dec: float
    fov: float  # degrees, diameter
    polygon: tuple[tuple[float, float], ...]  # (ra, dec) degrees, counter-clockwise on the sky

    def stcs(self) -> str:
        return "POLYGON ICRS " + " ".join(f"{ra:.8f} {dec:.8f}" for ra, dec in self.polygon)


def image_corners(hdus: Any) -> list[tuple[float, float]]:
    """(ra, dec) of the pixel-edge corners of each 2-D image HDU that has a celestial WCS."""
    from astropy.wcs import WCS

    corners: list[tuple[float, float]] = []
    for hdu in hdus:
        shape = _image_shape(hdu)
        if shape is None or not _celestial_ctype(hdu.header):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                wcs = WCS(hdu.header, hdus)
                if not wcs.has_celestial:
                    continue
                celestial = wcs.celestial
                ny, nx = shape
                x = np.array([-0.5, nx - 0.5, nx - 0.5, -0.5])
                y = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5])
                ra, dec = celestial.all_pix2world(x, y, 0)
        except Exception:
            continue
        if np.all(np.isfinite(ra)) and np.all(np.isfinite(dec)):
            corners.extend((float(r) % 360.0, float(d)) for r, d in zip(ra, dec, strict=True))
    return corners


def _celestial_ctype(header: Any) -> bool:
    """Cheap test before building a WCS (slow): do the first two axes name sky coordinates?"""
    ctypes = [str(header.get(f"CTYPE{i}", "")) for i in (1, 2)]
    return any(c[:4] in ("RA--", "DEC-", "GLON", "GLAT", "ELON", "ELAT") for c in ctypes)


def _image_shape(hdu: Any) -> tuple[int, int] | None:
    header = hdu.header
    if header.get("NAXIS", 0) < 2 or header.get("XTENSION", "IMAGE") not in ("IMAGE", "BINTABLE"):
        return None
    if header.get("XTENSION") == "BINTABLE" and not header.get("ZIMAGE"):
        return None
    nx = int(header.get("ZNAXIS1", header.get("NAXIS1", 0)))
    ny = int(header.get("ZNAXIS2", header.get("NAXIS2", 0)))
    return (ny, nx) if nx > 0 and ny > 0 else None


def footprint(corners: list[tuple[float, float]]) -> Footprint | None:
    if not corners:
        return None
    ra = np.radians([c[0] for c in corners])
    dec = np.radians([c[1] for c in corners])
    xyz = np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=1)
    mean = xyz.sum(axis=0)
    mean /= np.linalg.norm(mean)
    ra0, dec0 = np.arctan2(mean[1], mean[0]) % (2 * np.pi), np.arcsin(np.clip(mean[2], -1, 1))
    radius = float(np.degrees(np.max(np.arccos(np.clip(xyz @ mean, -1, 1)))))
    # Gnomonic projection about the centre: east (x) and north (y) unit vectors.
    east = np.array([-np.sin(ra0), np.cos(ra0), 0.0])
    north = np.array([-np.sin(dec0) * np.cos(ra0), -np.sin(dec0) * np.sin(ra0), np.cos(dec0)])
    w = xyz @ mean
    points = np.stack([(xyz @ east) / w, (xyz @ north) / w], axis=1)
    hull = _convex_hull(points)
    polygon = tuple((float(np.degrees(ra[i]) % 360.0), float(np.degrees(dec[i]))) for i in hull)
    return Footprint(float(np.degrees(ra0)), float(np.degrees(dec0)), 2 * radius, polygon)


def _convex_hull(points: np.ndarray) -> list[int]:
    """Indices of the convex hull, counter-clockwise (Andrew's monotone chain)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))

    def cross(o: int, a: int, b: int) -> float:
        return float(
            (points[a][0] - points[o][0]) * (points[b][1] - points[o][1])
            - (points[a][1] - points[o][1]) * (points[b][0] - points[o][0])
        )

    lower: list[int] = []
    upper: list[int] = []
    for i in order:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], i) <= 0:
            lower.pop()
        lower.append(i)
    for i in reversed(order):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], i) <= 0:
            upper.pop()
        upper.append(i)
    return lower[:-1] + upper[:-1]
