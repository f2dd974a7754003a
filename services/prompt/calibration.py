"""Calibration mode of the prompt service: statistics of bias, dark and flat frames as QC metrics.

For each detector of a calibration frame the task measures the sigma-clipped mean and standard deviation
of the image (astropy's sigma_clipped_stats) and counts the hot pixels (more than `hot_sigma` clipped
standard deviations above the clipped mean), then the service writes them to the QC tables as
`calib_<type>_mean`, `calib_<type>_std` and `calib_<type>_hot_pixels`, where thresholds raise alarms.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from pydantic import Field

from dms.services.prompt.errors import DetectorInputError
from dms.services.prompt.exposure import DetectorResult
from dms.services.prompt.payloads import DetectorWork, ProcessedDetector, archived_raw
from dms.services.prompt.visits import NextVisit
from dms.tasks import Task, TaskConfig, register_task, run_task

IMAGE_TYPES = ("bias", "dark", "flat")


class CalibrationQCConfig(TaskConfig):
    sigma: float = Field(default=3.0, gt=0, description="Clipping threshold of the mean and std, in sigmas.")
    hot_sigma: float = Field(
        default=5.0, gt=0, description="A hot pixel lies this many sigmas above the mean."
    )


@register_task
class CalibrationQCTask(Task[CalibrationQCConfig, dict[str, float]]):
    """Mean, standard deviation and hot pixels of one detector's calibration frame."""

    name = "prompt.calibration_qc"
    ConfigClass = CalibrationQCConfig

    def run(self, image: np.ndarray, image_type: str) -> dict[str, float]:
        with self.timed("statistics"):
            data = np.asarray(image, dtype=np.float64)
            finite = data[np.isfinite(data)]
            if finite.size == 0:
                raise DetectorInputError("the calibration frame has no finite pixels")
            mean, _median, std = sigma_clipped_stats(finite, sigma=self.config.sigma)
            hot = int(np.count_nonzero(finite > mean + self.config.hot_sigma * std))
        return {
            f"calib_{image_type}_mean_adu": float(mean),
            f"calib_{image_type}_std_adu": float(std),
            f"calib_{image_type}_hot_pixels": float(hot),
        }


def frame_image(raw: bytes, label: str) -> tuple[np.ndarray, str]:
    """The pixels of a raw calibration frame (its first image HDU) and its type from IMGTYPE/OBSTYPE."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hdus = fits.HDUList.fromstring(raw)
            image = next((h.data for h in hdus if h.data is not None and np.ndim(h.data) == 2), None)
            header = hdus[0].header
    except (OSError, ValueError, TypeError, IndexError) as exc:
        raise DetectorInputError(f"{label}: the raw is not a readable FITS file ({exc})") from None
    if image is None:
        raise DetectorInputError(f"{label}: the raw has no 2-d image")
    kind = str(header.get("IMGTYPE") or header.get("OBSTYPE") or "").strip().lower()
    if kind not in IMAGE_TYPES:
        raise DetectorInputError(
            f"{label}: IMGTYPE/OBSTYPE {kind or '(none)'!r} is not a calibration frame "
            f"({', '.join(IMAGE_TYPES)})"
        )
    return np.asarray(image), kind


class CalibrationPayload:
    """Calibration mode: the raw of each detector from the Data Backbone, its statistics as metrics."""

    name = "calibration"

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.config = dict(config or {})

    def prefetch(self, backbone: Any, visit: NextVisit, detector: int) -> None:
        return None

    def fetch_raw(self, backbone: Any, visit: NextVisit, detector: int) -> bytes:
        return archived_raw(backbone, visit, detector)

    def process(self, work: DetectorWork) -> ProcessedDetector:
        label = f"visit {work.visit.visit} detector {work.detector}"
        image, kind = frame_image(work.raw, label)
        run = run_task(
            CalibrationQCTask,
            self.config,
            data_id={"visit": work.visit.visit, "detector": work.detector},
            image=image,
            image_type=kind,
        )
        assert run.result is not None
        result = DetectorResult(
            work.visit.visit, work.detector, pd.DataFrame(), None, metrics=run.result, timings=run.timings
        )
        return ProcessedDetector(result, None, None)


def frame_bytes(image: np.ndarray, header: dict[str, Any]) -> bytes:
    """A FITS file of one calibration frame (for tests and the demo)."""
    buffer = io.BytesIO()
    fits.PrimaryHDU(image, header=fits.Header(header)).writeto(buffer)
    return buffer.getvalue()
