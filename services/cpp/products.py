"""The CPP's other products as registered tasks: the crosstalk matrix of a detector's amplifiers, and the
templates of alert production (coadds of good-seeing visits per detector, band and sky region).

A crosstalk matrix is written as a FITS file (primary: the matrix, victim x source; ERRORS: standard
errors). A template is an exposure (IMAGE, VARIANCE, MASK, as prompt processing reads it), stored in the
Data Backbone as dataset type ``template`` with data ID instrument, detector, band, where prompt
processing finds it (its RUN collection is the template collection), and its sky region (the nested
HEALPix pixel of its centre at order 7) in the header and in the product description.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

import healpy as hp
import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from pydantic import Field

from dms.services.cpp import crosstalk
from dms.services.cpp.tasks import CalibrationError, read_frame
from dms.tasks import Task, TaskConfig, register_task

TEMPLATE = "template"
TEMPLATE_DIMENSIONS = ["instrument", "detector", "band"]
REGION_ORDER = 7  # ~0.46 deg pixels: a template covers one detector's region of the sky


class CrosstalkConfig(TaskConfig):
    amplifiers: int = Field(default=4, ge=2, le=64, description="Amplifiers side by side along columns.")
    threshold: float = Field(
        default=5000.0, gt=0, description="Source pixels used: this far above background (ADU)."
    )
    min_frames: int = Field(default=1, ge=1, description="Fewest frames the matrix may be fitted on.")


@register_task
class CrosstalkTask(Task[CrosstalkConfig, dict[str, Any]]):
    """Crosstalk matrix of one detector from frames with bright sources (victim vs source fits)."""

    name = "cpp.crosstalk"
    ConfigClass = CrosstalkConfig

    def run(self, frames: list[str], output: str) -> dict[str, Any]:
        if len(frames) < self.config.min_frames:
            raise CalibrationError(f"{len(frames)} frames given, at least {self.config.min_frames} needed")
        with self.timed("read"):
            images = [read_frame(p)[0] for p in frames]
        with self.timed("fit"):
            matrix, errors = crosstalk.estimate(images, self.config.amplifiers, self.config.threshold)
        header = fits.Header({"CALTYPE": "crosstalk", "NCOMBINE": len(frames)})
        header["CFGHASH"] = self.config.config_hash()
        for key, value in self.data_id.items():
            header[f"HIERARCH DMS {key.upper()}"] = value
        hdus = fits.HDUList([fits.PrimaryHDU(matrix, header), fits.ImageHDU(errors, name="ERRORS")])
        path = _write_atomic(hdus, Path(output))
        return {
            "type": "crosstalk",
            "data_id": self.data_id,
            "path": str(path),
            "checksum": hashlib.sha256(path.read_bytes()).hexdigest(),
            "n_frames": len(frames),
            "config_hash": self.config.config_hash(),
            "max_coefficient": float(np.abs(matrix).max()),
        }


def _write_atomic(hdus: fits.HDUList, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    hdus.writeto(tmp, overwrite=True)
    tmp.replace(path)  # a killed worker leaves no half-written product
    return path


class TemplateConfig(TaskConfig):
    max_fwhm_pixels: float = Field(
        default=4.0, gt=0, description="Visits with a PSF FWHM above this (pixels) are left out."
    )
    min_visits: int = Field(default=2, ge=1, description="Fewest good-seeing visits a template needs.")
    max_visits: int = Field(default=20, ge=1, description="The best-seeing visits used at most.")


def _read_exposure(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, fits.Header, fits.Header]:
    try:
        with fits.open(path, memmap=False) as hdus:
            image, variance, mask = (hdus[n] for n in ("IMAGE", "VARIANCE", "MASK"))
            return (
                np.asarray(image.data, np.float64),
                np.asarray(variance.data, np.float64),
                np.asarray(mask.data, np.int64),
                hdus[0].header.copy(),
                image.header.copy(),
            )
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise CalibrationError(
            f"cannot read exposure {path} (IMAGE, VARIANCE, MASK extensions expected): {exc}"
        ) from None


def coadd(
    images: list[np.ndarray], variances: list[np.ndarray], masks: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse-variance weighted mean of aligned images, ignoring masked or non-positive-variance pixels;
    (image, variance, mask): variance 1 / sum of weights, mask bits OR-ed where no visit contributed."""
    stack = np.stack(images)
    var = np.stack(variances)
    bad = (np.stack(masks) != 0) | ~(var > 0) | ~np.isfinite(stack)
    weights = np.where(bad, 0.0, 1.0 / np.where(var > 0, var, 1.0))
    total = weights.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        image = np.where(total > 0, (weights * np.where(bad, 0.0, stack)).sum(axis=0) / total, np.nan)
        variance = np.where(total > 0, 1.0 / total, np.inf)
    mask = np.where(total > 0, 0, np.bitwise_or.reduce(np.stack(masks), axis=0))
    return image, variance, mask


