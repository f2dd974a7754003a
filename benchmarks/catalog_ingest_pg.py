"""Ingest into PostgreSQL shards beside its peer, COPY BINARY into one table (issue 16), at 1M and 10M rows.

    python benchmarks/catalog_ingest_pg.py --rows 1000000 10000000 [--data DIR] [--json OUT] [--profile DIR]

Per size, the synthetic catalog of `catalog_scale.py` (the same file, reused when present) is loaded, each
step in its own process, into fresh databases on the machine's PostgreSQL (127.0.0.1:5432):
- peer: one plain table, the file's columns plus `_healpix_29` (healpy, nested order 29) and `_chunk` (its
  order-3 NUNIQ pixel), filled by `COPY ... FROM STDIN (FORMAT BINARY)` through psycopg's copy with its
  binary dumpers (`set_types`, `write_row`) from the file's pyarrow batches; then the indexes DMS builds on
  a shard, B-trees on the id, `_healpix_29` and `_chunk`, and ANALYZE; one transaction. Both the COPY
  alone and COPY + indexes + ANALYZE are timed.
- DMS: `dms load --create obj --storage postgres` into a deployment with two PostgreSQL shards (control
  database on the same server): chunk assignment, 60" overlap copies, COPY into each shard, and the
  indexes DMS builds on each shard (B-trees on `_healpix_29`, `_chunk` and the id) and ANALYZE.
Both sides run with the same `maintenance_work_mem` (the DMS shard sets it for its index builds).
Ratios: DMS / peer rate (>1: DMS is faster). `--profile DIR` writes a cProfile of the DMS step there.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import healpy
import numpy as np
import psycopg
import pyarrow.parquet as pq
from psycopg import sql

sys.path.insert(0, str(Path(__file__).parent))
from catalog_peers import pg_url, recreate_pg_database
from catalog_scale import generate, peak_mb

log = logging.getLogger("catalog_ingest_pg")
PEER_SQL_TYPES = {"int64": "bigint", "int32": "integer", "double": "double precision"}
PEER_INDEXES = ("_healpix_29", "_chunk", "id")
INDEX_MEMORY = "256MB"
"""maintenance_work_mem of both sides' index builds (DMS's `dms.shards.postgres.backend.INDEX_MEMORY`)."""


def step_peer(path: Path, rows: int) -> dict[str, Any]:
    """psycopg's binary COPY of the file's rows (plus `_healpix_29`) into one table, then its indexes."""
    url = recreate_pg_database(f"dmspeer_{rows}")
    source = pq.ParquetFile(path)
    schema = source.schema_arrow
    names = [*schema.names, "_healpix_29", "_chunk"]
    types = [PEER_SQL_TYPES[str(f.type)] for f in schema] + ["bigint", "bigint"]
    table = sql.Identifier("obj")
    columns = sql.SQL(", ").join(
        sql.SQL("{} {} NOT NULL").format(sql.Identifier(n), sql.SQL(t))
        for n, t in zip(names, types, strict=True)
    )
    started = time.perf_counter()
    with psycopg.connect(url) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} ({})").format(table, columns))
        copy_sql = sql.SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(table)
        with conn.cursor() as cur, cur.copy(copy_sql) as copy:
            copy.set_types(types)
            for batch in source.iter_batches(batch_size=100_000):
                h29 = healpy.ang2pix(
                    2**29, batch["ra"].to_numpy(), batch["dec"].to_numpy(), nest=True, lonlat=True
                ).astype(np.int64)
                chunk = 4 * 4**3 + (h29 >> (2 * (29 - 3)))
                values = [c.to_pylist() for c in batch.columns] + [h29.tolist(), chunk.tolist()]
                for row in zip(*values, strict=True):
                    copy.write_row(row)
        copied = time.perf_counter() - started
        conn.execute(sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(INDEX_MEMORY)))
        for column in PEER_INDEXES:
            conn.execute(sql.SQL("CREATE INDEX ON {} ({})").format(table, sql.Identifier(column)))
        conn.execute(sql.SQL("ANALYZE {}").format(table))
        conn.commit()
    seconds = time.perf_counter() - started
    return {
        "copy_seconds": copied,
        "copy_rows_s": rows / copied,
        "seconds": seconds,
        "rows_s": rows / seconds,
        "indexes": list(PEER_INDEXES),
        "peak_mb": peak_mb(),
    }


def _deployment(directory: Path, rows: int) -> Any:
    from dms import migrate
    from dms.config import ShardConfig
    from dms.deployment import Deployment

    shutil.rmtree(directory, ignore_errors=True)
    deployment = Deployment.create(directory, database_url=recreate_pg_database(f"dmsingestpg_{rows}"))
    for i in (1, 2):
        url = recreate_pg_database(f"dmsingestpg_{rows}_shard{i}")
        deployment.add_shard(ShardConfig(name=f"pg{i}", kind="postgres", url=url))
    migrate.upgrade(deployment)
    return deployment


def step_dms(path: Path, rows: int, directory: Path, profile: Path | None) -> dict[str, Any]:
    from dms.loaders.catalog import TableOptions, load_files

    deployment = _deployment(directory, rows)
    options = TableOptions(ra="ra", dec="dec", id="id", storage="postgres")
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    result = load_files(deployment, "obj", [path], create=options, progress=False)
    if profiler:
        profiler.disable()
    seconds = time.perf_counter() - started
    deployment.dispose()
    if profiler and profile:
        profile.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(profile / f"dms-load-pg-{rows}.prof")
    assert result.rows == rows
    return {
        "seconds": seconds,
        "rows_s": rows / seconds,
        "chunks": result.chunks,
        "overlap_rows": result.overlap_rows,
        "peak_mb": peak_mb(),
    }


def child(args: argparse.Namespace) -> None:
    path, directory = Path(args.file), Path(args.dir)
    if args.step == "generate":
        result = generate(path, args.n)
    elif args.step == "peer":
        result = step_peer(path, args.n)
    else:
        result = step_dms(path, args.n, directory, args.profile)
    print(json.dumps(result))


def run_step(step: str, rows: int, path: Path, directory: Path, profile: Path | None) -> dict[str, Any]:
    command = [sys.executable, __file__, "--step", step, "--n", str(rows), "--file", str(path)]
    command += ["--dir", str(directory)] + (["--profile", str(profile)] if profile else [])
    log.info("%s at %s rows", step, f"{rows:,}")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        log.error("%s failed: %s", step, done.stderr[-2000:])
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def drop_databases(rows: int) -> None:
    names = [f"dmspeer_{rows}", f"dmsingestpg_{rows}", *(f"dmsingestpg_{rows}_shard{i}" for i in (1, 2))]
    with psycopg.connect(pg_url("postgres"), autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--data", type=Path, default=Path("/tmp/dms-scale"), help="where data goes")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--profile", type=Path, help="write a cProfile of each DMS load here")
    parser.add_argument("--keep", action="store_true", help="keep the databases and the deployment")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.step:
        child(args)
        return 0
    results: dict[str, Any] = {}
    for rows in args.rows:
        base = args.data / f"rows-{rows}"
        base.mkdir(parents=True, exist_ok=True)
        path, directory = base / "obj.parquet", base / "deployment-pg"
        figures: dict[str, Any] = {"uptime_before": os.getloadavg()}
        figures["generate"] = run_step("generate", rows, path, directory, None)
        figures["peer"] = run_step("peer", rows, path, directory, None)
        figures["dms"] = run_step("dms", rows, path, directory, args.profile)
        figures["uptime_after"] = os.getloadavg()
        results[str(rows)] = figures
        print_size(rows, figures)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
            drop_databases(rows)
    return 0


def print_size(rows: int, f: dict[str, Any]) -> None:
    dms, peer = f["dms"], f["peer"]
    load = ", ".join(f"{x:.1f}" for x in f["uptime_before"])
    print(f"== {rows:,} rows (load average before: {load})")
    if "rows_s" in dms and "rows_s" in peer:
        print(
            f"DMS (2 PostgreSQL shards) {dms['rows_s'] / 1e6:.3f} Mrows/s ({dms['seconds']:.1f} s, "
            f"{dms['chunks']} chunks, {dms['overlap_rows']:,} overlap rows, peak {dms['peak_mb']:.0f} MB)"
        )
        print(
            f"peer COPY BINARY {peer['copy_rows_s'] / 1e6:.3f} Mrows/s ({peer['copy_seconds']:.1f} s); "
            f"with indexes + ANALYZE {peer['rows_s'] / 1e6:.3f} Mrows/s ({peer['seconds']:.1f} s, "
            f"peak {peer['peak_mb']:.0f} MB)"
        )
        print(
            f"ratio DMS / (COPY + indexes) {dms['rows_s'] / peer['rows_s']:.2f}x   "
            f"DMS / COPY alone {dms['rows_s'] / peer['copy_rows_s']:.2f}x"
        )
    else:
        print(f"DMS {dms}  peer {peer}")


if __name__ == "__main__":
    raise SystemExit(main())
