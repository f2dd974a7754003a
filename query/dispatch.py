"""Dispatch: run per-shard queries in parallel (a thread pool, or a Dask cluster) and the control queries.

Every shard query gets the time left before the query's deadline and watches its cancel event, so a
timeout or a user's cancel stops the work on every shard, not just the waiting.
"""

from __future__ import annotations

import functools
import time
from concurrent.futures import FIRST_EXCEPTION, Future, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pyarrow as pa
from sqlglot import exp

from dms.appname import application_name
from dms.query.errors import QueryCancelled, QueryError, QueryTimeout
from dms.shards import ShardBackend, ShardCancelled, ShardQueryError, ShardUnavailable
from dms.shards.postgres.transfer import PostgresConnection

if TYPE_CHECKING:
    from dms.deployment import Deployment
    from dms.query.engine import _Run
    from dms.query.validate import TableRef


def run_shard(store: ShardBackend, sql: str, shipped: dict[str, pa.Table], run: _Run) -> pa.Table:
    run.check()
    return store.execute(sql, timeout=run.remaining(), cancel=run.cancel, tables=shipped)


def _translate(exc: BaseException, run: _Run) -> QueryError:
    if isinstance(exc, ShardCancelled):
        if run.deadline is not None and time.monotonic() >= run.deadline - 0.01:
            return QueryTimeout("the query exceeded its timeout and was cancelled on every shard")
        if run.cancel.is_set():
            return QueryCancelled("the query was cancelled")
        return QueryTimeout(str(exc))
    if isinstance(exc, ShardQueryError | QueryError):
        return exc if isinstance(exc, QueryError) else QueryError(f"the query failed on {exc}")
    return QueryError(f"the query failed: {type(exc).__name__}: {exc}")


def gather(futures: dict[str, Future[pa.Table]], run: _Run) -> list[pa.Table]:
    done, pending = wait(futures.values(), timeout=run.remaining(), return_when=FIRST_EXCEPTION)
    failed = [f for f in done if f.exception() is not None]
    if failed or pending:
        run.cancel.set()
        for future in pending:
            future.cancel()
        wait(pending, timeout=5)
        if failed:
            exc = failed[0].exception()
            assert exc is not None
            raise _translate(exc, run) from exc
        raise QueryTimeout("the query exceeded its timeout and was cancelled on every shard")
    return [futures[name].result() for name in sorted(futures)]


def gather_each(futures: dict[str, Future[pa.Table]], run: _Run) -> dict[str, pa.Table | ShardUnavailable]:
    """Every shard's result, or its ShardUnavailable error (for failover); other errors end the query."""
    _, pending = wait(futures.values(), timeout=run.remaining())
    if pending:
        run.cancel.set()
        for future in pending:
            future.cancel()
        wait(pending, timeout=5)
        raise QueryTimeout("the query exceeded its timeout and was cancelled on every shard")
    outcome: dict[str, pa.Table | ShardUnavailable] = {}
    for shard, future in futures.items():
        exc = future.exception()
        if isinstance(exc, ShardUnavailable):
            outcome[shard] = exc
        elif exc is not None:
            run.cancel.set()
            raise _translate(exc, run) from exc
        else:
            outcome[shard] = future.result()
    return outcome


@functools.lru_cache(maxsize=16)
def _worker_store(kind: str, config_json: str, data_dir: str) -> ShardBackend:
    from dms.config import ShardConfig
    from dms.shards import backend_for

    config = ShardConfig.model_validate_json(config_json)
    return backend_for(config, Path(data_dir))


def _dask_task(
    kind: str, config_json: str, data_dir: str, sql: str, shipped: dict[str, pa.Table], timeout: float | None
) -> pa.Table:
    return _worker_store(kind, config_json, data_dir).execute(
        sql, timeout=timeout, cancel=None, tables=shipped
    )


def run_dask(
    client: Any, deployment: Deployment, jobs: dict[str, str], shipped: dict[str, pa.Table], run: _Run
) -> list[pa.Table]:
    """The per-shard queries as tasks on a dask.distributed cluster (each worker keeps its connections)."""
    configs = {s.name: s.config for s in deployment.shards()}
    futures = {
        shard: client.submit(
            _dask_task,
            configs[shard].kind,
            configs[shard].model_dump_json(),
            str(deployment.data_dir),
            sql,
            shipped,
            run.remaining(),
            pure=False,
        )
        for shard, sql in jobs.items()
    }
    try:
        results = client.gather(list(futures.values()), errors="raise")
    except Exception as exc:
        for future in futures.values():
            future.cancel()
        raise _translate(exc, run) from exc
    return list(results)


def run_control(
    deployment: Deployment,
    select: exp.Select,
    aliases: dict[str, TableRef],
    shipped: dict[str, pa.Table],
    run: _Run,
) -> pa.Table:
    """A query over the control database's public tables, as the reader role in a READ ONLY transaction,
    with the query's timeout; shipped tables are temporary tables of the reader."""
    query = select.copy()
    url = deployment.control_url().set(drivername="postgresql").render_as_string(hide_password=False)
    with PostgresConnection(url, application_name()) as conn:
        assert conn.conn is not None
        exact = _exact_names(
            conn.conn, {ref.name.split(".")[0] for ref in aliases.values() if ref.kind == "control"}
        )
        _name_tables(query, aliases, exact)
        try:
            return conn.query(
                query.sql("postgres"), timeout=run.remaining(), cancel=run.cancel, tables=shipped
            )
        except (ShardCancelled, ShardQueryError) as exc:
            raise _translate(exc, run) from exc


def _exact_names(conn: psycopg.Connection[Any], schemas: set[str]) -> dict[str, tuple[str, str]]:
    """Lower-case schema.table -> the exact names of the control database's tables in `schemas` (ObsCore is
    ``ivoa."ObsCore"``: the binder lower-cases names)."""
    if not schemas:
        return {}
    rows = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE lower(n.nspname) = ANY(%s) AND c.relkind IN ('r', 'v', 'm', 'p', 'f')",
        (sorted(schemas),),
    ).fetchall()
    return {f"{schema}.{table}".lower(): (schema, table) for schema, table in rows}


def _name_tables(query: exp.Select, aliases: dict[str, TableRef], exact: dict[str, tuple[str, str]]) -> None:
    """Control tables by their exact (quoted) names, uploads and subquery results by their shipped names."""
    for table in list(query.find_all(exp.Table)):
        ref = aliases.get(table.alias_or_name)
        if ref is not None and ref.kind == "control" and ref.name in exact:
            schema, name = exact[ref.name]
            table.set("db", exp.to_identifier(schema, quoted=True))
            table.set("this", exp.to_identifier(name, quoted=True))
        if ref is not None and ref.kind in ("upload", "materialized"):
            name = f"_up_{ref.name}" if ref.kind == "upload" else ref.name
            table.replace(
                exp.Table(
                    this=exp.to_identifier(name),
                    alias=exp.TableAlias(this=exp.to_identifier(table.alias_or_name)),
                )
            )
