"""A large control-database result through TAP sync: peak memory and time of the server's side (issue 17).

Creates a deployment on the PostgreSQL at 127.0.0.1:5432 (database ``dmsbench_stream``, dropped at the end)
whose published table survey.obj holds ROWS rows (the VO tests' table, filled with generate_series), then,
for each format, in a fresh process: runs ``TapService.run`` on ``SELECT * FROM survey.obj`` with
MAXREC = ROWS and writes the body to /dev/null, reporting the peak resident memory above that of the same
process after a one-row query, and the time. Give ``--tree`` to measure another source tree (e.g. an
export of main, for the figures before the change):

    .venv/bin/python benchmarks/tap_stream.py [--rows 1000000] [--formats votable,csv] [--tree DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
DATABASE = "dmsbench_stream"


def measure(data_dir: str, rows: int, fmt: str) -> dict[str, float]:
    """In this (fresh) process: the peak RSS a one-row query leaves, then that of the whole result."""
    from dms.deployment import Deployment
    from dms.services.vo.executor import make_executor
    from dms.services.vo.http import Context, Params
    from dms.services.vo.tap import TapService

    deployment = Deployment.open(Path(data_dir))
    service = TapService(Context(deployment, make_executor(deployment)))

    def run(query: str, maxrec: int) -> int:
        params = Params(
            {"LANG": ["ADQL"], "QUERY": [query], "RESPONSEFORMAT": [fmt], "MAXREC": [str(maxrec)]}
        )
        body, _, _, _ = service.run(params, None, 3600)
        written = 0
        with open(os.devnull, "wb") as sink:
            for piece in body:
                sink.write(piece)
                written += len(piece)
        return written

    run("SELECT * FROM survey.obj WHERE id = 1", 10)
    floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    written = run("SELECT * FROM survey.obj", rows)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    deployment.dispose()
    return {"added_mb": peak - floor, "peak_mb": peak, "seconds": seconds, "mb_written": written / 1e6}


def prepare(data_dir: Path, rows: int) -> None:
    import sqlalchemy as sa
    from felis.datamodel import Schema

    from dms import migrate
    from dms.deployment import Deployment
    from dms.services.vo.tap_schema import sync

    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    url = f"postgresql://postgres@127.0.0.1:5432/{DATABASE}"
    deployment = Deployment.create(data_dir, database_url=url)
    migrate.upgrade(deployment)
    with deployment.engine().begin() as conn:
        conn.execute(sa.text("CREATE SCHEMA survey"))
        conn.execute(
            sa.text(
                "CREATE TABLE survey.obj (id bigint PRIMARY KEY, ra double precision, dec double precision, "
                "mag double precision, name varchar(64))"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO survey.obj SELECT g, random() * 360, random() * 180 - 90, "
                "CASE WHEN random() < 0.1 THEN NULL ELSE 12 + random() * 12 END, 'star ' || g "
                "FROM generate_series(1, :rows) AS g"
            ),
            {"rows": rows},
        )
        schema = Schema.from_uri(
            str(ROOT / "tests" / "data" / "vo_catalog.yaml"), context={"id_generation": True}
        )
        sync(conn, extra=[schema])
    deployment.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--formats", default="votable,votable/b2,csv,json,parquet")
    parser.add_argument("--tree", type=Path, action="append", help="source tree to measure (repeatable)")
    parser.add_argument("--measure", nargs=3, metavar=("DATA_DIR", "ROWS", "FORMAT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], int(args.measure[1]), args.measure[2])))
        return
    trees = args.tree or [ROOT]
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "dep"
        prepare(data_dir, args.rows)
        try:
            print(f"{args.rows:,} rows of survey.obj through TAP sync (MAXREC = rows), server side only")
            print(f"{'tree':<28} {'format':<11} {'added MB':>9} {'peak MB':>8} {'s':>7} {'MB out':>7}")
            for fmt in args.formats.split(","):
                for tree in trees:
                    env = {**os.environ, "PYTHONPATH": str(tree)}
                    out = subprocess.run(
                        [sys.executable, __file__, "--measure", str(data_dir), str(args.rows), fmt],
                        capture_output=True,
                        text=True,
                        env=env,
                        cwd=tree,
                        check=True,
                    )
                    r = json.loads(out.stdout.strip().splitlines()[-1])
                    print(
                        f"{str(tree)[-28:]:<28} {fmt:<11} {r['added_mb']:>9.0f} {r['peak_mb']:>8.0f} "
                        f"{r['seconds']:>7.1f} {r['mb_written']:>7.0f}"
                    )
        finally:
            with psycopg.connect(ADMIN, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE))
                )


if __name__ == "__main__":
    main()
