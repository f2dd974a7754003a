"""Sigma-clipped combination of a stack of frames (the core of every master calibration)."""

from __future__ import annotations

import warnings

import numpy as np


def sigma_clipped_mean(stack: np.ndarray, sigma: float = 3.0, maxiters: int = 5) -> np.ndarray:
    """Per-pixel mean over axis 0 after iteratively rejecting values more than `sigma` standard deviations
    (population std) from the per-pixel median, until nothing changes or `maxiters` passes. Non-finite
    values are rejected from the start."""
    stack = np.asarray(stack, dtype=np.float64)
    rejected = ~np.isfinite(stack)
    for _ in range(maxiters):
        kept = np.where(rejected, np.nan, stack)
        center = np.nanmedian(kept, axis=0)
        spread = np.nanstd(kept, axis=0)
        with np.errstate(invalid="ignore"):
            now = rejected | (np.abs(stack - center) > sigma * spread)
        if np.array_equal(now, rejected):
            break
        rejected = now
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-rejected pixels: NaN, on purpose
        return np.nanmean(np.where(rejected, np.nan, stack), axis=0)
