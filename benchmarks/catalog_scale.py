"""Scale run of the catalog on DuckDB shards (issue 16): ingest, a filtered count and a 10-column aggregate at
1M, 10M and 100M rows, each beside its peer in the same run, with each step's peak memory.

    python benchmarks/catalog_scale.py --rows 1000000 10000000 100000000 [--data DIR] [--json OUT]

Per size: the synthetic catalog of `catalog_data.py` is generated batch by batch (never whole in memory) into
one Parquet file; then, each step in its own process (so `ru_maxrss` is that step's peak):
- pyarrow: the file read and rewritten as Parquet (streamed, lz4), the peer of ingest;
- DMS: `dms load --create` of the file into a deployment with two DuckDB shards (control database on the
  machine's PostgreSQL);
- queries: the filtered count and 10-column aggregate of `catalog_peers.py` through the DMS engine, and by
  DuckDB over the very Parquet files the shards hold (overlap copies excluded), best of 3 warm runs.
Ratios: DMS / peer rate (>1: DMS is faster).
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from catalog_data import object_table
from catalog_peers import AGGREGATE, FILTER, pg_url, recreate_pg_database

log = logging.getLogger("catalog_scale")
BATCH = 2_000_000
SEED = 20261204


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """User + system CPU time of this process (all its threads): less sensitive than wall time to other
    processes sharing the cores."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def generate(path: Path, rows: int) -> dict[str, Any]:
    """The synthetic catalog, BATCH rows at a time, ids unique over the whole file."""
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists() and json.loads(meta.read_text()) == {"rows": rows, "seed": SEED}:
        return {"reused": True}
    started = time.perf_counter()
    writer = None
    for start in range(0, rows, BATCH):
        n = min(BATCH, rows - start)
        rng = np.random.default_rng([SEED, start])
        batch = object_table(rng, n)
        ids = (10_000_000_000 + start + rng.permutation(n)).astype(np.int64)
        batch = batch.set_column(0, "id", pa.array(ids))
        if writer is None:
            writer = pq.ParquetWriter(path, batch.schema, compression="snappy")
        writer.write_table(batch, row_group_size=1_000_000)
    assert writer is not None
    writer.close()
    meta.write_text(json.dumps({"rows": rows, "seed": SEED}))
    return {"seconds": time.perf_counter() - started, "peak_mb": peak_mb()}


def step_pyarrow(path: Path, rows: int) -> dict[str, Any]:
    """pyarrow reads the file and writes the same rows as Parquet (lz4, as the shards do), streamed."""
    out = path.with_name("pyarrow-copy.parquet")
    started, cpu = time.perf_counter(), cpu_seconds()
    source = pq.ParquetFile(path)
    with pq.ParquetWriter(out, source.schema_arrow, compression="lz4") as writer:
        for batch in source.iter_batches(batch_size=1_000_000):
            writer.write_batch(batch, row_group_size=16_384)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    out.unlink()
    return {"seconds": seconds, "rows_s": rows / seconds, "cpu_seconds": cpu, "peak_mb": peak_mb()}


def _deployment(directory: Path, rows: int, fresh: bool) -> Any:
    from dms import migrate
    from dms.config import ShardConfig
    from dms.deployment import Deployment

    if not fresh:
        return Deployment.open(directory)
    shutil.rmtree(directory, ignore_errors=True)
    deployment = Deployment.create(directory, database_url=recreate_pg_database(f"dmsscale_{rows}"))
    deployment.add_shard(ShardConfig(name="shard1", kind="duckdb", path="catalog/shard1.duckdb"))
    migrate.upgrade(deployment)
    return deployment


def step_ingest(path: Path, rows: int, directory: Path) -> dict[str, Any]:
    from dms.loaders.catalog import TableOptions, load_files

    deployment = _deployment(directory, rows, fresh=True)
    started, cpu = time.perf_counter(), cpu_seconds()
    result = load_files(
        deployment, "obj", [path], create=TableOptions(ra="ra", dec="dec", id="id"), progress=False
    )
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    started = time.perf_counter()
    again = load_files(deployment, "obj", [path], progress=False)
    repeat = time.perf_counter() - started
    deployment.dispose()
    assert result.rows == rows and again.skipped
    return {
        "seconds": seconds,
        "rows_s": rows / seconds,
        "cpu_seconds": cpu,
        "chunks": result.chunks,
        "overlap_rows": result.overlap_rows,
        "repeat_seconds": repeat,
        "peak_mb": peak_mb(),
    }


