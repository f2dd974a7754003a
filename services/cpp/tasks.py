"""Master bias, dark and flat as registered tasks: raw FITS frames in, a master FITS file out.

Each task returns a small JSON description of its product (type, data ID, path, checksum, frames combined,
configuration hash) that downstream tasks take as input and `registry.certify` registers with a validity
range.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from pydantic import Field

from dms.errors import DMSError
from dms.services.cpp.combine import sigma_clipped_mean
from dms.tasks import Task, TaskConfig, register_task

#: Primary-header cards a frame's image header inherits.
PRIMARY_KEYS = ("EXPTIME", "DARKTIME", "IMGTYPE", "DAYOBS", "FILTER")


class CalibrationError(DMSError):
    """A calibration frame or master cannot be used (the message names the file)."""


class CombineConfig(TaskConfig):
    sigma: float = Field(
        default=3.0, gt=0, le=100, description="Rejection threshold, in standard deviations."
    )
    maxiters: int = Field(default=5, ge=1, le=100, description="Rejection passes at most.")
    min_frames: int = Field(default=3, ge=1, description="Fewest frames a master may be made from.")


def read_frame(path: str) -> tuple[np.ndarray, fits.Header]:
    """The image of a FITS frame (first HDU with data) and its header (with the primary header's cards, as
    a raw keeps EXPTIME there); CalibrationError if unreadable."""
    try:
        with fits.open(path, memmap=False) as hdus:
            for hdu in hdus:
                if hdu.data is not None:
                    header = hdu.header.copy()
                    for key in PRIMARY_KEYS:  # a raw keeps these in its primary header
                        if key not in header and key in hdus[0].header:
                            header[key] = hdus[0].header[key]
                    return np.asarray(hdu.data, dtype=np.float64), header
    except (OSError, ValueError, TypeError) as exc:
        raise CalibrationError(f"cannot read calibration frame {path}: {exc}") from None
    raise CalibrationError(f"calibration frame {path} has no image data")


def _stack(paths: list[str], config: CombineConfig) -> tuple[np.ndarray, list[fits.Header]]:
    if len(paths) < config.min_frames:
        raise CalibrationError(f"{len(paths)} frames given, at least {config.min_frames} needed")
    frames = [read_frame(p) for p in paths]
    shapes = {f[0].shape for f in frames}
    if len(shapes) != 1:
        raise CalibrationError(f"frames differ in shape: {sorted(shapes)}")
    return np.stack([f[0] for f in frames]), [f[1] for f in frames]


def _exptime(header: fits.Header, path: str) -> float:
    value = header.get("EXPTIME")
    if not isinstance(value, int | float) or value <= 0:
        raise CalibrationError(f"frame {path} has no positive EXPTIME")
    return float(value)


def _write(
    image: np.ndarray, output: str, kind: str, data_id: dict[str, Any], n: int, chash: str
) -> dict[str, Any]:
    header = fits.Header()
    header["CALTYPE"] = kind
    header["NCOMBINE"] = n
    header["CFGHASH"] = chash
    for key, value in data_id.items():
        header[f"HIERARCH DMS {key.upper()}"] = value
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fits.PrimaryHDU(image.astype(np.float32), header).writeto(tmp, overwrite=True)
    tmp.replace(path)  # atomic: a killed worker leaves no half-written master
    return {
        "type": kind,
        "data_id": data_id,
        "path": str(path),
        "checksum": hashlib.sha256(path.read_bytes()).hexdigest(),
        "n_frames": n,
        "config_hash": chash,
        "median": float(np.nanmedian(image)),
    }


def _load_master(product: dict[str, Any], kind: str) -> np.ndarray:
    if not isinstance(product, dict) or product.get("type") != kind:
        raise CalibrationError(f"expected a master {kind} as input, got {product!r:.80}")
    image, _ = read_frame(product["path"])
    if hashlib.sha256(Path(product["path"]).read_bytes()).hexdigest() != product["checksum"]:
        raise CalibrationError(f"master {kind} {product['path']} does not match its checksum (corrupted)")
    return image


@register_task
class MasterBiasTask(Task[CombineConfig, dict[str, Any]]):
    """Master bias: sigma-clipped mean of bias frames."""

    name = "cpp.master_bias"
    ConfigClass = CombineConfig

    def run(self, frames: list[str], output: str) -> dict[str, Any]:
        with self.timed("read"):
            stack, _ = _stack(frames, self.config)
        with self.timed("combine"):
            master = sigma_clipped_mean(stack, self.config.sigma, self.config.maxiters)
        return _write(master, output, "bias", self.data_id, len(frames), self.config.config_hash())


@register_task
class MasterDarkTask(Task[CombineConfig, dict[str, Any]]):
    """Master dark (counts per second): bias-subtracted darks over their exposure times, combined."""

    name = "cpp.master_dark"
    ConfigClass = CombineConfig

    def run(self, frames: list[str], bias: dict[str, Any], output: str) -> dict[str, Any]:
        with self.timed("read"):
            stack, headers = _stack(frames, self.config)
            master_bias = _load_master(bias, "bias")
        rates = (stack - master_bias) / np.array(
            [_exptime(h, p) for h, p in zip(headers, frames, strict=True)]
        )[:, None, None]
        with self.timed("combine"):
            master = sigma_clipped_mean(rates, self.config.sigma, self.config.maxiters)
        return _write(master, output, "dark", self.data_id, len(frames), self.config.config_hash())


@register_task
class MasterFlatTask(Task[CombineConfig, dict[str, Any]]):
    """Master flat: bias- and dark-corrected flats, each normalised by its median, combined, normalised."""

    name = "cpp.master_flat"
    ConfigClass = CombineConfig

    def run(
        self, frames: list[str], bias: dict[str, Any], dark: dict[str, Any], output: str
    ) -> dict[str, Any]:
        with self.timed("read"):
            stack, headers = _stack(frames, self.config)
            master_bias = _load_master(bias, "bias")
            master_dark = _load_master(dark, "dark")
        exptimes = np.array([_exptime(h, p) for h, p in zip(headers, frames, strict=True)])[:, None, None]
        corrected = stack - master_bias - master_dark * exptimes
        medians = np.nanmedian(corrected.reshape(len(frames), -1), axis=1)
        if np.any(medians <= 0):
            raise CalibrationError("a flat has no signal after bias and dark correction (median <= 0)")
        with self.timed("combine"):
            master = sigma_clipped_mean(
                corrected / medians[:, None, None], self.config.sigma, self.config.maxiters
            )
        master /= np.nanmedian(master)
        return _write(master, output, "flat", self.data_id, len(frames), self.config.config_hash())
