"""What a DRP over a region has to work on: the raws in the Data Backbone whose detectors lie in the region,
each with its master bias and flat checked (found, and matching their recorded checksums), and the sky
patches each raw touches. A raw whose calibration is missing or corrupt is still processed, so that its
error is recorded on its task, but nothing downstream waits for it: the rest of the release goes on."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from dms.services.backbone import Backbone
from dms.services.drp import io
from dms.services.drp.errors import DrpError
from dms.services.drp.patches import patches_touching

log = logging.getLogger(__name__)


@dataclass
class RawInput:
    data_id: dict[str, Any]
    visit: int
    detector: int
    band: str
    boresight: tuple[float, float]
    center: tuple[float, float]
    patches: list[int]
    problem: str | None = None  # why the raw cannot be calibrated (found at planning)


@dataclass
class Inputs:
    raws: list[RawInput]
    truth: list[str] = field(default_factory=list)  # simulator truth tables of the raws' nights

    @property
    def usable(self) -> list[RawInput]:
        return [r for r in self.raws if r.problem is None]


def _separation(ra1: float, dec1: float, ra2: np.ndarray, dec2: np.ndarray) -> np.ndarray:
    r1, d1, r2, d2 = np.radians(ra1), np.radians(dec1), np.radians(ra2), np.radians(dec2)
    cos = np.sin(d1) * np.sin(d2) + np.cos(d1) * np.cos(d2) * np.cos(r1 - r2)
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def find_inputs(
    backbone: Backbone, ra: float, dec: float, radius: float, bands: list[str] | None, patch_order: int
) -> Inputs:
    """The raws of the region (detector centre within `radius` degrees), with their problems and patches;
    a DrpError when the region holds none."""
    store = backbone.store()
    raws: list[RawInput] = []
    checked: dict[str, str | None] = {}
    truth: set[str] = set()
    for ref in backbone.list("raw"):
        if ref.path is None:
            continue
        path = store.absolute(ref.path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FITSFixedWarning)
                primary = fits.getheader(path, 0)
                header = fits.getheader(path, 1)
                wcs = WCS(header)
            rows, cols = int(header["NAXIS2"]), int(header["NAXIS1"])
        except (OSError, IndexError, KeyError, ValueError, TypeError) as exc:
            # not a raw with an image extension and a WCS (another camera's file, a damaged one): no sky
            # position, so it belongs to no region
            log.warning("raw %s skipped: its image extension or WCS cannot be read (%s)", ref.path, exc)
            continue
        band = str(primary.get("FILTBAND", ""))
        if bands and band not in bands:
            continue
        cra, cdec = wcs.pixel_to_world_values((cols - 1) / 2, (rows - 1) / 2)
        if _separation(ra, dec, np.array([float(cra)]), np.array([float(cdec)]))[0] > radius:
            continue
        corner_ra, corner_dec = wcs.pixel_to_world_values(
            [-0.5, cols - 0.5, cols - 0.5, -0.5], [-0.5, -0.5, rows - 0.5, rows - 0.5]
        )
        data_id = dict(ref.data_id)
        raw = RawInput(
            data_id=data_id,
            visit=int(data_id["exposure"]),
            detector=int(data_id["detector"]),
            band=band,
            boresight=(float(primary.get("RA", cra)), float(primary.get("DEC", cdec))),
            center=(float(cra) % 360.0, float(cdec)),
            patches=patches_touching(np.asarray(corner_ra), np.asarray(corner_dec), patch_order),
        )
        raw.problem = _calibration_problem(backbone, raw, checked)
        raws.append(raw)
        day_obs = primary.get("DAYOBS")
        if day_obs is not None:
            found = backbone.find("simTruth", {"instrument": data_id["instrument"], "day_obs": int(day_obs)})
            if found is not None and found.path is not None:
                truth.add(str(store.absolute(found.path)))
    if not raws:
        what = f" in bands {','.join(bands)}" if bands else ""
        raise DrpError(
            f"the region ({ra:.4f}, {dec:.4f}) radius {radius} deg holds no raws{what} in the Data Backbone"
        )
    raws.sort(key=lambda r: (r.visit, r.detector))
    return Inputs(raws, sorted(truth))


def _calibration_problem(backbone: Backbone, raw: RawInput, checked: dict[str, str | None]) -> str | None:
    instrument = raw.data_id["instrument"]
    collections = io.calibration_collections(backbone, instrument, raw.visit)
    for kind, data_id in (
        ("bias", {"instrument": instrument, "detector": raw.detector}),
        ("flat", {"instrument": instrument, "detector": raw.detector, "band": raw.band}),
    ):
        try:
            ref = backbone.find(kind, data_id, collections)
        except Exception as exc:  # an unknown dataset type: no calibration of that kind at all
            return f"no master {kind} for {data_id}: {exc}"
        if ref is None:
            return f"no master {kind} for {data_id} in the Data Backbone"
        key = str(ref.id)
        if key not in checked:
            try:
                backbone.read_bytes(ref)
                checked[key] = None
            except Exception as exc:  # corrupted or missing file: the Backbone's message says which
                checked[key] = f"master {kind} for {data_id}: {exc}"
        if checked[key] is not None:
            return checked[key]
    return None