def step_queries(rows: int, directory: Path) -> dict[str, Any]:
    import duckdb

    from dms.deployment import Deployment
    from dms.query.engine import QueryEngine

    deployment = Deployment.open(directory)
    files = sorted(str(p) for p in (directory / "catalog").glob("shard*/cat/obj/load*/*.parquet"))
    duck = duckdb.connect()
    count_sql = f"SELECT COUNT(*) AS n FROM obj WHERE {FILTER}"
    agg_sql = f"SELECT {AGGREGATE} FROM obj"
    duck.read_parquet(files).filter("NOT _overlap").create_view("obj")
    out: dict[str, Any] = {"files": len(files)}
    with QueryEngine(deployment) as engine:
        for label, sql in (("filtered_count", count_sql), ("aggregate", agg_sql)):
            dms_times, duck_times = [], []
            for _ in range(4):  # the first run warms the caches
                started = time.perf_counter()
                dms_answer = engine.execute(sql.replace("FROM obj", "FROM cat.obj"), timeout=3600).table
                dms_times.append(time.perf_counter() - started)
                started = time.perf_counter()
                duck_answer = duck.execute(sql).fetchall()
                duck_times.append(time.perf_counter() - started)
            got = [dms_answer.column(i)[0].as_py() for i in range(dms_answer.num_columns)]
            agree = bool(np.allclose(np.array(got, float), np.array(duck_answer[0], float), rtol=1e-9))
            out[label] = {
                "dms_s": min(dms_times[1:]),
                "duckdb_s": min(duck_times[1:]),
                "dms_rows_s": rows / min(dms_times[1:]),
                "duckdb_rows_s": rows / min(duck_times[1:]),
                "ratio": min(duck_times[1:]) / min(dms_times[1:]),
                "agree": agree,
            }
    deployment.dispose()
    out["peak_mb"] = peak_mb()
    return out


def child(args: argparse.Namespace) -> None:
    path, directory = Path(args.file), Path(args.dir)
    if args.step == "generate":
        result = generate(path, args.n)
    elif args.step == "pyarrow":
        result = step_pyarrow(path, args.n)
    elif args.step == "ingest":
        result = step_ingest(path, args.n, directory)
    else:
        result = step_queries(args.n, directory)
    print(json.dumps(result))


def run_step(step: str, rows: int, path: Path, directory: Path) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--step",
        step,
        "--n",
        str(rows),
        "--file",
        str(path),
        "--dir",
        str(directory),
    ]
    log.info("%s at %s rows", step, f"{rows:,}")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        log.error("%s failed: %s", step, done.stderr[-2000:])
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument(
        "--data", type=Path, default=Path("/tmp/dms-scale"), help="where data and deployments go"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep each size's deployment and file")
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
        path, directory = base / "obj.parquet", base / "deployment"
        figures = {"generate": run_step("generate", rows, path, directory)}
        figures["file_mb"] = path.stat().st_size / 2**20 if path.exists() else None
        figures["pyarrow"] = run_step("pyarrow", rows, path, directory)
        figures["ingest"] = run_step("ingest", rows, path, directory)
        if "error" not in figures["ingest"]:
            figures["queries"] = run_step("queries", rows, path, directory)
            figures["shard_mb"] = sum(p.stat().st_size for p in directory.rglob("*.parquet")) / 2**20
        results[str(rows)] = figures
        print_size(rows, figures)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
            with __import__("psycopg").connect(pg_url("postgres"), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "dmsscale_{rows}" WITH (FORCE)')
    return 0


def print_size(rows: int, f: dict[str, Any]) -> None:
    ingest, peer = f["ingest"], f["pyarrow"]
    print(f"== {rows:,} rows")
    if "rows_s" in ingest and "rows_s" in peer:
        print(
            f"ingest    DMS {ingest['rows_s'] / 1e6:.2f} Mrows/s ({ingest['seconds']:.1f} s, peak "
            f"{ingest['peak_mb']:.0f} MB)  pyarrow {peer['rows_s'] / 1e6:.2f} Mrows/s "
            f"(peak {peer['peak_mb']:.0f} MB)  ratio {ingest['rows_s'] / peer['rows_s']:.2f}x  "
            f"repeat load {ingest['repeat_seconds']:.2f} s"
        )
        if "cpu_seconds" in ingest and "cpu_seconds" in peer:
            print(
                f"ingest CPU DMS {ingest['cpu_seconds']:.1f} s  pyarrow {peer['cpu_seconds']:.1f} s  "
                f"ratio {peer['cpu_seconds'] / ingest['cpu_seconds']:.2f}x"
            )
    for label in ("filtered_count", "aggregate"):
        q = f.get("queries", {}).get(label)
        if q:
            print(
                f"{label:15s} DMS {q['dms_rows_s'] / 1e6:.1f} Mrows/s  "
                f"DuckDB {q['duckdb_rows_s'] / 1e6:.1f} Mrows/s  ratio {q['ratio']:.2f}x  agree={q['agree']}"
            )


if __name__ == "__main__":
    raise SystemExit(main())
