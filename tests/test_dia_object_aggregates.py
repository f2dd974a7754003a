"""DiaObject aggregates computed in the database equal a pandas computation of the same definitions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from apdb_support import field_positions, make_objects, make_sources, tai

from dms.services.apdb import Apdb, ApdbInputError
from dms.services.prompt.aggregates import BANDS, updated_objects

pytest_plugins = ["apdb_support"]  # the apdb fixture

MJD = 60_700.0


def _as_stored(values: pd.Series) -> np.ndarray:
    """Rubin's `float` columns are double precision in PostgreSQL; a float32 value is stored as its shortest
    decimal (what Arrow's CSV writes), which reads back as the same float32."""
    return np.array([float(str(np.float32(v))) for v in values])


def _pandas(history: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for object_id, group in history.groupby("diaObjectId"):
        r, d = np.radians(group["ra"].to_numpy()), np.radians(group["dec"].to_numpy())
        x, y, z = (np.cos(d) * np.cos(r)).mean(), (np.cos(d) * np.sin(r)).mean(), np.sin(d).mean()
        row = {
            "diaObjectId": object_id,
            "ra": np.degrees(np.arctan2(y, x)) % 360,
            "dec": np.degrees(np.arctan2(z, np.hypot(x, y))),
            "nDiaSources": len(group),
            "firstDiaSourceMjdTai": group["midpointMjdTai"].min(),
            "lastDiaSourceMjdTai": group["midpointMjdTai"].max(),
        }
        for b in BANDS:
            sel = group[group["band"] == b]
            flux = pd.Series(_as_stored(sel["psfFlux"]))
            w = 1 / pd.Series(_as_stored(sel["psfFluxErr"])) ** 2
            row[f"{b}_psfFluxMean"] = (w * flux).sum() / w.sum() if len(sel) else np.nan
            row[f"{b}_psfFluxMeanErr"] = 1 / np.sqrt(w.sum()) if len(sel) else np.nan
            row[f"{b}_psfFluxSigma"] = flux.std(ddof=1) if len(sel) > 1 else np.nan
            row[f"{b}_psfFluxNdata"] = len(sel)
        rows.append(row)
    return pd.DataFrame(rows).sort_values("diaObjectId").reset_index(drop=True)


def test_aggregates_equal_pandas(apdb: Apdb) -> None:
    rng = np.random.default_rng(21)
    # objects near RA 0, so the mean position must not be an average of angles
    objects = make_objects(rng, np.arange(1, 301), field_positions(rng, 300, 0.05, -10.0, 0.2), MJD - 400)
    apdb.store(tai(MJD - 400), objects)
    old = [
        make_sources(rng, objects, visit=k, detector=1, mjd=MJD - 30 * k, first_id=10_000 * k)
        for k in range(1, 15)
    ]
    for k, frame in enumerate(old, start=1):
        apdb.store(tai(MJD - 30 * k), objects.iloc[:0], frame)
    visit = make_sources(rng, objects.iloc[:200], visit=99, detector=1, mjd=MJD, first_id=1_000_000)
    got = updated_objects(apdb, visit, tai(MJD))
    window = pd.concat([f for f in old if f["midpointMjdTai"].iloc[0] > MJD - 360] + [visit])
    expected = _pandas(window[window["diaObjectId"].isin(visit["diaObjectId"])])
    assert list(got["diaObjectId"]) == list(expected["diaObjectId"]) and len(got) == 200
    for column in expected.columns:
        np.testing.assert_allclose(
            got[column].to_numpy(float),
            expected[column].to_numpy(float),
            rtol=2e-6,
            atol=1e-9,
            err_msg=column,
        )
    assert (got["ra"] < 1).sum() + (got["ra"] > 359).sum() == 200  # near RA 0 on both sides, never 180


def test_unassociated_sources_are_refused(apdb: Apdb) -> None:
    frame = pd.DataFrame(
        {
            "diaSourceId": [1],
            "diaObjectId": [None],
            "midpointMjdTai": [MJD],
            "ra": [1.0],
            "dec": [1.0],
            "band": ["r"],
            "psfFlux": [1.0],
            "psfFluxErr": [0.1],
        }
    )
    with pytest.raises(ApdbInputError, match="must be associated"):
        updated_objects(apdb, frame, tai(MJD))
    with pytest.raises(ApdbInputError, match=r"columns \['band'\]"):
        updated_objects(apdb, frame.drop(columns=["band"]), tai(MJD))
