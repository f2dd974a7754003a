"""Footprint searches on an ObsCore-like table of LSSTCam detector footprints (issue 17): DMS's region
column (HEALPix coverage, then the exact ``adql_intersects``) against pgSphere's spoly with a GiST index, on
the same PostgreSQL, same rows, same circles; results are checked equal.

Usage: python benchmarks/regions.py [--visits 100] [--queries 200] [--radius 0.2] [--exact-sample 5]
                                   [--database-url URL]

Needs PostgreSQL with pgSphere (Debian `postgresql-15-pgsphere`) at 127.0.0.1:5432 (user postgres, trust
auth); creates and drops the database `dmsbench_regions`. Prints per-query p50 / mean in ms and the ratio
of each method to pgSphere (>1: slower than pgSphere):
  1. DMS as the ADQL translation writes it (the coverage test inside the 1/0 result);
  2. DMS with the coverage test as a top-level condition (``s_region_moc && cells``, GIN-indexable);
  3. the exact test alone (no coverage);
  4. pgSphere ``spoly && scircle`` (GiST);
  5. the centre + half field of view match SIA used before (not exact: its extra rows are counted).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import psycopg

from dms.query import regions
from dms.query.adql import translate
from dms.udfs import install_postgres

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from catalog_peers import install_pgsphere
from regions_support import stcs_polygon, visit_footprints

DATABASE = "dmsbench_regions"
EXACT = "exact test only"


def build(conn: psycopg.Connection, visits: int) -> None:
    rng = np.random.default_rng(3)
    install_pgsphere(conn)
    install_postgres(conn)
    conn.execute(
        "CREATE TABLE obscore (obs_id text, s_ra float8, s_dec float8, s_fov float8, s_region text, "
        "s_region_shape float8[], s_region_moc bigint[], footprint spoly)"
    )
    rows = []
    for v in range(visits):
        ra, dec, rotation = rng.uniform(100, 110), rng.uniform(-5, 5), rng.uniform(0, 360)
        for d, vertices in enumerate(visit_footprints(ra, dec, rotation)):
            text = stcs_polygon(vertices)
            values = regions.column_values(text)
            lon, lat = np.array(vertices[0::2]), np.array(vertices[1::2])
            half = float(
                np.max(np.hypot((lon - lon.mean()) * np.cos(np.radians(lat.mean())), lat - lat.mean()))
            )
            spoly = "{" + ",".join(f"({a}d,{b}d)" for a, b in zip(lon, lat, strict=True)) + "}"
            rows.append(
                (
                    f"v{v}d{d}",
                    float(lon.mean()),
                    float(lat.mean()),
                    2 * float(half),
                    text,
                    values["s_region_shape"],
                    values["s_region_moc"],
                    spoly,
                )
            )
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO obscore VALUES (%s, %s, %s, %s, %s, %s, %s, %s::spoly)", rows)
    conn.execute("CREATE INDEX ON obscore USING gin (s_region_moc)")
    conn.execute("CREATE INDEX ON obscore USING gist (footprint)")
    conn.execute("ANALYZE obscore")


def methods(ra: float, dec: float, radius: float) -> dict[str, str]:
    adql = f"SELECT obs_id FROM obscore WHERE INTERSECTS(CIRCLE({ra!r}, {dec!r}, {radius!r}), s_region) = 1"
    translated = translate(adql, "postgres", strict=False)
    cells = ", ".join(str(c) for c in regions.coverage([ra, dec, radius]))
    exact = f"adql_intersects(ARRAY[{ra!r}, {dec!r}, {radius!r}]::float8[], s_region_shape) = 1"
    return {
        "DMS (as translated)": translated,
        "DMS (coverage top-level)": (
            f"SELECT obs_id FROM obscore WHERE s_region_moc && ARRAY[{cells}]::bigint[] AND {exact}"
        ),
        EXACT: f"SELECT obs_id FROM obscore WHERE {exact}",
        "pgSphere spoly && scircle": (
            "SELECT obs_id FROM obscore WHERE footprint && "
            f"scircle(spoint(radians({ra!r}), radians({dec!r})), radians({radius!r}))"
        ),
        "centre + s_fov/2 (old SIA)": (
            f"SELECT obs_id FROM obscore WHERE degrees(spoint(radians(s_ra), radians(s_dec)) <-> "
            f"spoint(radians({ra!r}), radians({dec!r}))) <= {radius!r} + s_fov / 2"
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--visits", type=int, default=100, help="LSSTCam visits (189 footprints each)")
    parser.add_argument("--queries", type=int, default=200, help="circle searches per method")
    parser.add_argument("--radius", type=float, default=0.2, help="search radius, degrees")
    parser.add_argument("--exact-sample", type=int, default=5, help="searches run with the exact test alone")
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    admin_url = args.database_url
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        admin.execute(f"CREATE DATABASE {DATABASE}")
    url = re.sub(r"/[^/]*$", f"/{DATABASE}", admin_url)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            started = time.perf_counter()
            build(conn, args.visits)
            print(f"{args.visits * 189} footprints loaded in {time.perf_counter() - started:.1f} s")
            rng = np.random.default_rng(4)
            centres = [(rng.uniform(100, 110), rng.uniform(-5, 5)) for _ in range(args.queries)]
            timings: dict[str, list[float]] = {}
            answers: dict[str, list[set[str]]] = {}
            for index, (ra, dec) in enumerate(centres):
                for name, sql in methods(ra, dec, args.radius).items():
                    if name == EXACT and index >= args.exact_sample:
                        continue  # a full scan of exact tests: a few suffice
                    begin = time.perf_counter()
                    found = {r[0] for r in conn.execute(sql)}
                    timings.setdefault(name, []).append((time.perf_counter() - begin) * 1000)
                    answers.setdefault(name, []).append(found)
        peer = "pgSphere spoly && scircle"
        peer_mean = statistics.mean(timings[peer])
        print(
            f"{args.queries} circle searches of radius {args.radius} deg "
            f"({EXACT}: the first {args.exact_sample})"
        )
        print(f"{'method':<28} {'p50 ms':>8} {'mean ms':>8} {'/pgSphere':>9} {'rows':>7} {'differ':>7}")
        for name, values in timings.items():
            differ = sum(a != b for a, b in zip(answers[name], answers[peer], strict=False))
            rows = sum(len(a) for a in answers[name])
            print(
                f"{name:<28} {statistics.median(values):8.2f} {statistics.mean(values):8.2f} "
                f"{statistics.mean(values) / peer_mean:9.2f} {rows:7d} {differ:7d}"
            )
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


if __name__ == "__main__":
    main()
