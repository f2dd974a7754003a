"""Rubin camera geometry (camera_geometry.yaml) and the sky footprint of one detector from the boresight.

Raw camera files carry no sky WCS. As Rubin's raw formatter does, a detector's footprint follows from the
boresight (tracking RA/Dec), the rotation angle on the sky (ROTPA: position angle of the focal plane's +Y
axis, North through East) and the detector's place on the focal plane: its corners in mm become field angles
through the plate scale, then sky positions through the gnomonic (tangent-plane) projection about the
boresight. Optical distortion is ignored (under 0.1% of the field radius for these cameras' raws' purpose:
finding them by position).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from dms.services.archiver.footprint import Footprint, footprint

GEOMETRY_FILE = Path(__file__).with_name("camera_geometry.yaml")


@dataclass(frozen=True)
class Detector:
    """One detector: Rubin's id and name, centre (mm) and yaw (deg) on the focal plane, size in pixels."""

    id: int
    name: str
    x: float
    y: float
    yaw: float
    nx: int
    ny: int
    type: str
    purpose: str


@dataclass(frozen=True)
class Camera:
    name: str
    plate_scale: float  # arcsec per mm
    flip_x: bool
    pixel_size: float  # mm
    detectors: dict[str, Detector]

    def detector(self, name: str) -> Detector | None:
        return self.detectors.get(name)

    def corners_mm(self, detector: Detector) -> np.ndarray:
        """The four outer pixel-edge corners of a detector on the focal plane (mm), counter-clockwise."""
        half_x, half_y = detector.nx * self.pixel_size / 2, detector.ny * self.pixel_size / 2
        local = np.array([[-half_x, -half_y], [half_x, -half_y], [half_x, half_y], [-half_x, half_y]])
        yaw = np.radians(detector.yaw)
        rotation = np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]])
        return local @ rotation.T + np.array([detector.x, detector.y])

    def sky_matrix(self, rotation_angle: float) -> np.ndarray:
        """Focal-plane mm -> tangent-plane degrees (east, north), for a rotation angle (deg) on the sky.

        +Y points at position angle `rotation_angle`; +X at 90 deg east of it when flip_x, else west."""
        theta = np.radians(rotation_angle)
        scale = self.plate_scale / 3600.0
        y_axis = np.array([np.sin(theta), np.cos(theta)])
        east_at_zero = np.array([np.cos(theta), -np.sin(theta)])
        x_axis = east_at_zero if self.flip_x else -east_at_zero
        return scale * np.stack([x_axis, y_axis], axis=1)

    def detector_sky_corners(
        self, detector: Detector, ra: float, dec: float, rotation_angle: float
    ) -> list[tuple[float, float]]:
        """(ra, dec) degrees of a detector's corners for a boresight and sky rotation angle."""
        tangent = self.corners_mm(detector) @ self.sky_matrix(rotation_angle).T
        return deproject(np.radians(tangent), np.radians(ra), np.radians(dec))

    def detector_footprint(
        self, detector: Detector, ra: float, dec: float, rotation_angle: float
    ) -> Footprint | None:
        return footprint(self.detector_sky_corners(detector, ra, dec, rotation_angle))


def deproject(tangent: np.ndarray, ra0: float, dec0: float) -> list[tuple[float, float]]:
    """Inverse gnomonic projection: tangent-plane (east, north) radians about (ra0, dec0) -> (ra, dec) deg."""
    xi, eta = tangent[:, 0], tangent[:, 1]
    denominator = np.cos(dec0) - eta * np.sin(dec0)
    ra = ra0 + np.arctan2(xi, denominator)
    dec = np.arctan2(np.sin(dec0) + eta * np.cos(dec0), np.hypot(xi, denominator))
    return [(float(np.degrees(r)) % 360.0, float(np.degrees(d))) for r, d in zip(ra, dec, strict=True)]


def _camera(name: str, entry: dict[str, Any]) -> Camera:
    detectors = {
        det_name: Detector(
            id=int(d["id"]),
            name=det_name,
            x=float(d["x"]),
            y=float(d["y"]),
            yaw=float(d["yaw"]),
            nx=int(d["nx"]),
            ny=int(d["ny"]),
            type=str(d["type"]),
            purpose=str(d["purpose"]),
        )
        for det_name, d in entry["detectors"].items()
    }
    scale, flip, pixel = float(entry["plate_scale"]), bool(entry["flip_x"]), float(entry["pixel_size"])
    return Camera(name, scale, flip, pixel, detectors)


@functools.cache
def cameras() -> dict[str, Camera]:
    """Every camera of the geometry file by instrument name, simulated cameras by their alias."""
    document = yaml.safe_load(GEOMETRY_FILE.read_text())
    result = {name: _camera(name, entry) for name, entry in document["cameras"].items()}
    for alias, target in document.get("aliases", {}).items():
        result[alias] = result[target]
    return result


def camera(instrument: str) -> Camera | None:
    return cameras().get(instrument)
