"""TAP under load: `dms serve` with one and with N worker processes, side by side (issue 16).

Usage: python benchmarks/tap.py [--rows 200000] [--requests 200] [--clients 100] [--duration 60]
                                [--workers 1,2]

Creates a throw-away embedded deployment, loads a synthetic catalog with `dms load` (cat.obj, partitioned
on HEALPix, published in TAP_SCHEMA by the load), and for each worker count starts `dms serve --workers W` in
a subprocess and prints:
  1. sequential latency (p50 / p95) of a one-row TAP sync query (an id lookup), a TAP sync cone query (TOP
     100 rows in a 0.1 deg cone) and /tap/capabilities (the HTTP floor: no database, no query);
  2. CLIENTS concurrent clients issuing random cone queries for DURATION seconds: queries/s, p50 / p95 and
     errors, against the targets (zero errors, p95 <= 250 ms, >= 300 queries/s) and the LSST requirement
     (10 s), with the server's and the load generator's CPU time per query (both share this machine);
then the same cone ADQL through the query engine in-process (what `dms query` runs), for the HTTP overhead.
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
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dms import migrate
from dms.deployment import Deployment
from dms.loaders.catalog import TableOptions, load_files
from dms.query.engine import QueryEngine
from dms.services.vo.server import default_workers

ROOT = Path(__file__).resolve().parents[1]
QUERY = (
    "SELECT TOP 100 id, ra, dec, mag FROM cat.obj "
    "WHERE CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', {ra:.4f}, {dec:.4f}, 0.1)) = 1"
)
ONE_ROW = "SELECT id, ra, dec, mag FROM cat.obj WHERE id = {id}"
TARGET_P95 = 0.250  # seconds
TARGET_RATE = 300.0  # queries/s
LSST_LATENCY = 10.0  # seconds: LSST's requirement for a simple catalog query (LDM-555 / LSE-61)
TICKS = os.sysconf("SC_CLK_TCK")


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


def process_tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its children (the workers), from /proc."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[1] is the parent pid; fields[11], fields[12] are utime and stime in clock ticks
        if int(entry.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


@dataclass
class Crowd:
    workers: int
    clients: int
    duration: float
    count: int
    errors: Counter[str]
    p50: float
    p95: float
    server_cpu: float
    client_cpu: float

    @property
    def rate(self) -> float:
        return self.count / self.duration


async def crowd(url: str, clients: int, duration: float) -> tuple[int, list[float], Counter[str]]:
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    stop = time.monotonic() + duration
    limits = httpx.Limits(max_connections=clients)

    async def client(seed: int) -> None:
        rng = np.random.default_rng(seed)
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            while time.monotonic() < stop:
                started = time.monotonic()
                try:
                    response = await http.get(url, params={"LANG": "ADQL", "QUERY": random_query(rng)})
                    if response.status_code != 200 or b'value="OK"' not in response.content:
                        errors[f"HTTP {response.status_code}"] += 1
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] += 1
                latencies.append(time.monotonic() - started)

    await asyncio.gather(*(client(i) for i in range(clients)))
    return len(latencies), latencies, errors


def sequential(http: httpx.Client, url: str, queries: list[str | None]) -> list[float]:
    times = []
    for query in queries:
        started = time.monotonic()
        params = {"LANG": "ADQL", "QUERY": query} if query is not None else None
        http.get(url, params=params).raise_for_status()
        times.append(time.monotonic() - started)
    return times


def start_server(data_dir: Path, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "DMS_DATA_DIR": str(data_dir)}
    command = [str(Path(sys.executable).parent / "dms"), "serve", "--port", str(port)]
    server = subprocess.Popen([*command, "--workers", str(workers)], env=env, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(f"{base}/tap/availability", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.2)
    # every worker must have started (a request that lands on one still starting only waits, but would
    # count as load-time latency): warm all of them with a burst of parallel requests
    asyncio.run(warm(f"{base}/tap/sync", 4 * workers))
    return server, base


async def warm(url: str, requests: int) -> None:
    rng = np.random.default_rng(99)
    async with httpx.AsyncClient(timeout=60) as http:
        for _ in range(3):
            await asyncio.gather(
                *(http.get(url, params={"LANG": "ADQL", "QUERY": random_query(rng)}) for _ in range(requests))
            )


def run_workers(data_dir: Path, workers: int, args: argparse.Namespace, rows: int) -> Crowd:
    server, base = start_server(data_dir, workers)
    try:
        rng = np.random.default_rng(7)
        sync_url = f"{base}/tap/sync"
        with httpx.Client(timeout=30) as http:
            one = sequential(
                http, sync_url, [ONE_ROW.format(id=rng.integers(1, rows)) for _ in range(args.requests)]
            )
            cone = sequential(http, sync_url, [random_query(rng) for _ in range(args.requests)])
            floor = sequential(http, f"{base}/tap/capabilities", [None] * args.requests)
        print(f"dms serve --workers {workers}: {args.requests} sequential requests each")
        for label, times in (("one-row query", one), ("cone TOP 100", cone), ("/tap/capabilities", floor)):
            p50, p95 = percentiles(times)
            print(f"  {label:18s}: p50 {p50 * 1000:7.1f} ms   p95 {p95 * 1000:7.1f} ms")
        server_cpu, client_cpu = process_tree_cpu(server.pid), time.process_time()
        count, latencies, errors = asyncio.run(crowd(sync_url, args.clients, args.duration))
        server_cpu = process_tree_cpu(server.pid) - server_cpu
        client_cpu = time.process_time() - client_cpu
        c50, c95 = percentiles(latencies)
        result = Crowd(workers, args.clients, args.duration, count, errors, c50, c95, server_cpu, client_cpu)
        per_query = 1000 / max(count, 1)
        print(
            f"  {args.clients} clients for {args.duration:g} s: {count:,} queries, {result.rate:.1f} "
            f"queries/s, p50 {c50 * 1000:.0f} ms, p95 {c95 * 1000:.0f} ms, errors {errors.total()} "
            f"{dict(errors) or ''}; CPU per query: "
            f"server {server_cpu * per_query:.1f} ms, load generator {client_cpu * per_query:.1f} ms"
        )
        return result
    finally:
        server.terminate()
        server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument(
        "--workers", default=f"1,{default_workers()}", help="worker counts to compare, comma-separated"
    )
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]

    data_dir = Path(tempfile.mkdtemp(prefix="dms-bench-tap-"))
    deployment = Deployment.create(data_dir)
    try:
        migrate.upgrade(deployment)
        load(deployment, args.rows, data_dir)
        print(
            f"catalog: {args.rows:,} rows; cone: TOP 100 in a 0.1 deg cone; "
            f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start"
        )
        crowds = [run_workers(data_dir, w, args, args.rows) for w in counts]
        engine = QueryEngine(deployment)
        rng = np.random.default_rng(7)
        direct = []
        for _ in range(args.requests):
            started = time.monotonic()
            engine.execute(random_query(rng), lang="adql", max_rows=100_000, timeout=30)
            direct.append(time.monotonic() - started)
        d50, d95 = percentiles(direct)
        print(f"query engine in-process (cone TOP 100): p50 {d50 * 1000:.1f} ms   p95 {d95 * 1000:.1f} ms")
        print(
            f"summary ({args.clients} clients, {args.duration:g} s; "
            "target: 0 errors, p95 <= 250 ms, >= 300 q/s):"
        )
        print("  workers  queries/s  x target  p95 ms  x target  x LSST 10 s  errors  vs 1 worker")
        first = crowds[0]
        for c in crowds:
            print(
                f"  {c.workers:7d}  {c.rate:9.1f}  {c.rate / TARGET_RATE:8.2f}  {c.p95 * 1000:6.0f}  "
                f"{c.p95 / TARGET_P95:8.2f}  {c.p95 / LSST_LATENCY:11.3f}  {c.errors.total():6d}  "
                f"x{c.rate / first.rate:.2f} q/s"
            )
        print(f"  finished with load average {os.getloadavg()[0]:.1f}")
    finally:
        deployment.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
