"""A mini-broker deployment for tests and the benchmark: users with tokens, an APDB with a few visits of
history and one alert batch (the last visit's DiaSources), features computed from that history."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import psycopg
from apdb_support import field_positions, make_forced, make_objects, make_sources, tai

from dms.services.apdb import Apdb
from dms.services.auth import add_user, issue_token
from dms.services.minibroker.features import update_features

FIRST_MJD = 61000.2
HISTORY_VISITS = 5


@dataclass
class Batch:
    """The alert batch of `visit`: its DiaSources with their DiaObject and features (as filters see it)."""

    visit: int
    sources: pd.DataFrame
    features: pd.DataFrame
    objects: pd.DataFrame

    def frame(self) -> pd.DataFrame:
        """DiaSource columns as they are; feature columns prefixed `f_`; DiaObject columns prefixed `o_`."""
        feats = self.features.add_prefix("f_").rename(columns={"f_dia_object_id": "diaObjectId"})
        objs = self.objects.add_prefix("o_").rename(columns={"o_diaObjectId": "diaObjectId"})
        return self.sources.merge(feats, on="diaObjectId", how="left").merge(
            objs, on="diaObjectId", how="left"
        )


def make_batch(apdb: Apdb, conninfo: str, n_objects: int, seed: int = 14) -> Batch:
    """Store `HISTORY_VISITS` visits of `n_objects` DiaObjects (sources + forced sources), the last visit
    being the alert batch; compute the features; return the batch as pandas sees it."""
    rng = np.random.default_rng(seed)
    positions = field_positions(rng, n_objects, 150.0, 2.2, 1.75)
    ids = np.arange(1, n_objects + 1, dtype=np.int64) + 10_000_000
    sources = pd.DataFrame()
    objects = pd.DataFrame()
    for k in range(HISTORY_VISITS):
        visit = 7000 + k
        mjd = FIRST_MJD + 3.0 * k + rng.uniform(0, 0.5)
        objects = make_objects(rng, ids, positions, mjd)
        sources = make_sources(rng, objects, visit, 42, mjd, first_id=visit * 1_000_000)
        forced = make_forced(objects, visit, 42, mjd + 1e-4, first_id=visit * 1_000_000)
        apdb.store(tai(mjd), objects, sources, forced)
    update_features(conninfo, int(sources["visit"].iloc[0]))
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT dia_object_id, n_points, amplitude, slope, periodogram_period, periodogram_power, "
            "colour_g_r, mean_flux FROM minibroker.feature"
        ).fetchall()
    columns = ["dia_object_id", "n_points", "amplitude", "slope", "periodogram_period",
               "periodogram_power", "colour_g_r", "mean_flux"]  # fmt: skip
    features = pd.DataFrame(rows, columns=columns).astype({c: float for c in columns[2:]})
    return Batch(int(sources["visit"].iloc[0]), sources, features, objects)


def add_users(conninfo: str, names: list[str]) -> dict[str, str]:
    """Users with a minibroker token each: name -> token."""
    import sqlalchemy as sa

    engine = sa.create_engine(conninfo.replace("postgresql://", "postgresql+psycopg://", 1))
    tokens = {}
    with engine.begin() as conn:
        for name in names:
            add_user(conn, name)
            tokens[name] = issue_token(conn, name, ["minibroker"])[1]
    engine.dispose()
    return tokens
