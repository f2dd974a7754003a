"""The light-curve features kept per DiaObject, in the order of their `feature_vector`."""

from __future__ import annotations

FEATURES: tuple[str, ...] = (
    "amplitude",
    "slope",
    "periodogram_period",
    "periodogram_power",
    "colour_g_r",
    "mean_flux",
)
"""Columns of `minibroker.feature` a filter may use (as ``features.NAME``), and the vector's components."""

FEATURE_COLUMNS: tuple[str, ...] = ("dia_object_id", "n_points", *FEATURES)
