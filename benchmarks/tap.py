"""TAP over HTTP against the same query through the query engine directly, and under 100 concurrent clients.

Usage: python benchmarks/tap.py [--rows 200000] [--requests 200] [--clients 100] [--duration 60]

Creates a throw-away embedded deployment, loads a synthetic catalog with `dms load` (cat.obj, partitioned
on HEALPix, published in TAP_SCHEMA by the load), starts `dms serve` in a subprocess, and prints:
  1. a sync TAP cone query (TOP 100 rows in a 0.1 deg cone) over HTTP: p50 / p95 latency;
  2. the same ADQL through the query engine `dms query` uses, in-process: p50 / p95, and the HTTP overhead;
  3. CLIENTS concurrent clients issuing random small cone queries for DURATION seconds: throughput,
     p95 and errors (target: p95 < 1 s, zero errors).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dms import migrate
from dms.deployment import Deployment
from dms.loaders.catalog import TableOptions, load_files
from dms.query.engine import QueryEngine

ROOT = Path(__file__).resolve().parents[1]
QUERY = (
    "SELECT TOP 100 id, ra, dec, mag FROM cat.obj "
    "WHERE CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', {ra:.4f}, {dec:.4f}, 0.1)) = 1"
)


def load(deployment: Deployment, rows: int, directory: Path) -> None:
    rng = np.random.default_rng(1)
    ra, dec, mag = rng.uniform(0, 20, rows), rng.uniform(-10, 10, rows), rng.uniform(12, 24, rows)
    table = pa.table(
        {
            "id": np.arange(1, rows + 1),
            "ra": ra,
            "dec": dec,
            "mag": mag,
            "name": [f"star {i + 1}" for i in range(rows)],
        }
    )
    path = directory / "obj.parquet"
    pq.write_table(table, path)
    load_files(
        deployment,
        "obj",
        [path],
        create=TableOptions(ra="ra", dec="dec", id="id", chunk_order=5),
        progress=False,
    )


def percentiles(samples: list[float]) -> tuple[float, float]:
    return float(np.percentile(samples, 50)), float(np.percentile(samples, 95))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def random_query(rng: np.random.Generator) -> str:
    return QUERY.format(ra=rng.uniform(1, 19), dec=rng.uniform(-9, 9))


async def crowd(url: str, clients: int, duration: float) -> tuple[int, list[float], int]:
    latencies: list[float] = []
    errors = 0
    stop = time.monotonic() + duration
    limits = httpx.Limits(max_connections=clients)

    async def client(seed: int) -> None:
        nonlocal errors
        rng = np.random.default_rng(seed)
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            while time.monotonic() < stop:
                started = time.monotonic()
                try:
                    response = await http.get(url, params={"LANG": "ADQL", "QUERY": random_query(rng)})
                    if response.status_code != 200 or b'value="OK"' not in response.content:
                        errors += 1
                except httpx.HTTPError:
                    errors += 1
                latencies.append(time.monotonic() - started)

    await asyncio.gather(*(client(i) for i in range(clients)))
    return len(latencies), latencies, errors


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--duration", type=float, default=60.0)
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="dms-bench-tap-"))
    deployment = Deployment.create(data_dir)
    migrate.upgrade(deployment)
    load(deployment, args.rows, data_dir)
    port = free_port()
    env = {**os.environ, "DMS_DATA_DIR": str(data_dir)}
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "dms"), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(f"{base}/tap/availability", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        rng = np.random.default_rng(7)
        sync_url = f"{base}/tap/sync"
        http_times = []
        with httpx.Client(timeout=30) as http:
            for _ in range(args.requests):
                started = time.monotonic()
                http.get(sync_url, params={"LANG": "ADQL", "QUERY": random_query(rng)}).raise_for_status()
                http_times.append(time.monotonic() - started)
        executor = QueryEngine(deployment)
        rng = np.random.default_rng(7)
        direct_times = []
        for _ in range(args.requests):
            started = time.monotonic()
            executor.execute(random_query(rng), lang="adql", max_rows=100_000, timeout=30)
            direct_times.append(time.monotonic() - started)
        h50, h95 = percentiles(http_times)
        d50, d95 = percentiles(direct_times)
        print(
            f"catalog: {args.rows:,} rows; query: TOP 100 in a 0.1 deg cone; "
            f"{args.requests} sequential requests"
        )
        print(f"  TAP sync over HTTP : p50 {h50 * 1000:7.1f} ms   p95 {h95 * 1000:7.1f} ms")
        print(f"  query engine       : p50 {d50 * 1000:7.1f} ms   p95 {d95 * 1000:7.1f} ms")
        print(f"  HTTP / engine      : p50 x{h50 / d50:.2f}   p95 x{h95 / d95:.2f}")
        count, latencies, errors = asyncio.run(crowd(sync_url, args.clients, args.duration))
        c50, c95 = percentiles(latencies)
        print(f"{args.clients} concurrent clients for {args.duration:g} s:")
        print(
            f"  {count:,} queries, {count / args.duration:.1f} queries/s, p50 {c50 * 1000:.0f} ms, "
            f"p95 {c95 * 1000:.0f} ms, errors {errors}"
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
        deployment.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
