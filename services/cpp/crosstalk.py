"""Crosstalk between the amplifiers of one detector: apply a matrix, and estimate it from frames with
bright sources (as Rubin's cp_pipe does: victim pixels fitted against source pixels).

A detector's image is split into `n_amps` equal segments along columns; in readout order every other
amplifier is mirrored (the serial registers read out in opposite directions), so pixel k of one amplifier
couples to pixel k of another in *readout* order. `matrix[victim, source]` is the fraction of the source
amplifier's signal that appears in the victim; the diagonal is zero.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from dms.services.cpp.tasks import CalibrationError


def segments(image: np.ndarray, n_amps: int) -> np.ndarray:
    """The amplifier segments of a detector image in readout order: (n_amps, rows, columns per amp)."""
    rows, cols = image.shape
    if n_amps < 2 or cols % n_amps:
        raise CalibrationError(f"an image {cols} columns wide cannot be split into {n_amps} amplifiers")
    amps = image.reshape(rows, n_amps, cols // n_amps).transpose(1, 0, 2).copy()
    amps[1::2] = amps[1::2, :, ::-1]
    return amps


def assemble(amps: np.ndarray) -> np.ndarray:
    """The detector image from its segments in readout order (inverse of `segments`)."""
    amps = amps.copy()
    amps[1::2] = amps[1::2, :, ::-1]
    n, rows, width = amps.shape
    return amps.transpose(1, 0, 2).reshape(rows, n * width)


def apply(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The image with crosstalk added: each victim amplifier gains sum_source matrix[v, s] * source."""
    amps = segments(np.asarray(image, np.float64), len(matrix))
    return assemble(amps + np.einsum("vs,srk->vrk", matrix, amps))


def estimate(
    frames: list[np.ndarray],
    n_amps: int,
    threshold: float,
    background: float | None = None,
    own_source_threshold: float | None = None,
    grow: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """The crosstalk matrix and its standard errors, fitted over frames with bright sources.

    For every source amplifier, the pixels brighter than `threshold` above background are the signal;
    each victim amplifier's pixels at the same readout positions, less their median background, are fitted
    as coefficient x source signal (least squares through the origin), after rejecting victim pixels on
    or near their own sources: above `own_source_threshold` (default threshold / 10, well above any
    crosstalk signal), grown by `grow` pixels. `background` defaults to each amplifier's median.
    """
    own = threshold / 10 if own_source_threshold is None else own_source_threshold
    structure = np.ones((1, 2 * grow + 1, 2 * grow + 1), bool)
    xs: list[list[np.ndarray]] = [[] for _ in range(n_amps)]
    ys: list[list[list[np.ndarray]]] = [[[] for _ in range(n_amps)] for _ in range(n_amps)]
    for frame in frames:
        amps = segments(np.asarray(frame, np.float64), n_amps)
        levels = (
            np.median(amps.reshape(n_amps, -1), axis=1) if background is None else np.full(n_amps, background)
        )
        signal = amps - levels[:, None, None]
        bright = signal > threshold
        occupied = ndimage.binary_dilation(signal > own, structure) if grow else signal > own
        for s in range(n_amps):
            xs[s].append(signal[s][bright[s]])
            for v in range(n_amps):
                if v != s:
                    y = np.where(occupied[v][bright[s]], np.nan, signal[v][bright[s]])
                    ys[s][v].append(y)
    matrix = np.zeros((n_amps, n_amps))
    errors = np.zeros((n_amps, n_amps))
    for s in range(n_amps):
        x_all = np.concatenate(xs[s]) if xs[s] else np.zeros(0)
        for v in range(n_amps):
            if v == s:
                continue
            y_all = np.concatenate(ys[s][v]) if ys[s][v] else np.zeros(0)
            keep = np.isfinite(y_all)
            x, y = x_all[keep], y_all[keep]
            if x.size < 10:
                raise CalibrationError(
                    f"crosstalk: amplifier {s} has {x.size} pixels above {threshold} to fit victim {v} "
                    "(frames with bright sources are needed)"
                )
            # a free intercept absorbs what is left of the victim's background (its median is raised a
            # little by its own sources' light)
            design = np.stack([x, np.ones_like(x)], axis=1)
            (coefficient, _), *_ = np.linalg.lstsq(design, y, rcond=None)
            residual = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
            dx = x - x.mean()
            errors[v, s] = float(np.sqrt(np.sum(residual**2) / (x.size - 2) / (dx @ dx)))
            matrix[v, s] = float(coefficient)
    return matrix, errors