@register_task
class TemplateTask(Task[TemplateConfig, dict[str, Any]]):
    """Template of one detector and band: the coadd of its good-seeing calibrated exposures (one WCS)."""

    name = "cpp.template"
    ConfigClass = TemplateConfig

    def run(
        self, exposures: list[str], output: str, data_dir: str | None = None, run: str | None = None
    ) -> dict[str, Any]:
        with self.timed("read"):
            read = [(p, *_read_exposure(p)) for p in exposures]
        fwhm = {p: float(primary.get("PSFFWHM", np.inf)) for p, _, _, _, primary, _ in read}
        good = sorted((p for p in fwhm if fwhm[p] <= self.config.max_fwhm_pixels), key=fwhm.__getitem__)
        good = good[: self.config.max_visits]
        if len(good) < self.config.min_visits:
            raise CalibrationError(
                f"template {self.data_id}: {len(good)} of {len(exposures)} visits have a PSF FWHM <= "
                f"{self.config.max_fwhm_pixels} pixels, at least {self.config.min_visits} needed"
            )
        chosen = [r for r in read if r[0] in good]
        shapes = {r[1].shape for r in chosen}
        wcs_keys = {tuple(sorted((k, str(v)) for k, v in _wcs(r[5]).to_header().items())) for r in chosen}
        if len(shapes) != 1 or len(wcs_keys) != 1:
            raise CalibrationError(f"template {self.data_id}: the exposures are not on one pixel grid")
        with self.timed("coadd"):
            image, variance, mask = coadd(
                [r[1] for r in chosen], [r[2] for r in chosen], [r[3] for r in chosen]
            )
        primary = chosen[0][4].copy()
        wcs = _wcs(chosen[0][5])
        centre = wcs.pixel_to_world_values((image.shape[1] - 1) / 2, (image.shape[0] - 1) / 2)
        region = int(hp.ang2pix(2**REGION_ORDER, float(centre[0]), float(centre[1]), nest=True, lonlat=True))
        primary["DMSKIND"] = "template"
        primary["VISIT"] = 0
        primary["PSFFWHM"] = max(fwhm[p] for p in good)  # the coadd's PSF is no sharper than its worst
        primary["NCOMBINE"] = len(good)
        primary["HPXORDER"] = REGION_ORDER
        primary["HPXPIX"] = region
        primary["CFGHASH"] = self.config.config_hash()
        hdus = fits.HDUList([fits.PrimaryHDU(header=primary)])
        for name, data in (
            ("IMAGE", image.astype(np.float32)),
            ("VARIANCE", variance.astype(np.float32)),
            ("MASK", mask.astype(np.int32)),
        ):
            hdu = fits.ImageHDU(data, name=name)
            hdu.header.update(wcs.to_header())
            hdus.append(hdu)
        path = _write_atomic(hdus, Path(output))
        product: dict[str, Any] = {
            "type": "template",
            "data_id": self.data_id,
            "region": {"healpix_order": REGION_ORDER, "healpix_pixel": region},
            "path": str(path),
            "checksum": hashlib.sha256(path.read_bytes()).hexdigest(),
            "n_frames": len(good),
            "visits": [int(r[4].get("VISIT", -1)) for r in chosen],
            "config_hash": self.config.config_hash(),
        }
        if data_dir is not None and run is not None:
            product["dataset"] = _register_template(Path(data_dir), path, self.data_id, run)
        return product


def _wcs(header: fits.Header) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header)


def _register_template(data_dir: Path, path: Path, data_id: dict[str, Any], run: str) -> str:
    """Put the template into the Data Backbone where prompt processing looks for it; its dataset id."""
    from dms.deployment import Deployment
    from dms.services.backbone.client import Backbone

    missing = [k for k in TEMPLATE_DIMENSIONS if k not in data_id]
    if missing:
        raise CalibrationError(f"a template's data ID needs {', '.join(missing)}: {data_id}")
    deployment = Deployment.open(data_dir)
    try:
        key = {k: data_id[k] for k in TEMPLATE_DIMENSIONS}
        ref, _ = Backbone(deployment).put(path, TEMPLATE, key, run=run, dimensions=TEMPLATE_DIMENSIONS)
    finally:
        deployment.dispose()
    return str(ref.id)
