"""APDB per-visit cost, DMS against lsst-dax-apdb's SQL backend on the same PostgreSQL with the same visits.

Usage: python benchmarks/apdb.py [--history 1000 10000 100000] [--visits 5] [--database-url URL]

For each history size H, both APDBs are filled with H DiaObjects (and one DiaSource and one forced source
each): up to --field-objects (default 10,000, a dense LSST field) in a 1.75-degree field, the rest on the sky
around it. Then the same V visits run on both, each exactly as Alert Production calls the APDB: read the
field's DiaObjects, their DiaSources and DiaForcedSources of the last 12 months, then store new versions of
the objects seen (30% of the field plus 2% new ones), their DiaSources and a forced source for every object of
the field. Prints the mean per-visit read, store and total times, the ratio (>1: DMS is faster), and checks
that both return the same objects and sources. lsst-dax-apdb runs with `dia_object_index =
"last_object_table"` (the mode Rubin's prompt processing configures) and with its default ("baseline").

Needs `pip install lsst-dax-apdb` (the `bench` extra). Uses the PostgreSQL at --database-url (default: the
machine's 127.0.0.1:5432 if it answers, else a throw-away pgserver) and creates and drops its databases.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from apdb_support import field_positions, make_forced, make_objects, make_sources, tai  # noqa: E402

from dms import migrate  # noqa: E402
from dms.deployment import Deployment  # noqa: E402
from dms.services.apdb import Apdb, Circle  # noqa: E402

RA0, DEC0, FIELD = 150.1, 2.2, 1.75  # COSMOS
MJD0 = 60_800.1


@contextmanager
def postgres(url: str | None) -> Iterator[str]:
    """An admin libpq URL of a PostgreSQL server."""
    if url:
        yield url
        return
    try:
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", connect_timeout=2):
            pass
        yield "postgresql://postgres@127.0.0.1:5432/postgres"
        return
    except psycopg.OperationalError:
        pass
    import pgserver

    with tempfile.TemporaryDirectory(prefix="apdbbench-") as tmp:
        server = pgserver.get_server(tmp, cleanup_mode="stop")
        yield server.get_uri()


@contextmanager
def database(admin: str) -> Iterator[str]:
    name = f"apdbbench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Visits:
    """The same history and visits for every APDB (seeded)."""

    def __init__(self, history: int, field_objects: int) -> None:
        rng = np.random.default_rng(history)
        self.rng = rng
        inside = min(history, field_objects)
        # the field's objects, and the rest of the history on the sky around it (3 to 15 degrees away)
        positions = np.concatenate(
            [field_positions(rng, inside, RA0, DEC0, FIELD), _annulus(rng, history - inside, 3.0, 15.0)]
        )
        self.objects = make_objects(rng, np.arange(1, history + 1), positions, MJD0 - 30)
        self.next_object = history + 1
        self.next_source = 1
        self.sources = self._sources(self.objects, visit=1, mjd=MJD0 - 30)
        self.forced = self._forced(self.objects, visit=1, mjd=MJD0 - 30)

    def _sources(self, objects: pd.DataFrame, visit: int, mjd: float) -> pd.DataFrame:
        frame = make_sources(self.rng, objects, visit=visit, detector=94, mjd=mjd, first_id=self.next_source)
        self.next_source += len(frame)
        return frame

    def _forced(self, objects: pd.DataFrame, visit: int, mjd: float) -> pd.DataFrame:
        frame = make_forced(objects, visit=visit, detector=94, mjd=mjd, first_id=self.next_source)
        self.next_source += len(frame)
        return frame

    def visit(self, k: int, field_ids: set[int]) -> tuple[float, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """Visit k over the objects `field_ids` (what the APDB returned for the field): (MJD, objects to
        store, their sources, forced sources of every object of the field). Object values come from this
        generator's own record, as Alert Production recomputes them from the source history."""
        mjd = MJD0 + k
        current = self.objects[self.objects["diaObjectId"].isin(field_ids)]
        updated = current.sample(frac=0.3, random_state=k).copy()
        updated["nDiaSources"] = (updated["nDiaSources"] + 1).astype(np.int32)
        updated["lastDiaSourceMjdTai"] = mjd
        n_new = max(1, len(current) // 50)
        new = make_objects(
            self.rng,
            np.arange(self.next_object, self.next_object + n_new),
            field_positions(self.rng, n_new, RA0, DEC0, FIELD * 0.95),
            mjd,
        )
        self.next_object += n_new
        stored = pd.concat([updated, new], ignore_index=True)
        self.objects = pd.concat(
            [self.objects[~self.objects["diaObjectId"].isin(stored["diaObjectId"])], stored],
            ignore_index=True,
        )
        visit = 1000 + k
        return mjd, stored, self._sources(stored, visit, mjd), self._forced(current, visit, mjd)


def _annulus(rng: np.random.Generator, n: int, inner: float, outer: float) -> np.ndarray:
    points = field_positions(rng, 4 * n + 16, RA0, DEC0, outer)
    far = ~Circle(RA0, DEC0, inner).contains(points[:, 0], points[:, 1])
    return points[far][:n]


class DmsPeer:
    name = "DMS"

    def __init__(self, url: str, tmp: Path) -> None:
        self.deployment = Deployment.create(tmp / f"dep-{uuid.uuid4().hex[:6]}", database_url=url)
        migrate.upgrade(self.deployment)
        self.apdb = Apdb.from_deployment(self.deployment)
        self.region = Circle(RA0, DEC0, FIELD)

    def read(self, mjd: float) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        objects = self.apdb.get_dia_objects(self.region)
        ids = objects["diaObjectId"]
        sources = self.apdb.get_dia_sources(self.region, ids, tai(mjd))
        forced = self.apdb.get_dia_forced_sources(self.region, ids, tai(mjd))
        assert sources is not None and forced is not None
        return objects, sources, forced

    def store(self, mjd: float, objects: pd.DataFrame, sources: pd.DataFrame, forced: pd.DataFrame) -> None:
        self.apdb.store(tai(mjd), objects, sources, forced)

    def close(self) -> None:
        self.apdb.close()
        self.deployment.dispose()


class DaxPeer:
    def __init__(self, url: str, index: str) -> None:
        from lsst.dax.apdb import Apdb as DaxApdb
        from lsst.dax.apdb.sql import ApdbSql
        from lsst.sphgeom import Angle, LonLat, UnitVector3d
        from lsst.sphgeom import Circle as SphCircle

        self.name = f"dax_apdb[{index}]"
        psycopg2_url = url.replace("postgresql://", "postgresql+psycopg2://")  # the driver Rubin runs it with
        config = ApdbSql.init_database(db_url=psycopg2_url, dia_object_index=index)
        self.apdb = DaxApdb.from_config(config)
        self.region = SphCircle(UnitVector3d(LonLat.fromDegrees(RA0, DEC0)), Angle.fromDegrees(FIELD))

    def read(self, mjd: float) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        objects = self.apdb.getDiaObjects(self.region)
        ids = list(objects["diaObjectId"])
        sources = self.apdb.getDiaSources(self.region, ids, tai(mjd))
        forced = self.apdb.getDiaForcedSources(self.region, ids, tai(mjd))
        return objects, sources, forced

    def store(self, mjd: float, objects: pd.DataFrame, sources: pd.DataFrame, forced: pd.DataFrame) -> None:
        self.apdb.store(tai(mjd), objects, sources, forced)

    def close(self) -> None:
        pass


def in_field(frame: pd.DataFrame) -> set[int]:
    keep = Circle(RA0, DEC0, FIELD).contains(frame["ra"].to_numpy(), frame["dec"].to_numpy())
    return set(frame["diaObjectId"][keep].tolist())


def run_history(
    admin: str, history: int, field_objects: int, n_visits: int, peers: list[str], tmp: Path
) -> list[dict[str, Any]]:
    rows = []
    for peer_name in peers:
        visits = Visits(history, field_objects)
        with database(admin) as url:
            peer: DmsPeer | DaxPeer = DmsPeer(url, tmp) if peer_name == "dms" else DaxPeer(url, peer_name)
            started = time.perf_counter()
            peer.store(MJD0 - 30, visits.objects, visits.sources, visits.forced)
            fill = time.perf_counter() - started
            reads, stores, found = [], [], []
            for k in range(n_visits):
                started = time.perf_counter()
                objects, sources, forced = peer.read(MJD0 + k)
                reads.append(time.perf_counter() - started)
                # dax_apdb returns its pixel-cover superset for a region (callers trim it): compare inside
                found.append((in_field(objects), len(sources), len(forced)))
                mjd, new_objects, new_sources, new_forced = visits.visit(k, found[-1][0])
                started = time.perf_counter()
                peer.store(mjd, new_objects, new_sources, new_forced)
                stores.append(time.perf_counter() - started)
            peer.close()
        rows.append(
            {
                "history": history,
                "peer": peer.name,
                "fill_s": fill,
                "read_s": statistics.mean(reads),
                "store_s": statistics.mean(stores),
                "total_s": statistics.mean(r + s for r, s in zip(reads, stores, strict=True)),
                "found": found,
            }
        )
    return rows


def report(rows: list[dict[str, Any]]) -> None:
    header = ("history", "APDB", "read", "store", "visit", "DMS faster", "same rows")
    print("{:>8} {:<28} {:>9} {:>9} {:>9} {:>10} {:>9}".format(*header))
    for history in sorted({r["history"] for r in rows}):
        group = [r for r in rows if r["history"] == history]
        dms = next(r for r in group if r["peer"] == "DMS")
        for r in group:
            ratio = r["total_s"] / dms["total_s"]
            same = "-" if r is dms else ("yes" if r["found"] == dms["found"] else "NO")
            print(
                f"{history:>8} {r['peer']:<28} {r['read_s'] * 1e3:>7.1f}ms {r['store_s'] * 1e3:>7.1f}ms "
                f"{r['total_s'] * 1e3:>7.1f}ms {ratio:>9.2f}x {same:>9}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--visits", type=int, default=5)
    parser.add_argument(
        "--field-objects",
        type=int,
        default=10_000,
        help="DiaObjects in the visit's field (the rest lie outside)",
    )
    parser.add_argument("--database-url", help="admin libpq URL of the PostgreSQL to use")
    parser.add_argument(
        "--peers",
        nargs="+",
        default=["dms", "last_object_table", "baseline"],
        help="dms and dax_apdb index modes",
    )
    args = parser.parse_args()
    rows = []
    with postgres(args.database_url) as admin, tempfile.TemporaryDirectory(prefix="apdbbench-") as tmp:
        for history in args.history:
            rows += run_history(admin, history, args.field_objects, args.visits, args.peers, Path(tmp))
            report([r for r in rows if r["history"] == history])
    print()
    report(rows)


if __name__ == "__main__":
    main()
