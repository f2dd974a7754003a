"""Light-curve features per DiaObject from the APDB's history, computed by `light-curve`, kept with pgvector.

Each DiaObject's light curve is its DiaForcedSource and DiaSource fluxes (psfFlux, nJy) in time order, one
point per time (a forced measurement is preferred where both exist). Features (`FEATURES`): the half
peak-to-peak `amplitude`, the `slope` of a weighted linear fit (nJy/day), the period and signal-to-noise of
the Lomb-Scargle `periodogram` peak, the `colour_g_r` of the mean g and r DiaSource fluxes (AB magnitudes),
and the weighted `mean_flux`. A light curve with fewer than `MIN_POINTS` points gets no fitted features
(NULL), and its vector uses 0 for each missing component (pgvector has no NULL components).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import light_curve as lc
import numpy as np
import pandas as pd
import psycopg

from dms.services.minibroker.features_names import FEATURES

MIN_POINTS = 4

_HISTORY = (
    'SELECT "diaObjectId", "midpointMjdTai", "psfFlux", "psfFluxErr", band, 0 AS kind '
    'FROM apdb."DiaForcedSource" WHERE "diaObjectId" = ANY(%(ids)s) '
    'UNION ALL SELECT "diaObjectId", "midpointMjdTai", "psfFlux", "psfFluxErr", band, 1 '
    'FROM apdb."DiaSource" WHERE "diaObjectId" = ANY(%(ids)s)'
)


def read_history(conn: psycopg.Connection[Any], object_ids: Sequence[int]) -> pd.DataFrame:
    """The forced and detected fluxes of `object_ids` (kind 0: forced, 1: DiaSource)."""
    rows = conn.execute(_HISTORY, {"ids": [int(i) for i in object_ids]}).fetchall()
    columns = ["diaObjectId", "midpointMjdTai", "psfFlux", "psfFluxErr", "band", "kind"]
    return pd.DataFrame(rows, columns=columns)


def compute_features(history: pd.DataFrame) -> pd.DataFrame:
    """One row per DiaObject of `history`: n_points and the `FEATURES` (NaN where they cannot be computed)."""
    extractor = lc.Extractor(lc.Amplitude(), lc.LinearFit(), lc.Periodogram(peaks=1), lc.WeightedMean())
    clean = history.dropna(subset=["midpointMjdTai", "psfFlux", "psfFluxErr"])
    clean = clean[clean["psfFluxErr"] > 0]
    curves = clean.sort_values(["diaObjectId", "midpointMjdTai", "kind"]).drop_duplicates(
        ["diaObjectId", "midpointMjdTai"]
    )
    records = []
    for object_id, curve in curves.groupby("diaObjectId", sort=True):
        t, flux, err = (curve[c].to_numpy(np.float64) for c in ("midpointMjdTai", "psfFlux", "psfFluxErr"))
        values = np.full(len(extractor.names), np.nan)
        if len(t) >= MIN_POINTS:
            with contextlib.suppress(ValueError, RuntimeError):
                values = extractor(t, flux, err, sorted=True, check=False)
        named = dict(zip(extractor.names, values, strict=True))
        records.append(
            {
                "dia_object_id": int(str(object_id)),
                "n_points": len(t),
                "amplitude": named["amplitude"],
                "slope": named["linear_fit_slope"],
                "periodogram_period": named["periodogram_period_0"],
                "periodogram_power": named["periodogram_period_s_to_n_0"],
                "mean_flux": named["weighted_mean"],
            }
        )
    frame = pd.DataFrame.from_records(
        records, columns=["dia_object_id", "n_points", *(f for f in FEATURES if f != "colour_g_r")]
    )
    return frame.merge(_colours(clean), on="dia_object_id", how="left")[
        ["dia_object_id", "n_points", *FEATURES]
    ]


def _colours(history: pd.DataFrame) -> pd.DataFrame:
    detected = history[(history["kind"] == 1) & history["band"].isin(["g", "r"])]
    means = detected.groupby(["diaObjectId", "band"])["psfFlux"].mean().unstack()
    for band in "gr":
        if band not in means:
            means[band] = np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = (means["g"] / means["r"]).where((means["g"] > 0) & (means["r"] > 0))
        colour = -2.5 * np.log10(ratio.to_numpy(np.float64))
    return pd.DataFrame({"dia_object_id": means.index.to_numpy(np.int64), "colour_g_r": colour})


def feature_vector(row: pd.Series) -> list[float]:
    """The pgvector components of a feature row (0 for a missing feature)."""
    return [float(v) if np.isfinite(v) else 0.0 for v in row[list(FEATURES)].to_numpy(np.float64)]


def store_features(conn: psycopg.Connection[Any], features: pd.DataFrame) -> int:
    """Insert or replace the features of these DiaObjects; returns the number stored."""
    vector = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() is not None
    rows = []
    for _, row in features.iterrows():
        values = [None if not np.isfinite(row[f]) else float(row[f]) for f in FEATURES]
        components = feature_vector(row)
        encoded: Any = "[" + ",".join(repr(c) for c in components) + "]" if vector else components
        rows.append((int(row["dia_object_id"]), int(row["n_points"]), *values, encoded))
    cast = "%s::vector" if vector else "%s::double precision[]"
    upsert = (
        "INSERT INTO minibroker.feature (dia_object_id, n_points, amplitude, slope, periodogram_period, "
        "periodogram_power, colour_g_r, mean_flux, feature_vector) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, " + cast + ") ON CONFLICT (dia_object_id) DO UPDATE SET "
        "n_points = EXCLUDED.n_points, amplitude = EXCLUDED.amplitude, slope = EXCLUDED.slope, "
        "periodogram_period = EXCLUDED.periodogram_period, periodogram_power = EXCLUDED.periodogram_power, "
        "colour_g_r = EXCLUDED.colour_g_r, mean_flux = EXCLUDED.mean_flux, "
        "feature_vector = EXCLUDED.feature_vector, computed_at = CURRENT_TIMESTAMP"
    )
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(upsert.encode(), rows)
    return len(rows)


def update_features(conninfo: str, visit: int) -> int:
    """Recompute the features of the DiaObjects with a DiaSource in `visit` (run before the filters)."""
    with psycopg.connect(conninfo) as conn:
        ids = [
            int(r[0])
            for r in conn.execute(
                'SELECT DISTINCT "diaObjectId" FROM apdb."DiaSource" WHERE visit = %s '
                'AND "diaObjectId" IS NOT NULL',
                (int(visit),),
            )
        ]
        if not ids:
            return 0
        return store_features(conn, compute_features(read_history(conn, ids)))
