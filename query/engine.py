"""The distributed query engine: parse -> validate -> restrict -> plan -> rewrite -> dispatch -> merge.

`QueryEngine(deployment).execute(sql)` returns a `QueryResult` (an Arrow table, and whether the result-size
cap cut it). Subqueries in FROM, uncorrelated subqueries in WHERE, WITH and set operations are evaluated
first (each as a distributed query of its own) and their results used as small tables; a flat SELECT over
catalog tables is then split per shard and merged in DuckDB.

The result cap (`max_rows`) applies to the final result only. An intermediate result (a WITH query, a derived
table, a subquery, a side of a set operation) is held in memory whole, so it may have at most
`INNER_ROW_LIMIT` rows: a larger one is an error naming the limit, never a truncation that would change the
answer.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa
from sqlglot import exp

from dms.deployment import Deployment
from dms.query import dispatch, qserv_sql
from dms.query.errors import QueryCancelled, QueryError, QueryRefused, QueryTimeout
from dms.query.integrity import ChunkDamaged, check_files_exist, damaged_files, reroute_damaged
from dms.query.lineage import catalog_unit_resolver
from dms.query.mysql_semantics import mysql_semantics
from dms.query.parse import parse
from dms.query.plan import JoinAnalyzer
from dms.query.registry import Registry, Snapshot
from dms.query.restrict import RestrictionFinder, intersect_ranges
from dms.query.rewrite import PARTIALS, decompose
from dms.query.sources import ShardSql, normalize_partial
from dms.query.upload_match import prepare_upload_match
from dms.query.validate import LOCAL_SCHEMA, Catalog, TableRef, bind
from dms.shards import ShardBackend
from dms.shards.parquet.transfer import LOCKED_DOWN, confine

log = logging.getLogger(__name__)
INLINE_IN_LIMIT = 10_000
INNER_ROW_LIMIT = 5_000_000
"""Most rows of an intermediate result (WITH query, derived table, subquery, side of a set operation)."""


@dataclass
class QueryResult:
    table: pa.Table
    overflow: bool = False
    plan: list[str] = field(default_factory=list)


@dataclass
class _Run:
    snapshot: Snapshot
    catalog: Catalog
    max_rows: int | None
    deadline: float | None
    cancel: threading.Event
    explain_only: bool = False
    lang: str = "sql"
    notes: list[str] = field(default_factory=list)
    counter: itertools.count[int] = field(default_factory=itertools.count)

    def check(self) -> None:
        if self.cancel.is_set():
            raise QueryCancelled("the query was cancelled")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise QueryTimeout("the query exceeded its timeout and was cancelled")

    def remaining(self) -> float | None:
        return None if self.deadline is None else max(0.001, self.deadline - time.monotonic())


class QueryEngine:
    """Runs SQL and ADQL over the deployment's catalog; long-lived and thread-safe."""

    inner_row_limit: int = INNER_ROW_LIMIT
    """Most rows of an intermediate result; a larger one is a `QueryRefused` naming this limit."""

    def __init__(
        self, deployment: Deployment, *, workers: int | None = None, dask_client: Any = None
    ) -> None:
        self.deployment = deployment
        self.registry = Registry(deployment)
        self.stores: dict[str, ShardBackend] = {s.name: s for s in deployment.shards()}
        self.pool = ThreadPoolExecutor(
            max_workers=workers or max(4, 2 * (os.cpu_count() or 2)), thread_name_prefix="dms-query"
        )
        self.dask_client = dask_client
        self.roots = {n: str(getattr(s, "root", "")) for n, s in self.stores.items()}  # Parquet shards' files
        self._merge = duckdb.connect(config=LOCKED_DOWN)
        confine(self._merge, [])  # the merge reads only the Arrow tables it is given
        self._merge_udfs = False
        self._lock = threading.Lock()

    # public API --------------------------------------------------------------------------------

    def execute(
        self,
        query: str,
        *,
        lang: str = "sql",
        max_rows: int | None = None,
        timeout: float | None = None,
        uploads: dict[str, pa.Table] | None = None,
        cancel: threading.Event | None = None,
    ) -> QueryResult:
        run = self._run(lang, query, max_rows, timeout, uploads, cancel)
        if lang == "qserv":
            columns = qserv_sql.show_columns(query, run.snapshot.tables)
            if columns is not None:
                return QueryResult(columns, False, ["answered from the registry"])
        units = catalog_unit_resolver(self.registry.snapshot().tables)
        table = self._evaluate(parse(query, lang, unit_of=units), run, top=True)
        overflow = max_rows is not None and table.num_rows > max_rows
        if overflow:
            table = table.slice(0, max_rows)
        return QueryResult(table, overflow, run.notes)

    def explain(self, query: str, *, lang: str = "sql") -> str:
        run = self._run(lang, query, None, None, None, None)
        run.explain_only = True
        self._evaluate(parse(query, lang), run, top=True)
        return "\n".join(run.notes)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        for store in self.stores.values():
            store.close()
        self._merge.close()

    def __enter__(self) -> QueryEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # evaluation --------------------------------------------------------------------------------

    def _run(
        self,
        lang: str,
        query: str,
        max_rows: int | None,
        timeout: float | None,
        uploads: dict[str, pa.Table] | None,
        cancel: threading.Event | None,
    ) -> _Run:
        snapshot = self.registry.snapshot()
        catalog = Catalog(
            tables={(t.schema_name.lower(), t.table_name.lower()): t for t in snapshot.tables.values()},
            control=snapshot.control_tables,
            uploads={k.lower(): v for k, v in (uploads or {}).items()},
            virtual_columns=lang == "qserv",
        )
        deadline = None if timeout is None else time.monotonic() + timeout
        return _Run(snapshot, catalog, max_rows, deadline, cancel or threading.Event(), lang=lang)

    def _evaluate(self, query: exp.Query, run: _Run, top: bool = False) -> pa.Table:
        """The rows of a query: the final result when `top` (cut after run.max_rows + 1 rows; the caller
        reports the overflow), else an intermediate result, complete or an error."""
        result = self._evaluate_whole(query, run, top)
        if not top and result.num_rows > self.inner_row_limit:
            raise QueryRefused(
                f"an intermediate result (a WITH query, derived table, subquery or side of a set operation) "
                f"has more than {self.inner_row_limit:,} rows, the most the engine holds in memory; restrict "
                "or aggregate it inside the subquery"
            )
        return result

    def _evaluate_whole(self, query: exp.Query, run: _Run, top: bool) -> pa.Table:
        run.check()
        query = query.copy()
        with_ = query.args.get("with_")
        if with_ is not None:
            if with_.args.get("recursive"):
                raise QueryRefused("recursive WITH queries are not supported")
            for cte in with_.expressions:
                run.catalog.materialized[cte.alias_or_name.lower()] = self._evaluate(cte.this, run)
            query.set("with_", None)
        if isinstance(query, exp.SetOperation):
            return self._set_operation(query, run, top)
        assert isinstance(query, exp.Select)
        self._materialize_subqueries(query, run)
        bound, aliases = bind(query, run.catalog)
        if run.lang == "qserv":
            bound = mysql_semantics(bound, run.catalog)
        assert isinstance(bound, exp.Select)
        return self._flat(bound, aliases, run, run.max_rows if top else self.inner_row_limit)

    def _set_operation(self, query: exp.SetOperation, run: _Run, top: bool) -> pa.Table:
        # The sides of a final UNION ALL without ORDER BY, LIMIT or OFFSET of its own may be cut like the
        # result (more than max_rows rows on one side is more than max_rows in all); any other set operation
        # needs its sides whole.
        cut_sides = (
            top
            and isinstance(query, exp.Union)
            and not query.args.get("distinct")
            and not any(query.args.get(k) for k in ("order", "limit", "offset"))
        )
        left = self._evaluate(query.left, run, top=cut_sides)
        right = self._evaluate(query.right, run, top=cut_sides)
        if left.num_columns != right.num_columns:
            raise QueryRefused(
                f"the two sides of {query.key.upper()} have {left.num_columns} and "
                f"{right.num_columns} columns"
            )
        right = right.rename_columns(left.column_names)
        if query.args.get("distinct") or not isinstance(query, exp.Union):
            _refuse_case_blind_set(query, left, run)
        combined = query.copy()
        combined.set("this", exp.select("*").from_("_left"))
        combined.set("expression", exp.select("*").from_("_right"))
        return self._run_merge(combined.sql("duckdb"), {"_left": left, "_right": right}, run)

    def _materialize_subqueries(self, select: exp.Select, run: _Run) -> None:
        """Evaluate derived tables and uncorrelated subqueries first; use their results as small tables."""
        for source in [select.args.get("from_"), *(select.args.get("joins") or [])]:
            node = source.this if source is not None else None
            if isinstance(node, exp.Subquery) and isinstance(node.this, exp.Query):
                name = f"_m{next(run.counter)}"
                run.catalog.materialized[name] = self._evaluate(node.this, run)
                node.replace(
                    exp.Table(
                        this=exp.to_identifier(name),
                        alias=exp.TableAlias(this=exp.to_identifier(node.alias_or_name or name)),
                    )
                )
        for node in list(select.find_all(exp.Subquery, exp.Exists)):
            if (
                node.find_ancestor(exp.Subquery, exp.Exists) not in (None,)
                and node.parent_select is not select
            ):
                continue  # nested deeper: handled when its own query is evaluated
            inner = node.this
            if not isinstance(inner, exp.Query) or node.parent_select is not select:
                continue
            try:
                result = self._evaluate(inner, run)
            except QueryRefused as exc:
                if "is not known" in str(exc) or "not a table" in str(exc):
                    raise QueryRefused(
                        f"correlated subqueries are not supported ({exc}); rewrite it as a join"
                    ) from None
                raise
            node.replace(self._subquery_value(node, result, run))

    def _subquery_value(self, node: exp.Expression, result: pa.Table, run: _Run) -> exp.Expression:
        if isinstance(node, exp.Exists):
            return exp.true() if result.num_rows else exp.false()
        if result.num_columns != 1:
            raise QueryRefused("a subquery used as a value or IN list must return one column")
        values = result.column(0).to_pylist()
        if isinstance(node.parent, exp.In):
            if len(values) <= INLINE_IN_LIMIT:
                return exp.Tuple(expressions=[_literal(v) for v in values] or [exp.null()])
            name = f"_m{next(run.counter)}"
            run.catalog.materialized[name] = result
            return exp.Subquery(this=exp.select("*").from_(f"{LOCAL_SCHEMA}.{name}"))
        if len(values) > 1:
            raise QueryRefused("a scalar subquery returned more than one row")
        return _literal(values[0] if values else None)

    # flat SELECT --------------------------------------------------------------------------------------------

    def _flat(self, select: exp.Select, aliases: dict[str, TableRef], run: _Run, cap: int | None) -> pa.Table:
        """A SELECT without subqueries; rows beyond `cap` + 1 need not be computed."""
        kinds = {ref.kind for ref in aliases.values()}
        if "catalog" in kinds and "control" in kinds:
            raise QueryRefused("catalog tables cannot be joined with ObsCore/TAP_SCHEMA tables in one query")
        shipped = self._shipped(aliases, run)
        if "control" in kinds:
            return dispatch.run_control(self.deployment, _with_cap(select, cap), aliases, shipped, run)
        if "catalog" not in kinds:
            sql = ShardSql(select, aliases, run.snapshot, self.stores).local_sql(_with_cap(select, cap))
            return self._run_merge(sql, shipped, run)
        return self._distributed(select, aliases, shipped, run, cap)

    def _shipped(self, aliases: dict[str, TableRef], run: _Run) -> dict[str, pa.Table]:
        shipped = {}
        for ref in aliases.values():
            if ref.kind == "upload":
                shipped[f"_up_{ref.name}"] = run.catalog.uploads[ref.name]
            elif ref.kind == "materialized":
                shipped[ref.name] = run.catalog.materialized[ref.name]
        return shipped

    def _distributed(
        self,
        select: exp.Select,
        aliases: dict[str, TableRef],
        shipped: dict[str, pa.Table],
        run: _Run,
        cap: int | None,
    ) -> pa.Table:
        catalog_refs = {a: r.catalog for a, r in aliases.items() if r.catalog is not None}
        kinds = {t.storage_kind for t in catalog_refs.values()}
        if len(kinds) > 1:
            raise QueryRefused(
                "this query joins tables stored on PostgreSQL shards with tables on DuckDB "
                "shards; they cannot be joined shard by shard"
            )
        on_files = [t for t in catalog_refs.values() if t.storage_kind == "duckdb"]
        counted = _count_shortcut(select, catalog_refs)
        if counted is not None:
            for table in on_files:
                check_files_exist(run.snapshot, table, self.roots)
            run.notes.append(f"answered from the registry's row count of {counted[1]}")
            return pa.table({counted[0]: pa.array([counted[2]], pa.int64())})
        partitioned = {a: t for a, t in catalog_refs.items() if t.partitioned}
        upload_ranges = prepare_upload_match(
            select, aliases, partitioned, run.catalog.uploads, shipped, run.snapshot.chunks
        )
        sql_builder = ShardSql(select, aliases, run.snapshot, self.stores)
        decomposition = decompose(select, cap)
        if not partitioned:
            shard = sql_builder.replicated_shard(self.stores)
            problems = damaged_files(run.snapshot, on_files, self.roots, shard, None)
            if problems and not run.explain_only:
                raise ChunkDamaged(f"replicated data cannot be read: {'; '.join(problems)}")
            jobs = {shard: sql_builder.shard_sql(decomposition.shard, shard, [])}
        else:
            join_plan = JoinAnalyzer(select, partitioned).plan()
            sql_builder.overlap_aliases = join_plan.overlap_aliases
            sql_builder.primary_alias = join_plan.primary
            sql_builder.radius = join_plan.radius
            ranges, ids = upload_ranges, None
            if upload_ranges is not None:
                run.notes.append(f"upload crossmatch: zone join over {len(upload_ranges)} chunk ranges")
            for alias, table in partitioned.items():
                if alias in join_plan.overlap_aliases:
                    continue
                restriction = RestrictionFinder(alias, table).find(select.args.get("where"))
                if restriction.ranges is not None:
                    ranges = (
                        restriction.ranges if ranges is None else intersect_ranges(ranges, restriction.ranges)
                    )
                # a match table's key names its first director's object, whose chunk is the primary's only
                # when the primary is that director (or the match table itself)
                usable = (
                    table.role != "match"
                    or join_plan.primary == alias
                    or (partitioned[join_plan.primary].name == table.director_table)
                )
                if restriction.ids is not None and usable:
                    ids = restriction.ids if ids is None else ids & restriction.ids
            primary = partitioned[join_plan.primary]
            chunk_sets = sql_builder.choose_chunks(primary, ranges, ids)
            sql_builder.check_layouts(join_plan.primary, chunk_sets)
            replicas = run.snapshot.chunks[primary.name].replicas
            if on_files and not run.explain_only:
                chunk_sets, moved = reroute_damaged(run.snapshot, on_files, self.roots, chunk_sets, replicas)
                run.notes.extend(moved)
            sql_builder.ranges = {join_plan.primary: ranges} if ranges is not None else {}

            def build(shard: str, chunks: list[tuple[int, int]]) -> str:
                return sql_builder.shard_sql(decomposition.shard, shard, chunks)

            jobs = {shard: build(shard, chunks) for shard, chunks in chunk_sets.items()}
            run.notes.append(
                f"primary {primary.name} as {join_plan.primary}: "
                f"{sum(len(c) for c in chunk_sets.values())} chunks on {len(chunk_sets)} shards"
                + (
                    f"; overlap used for {sorted(join_plan.overlap_aliases)}"
                    if join_plan.overlap_aliases
                    else ""
                )
            )
        for shard, sql in jobs.items():
            run.notes.append(f"[{shard}] {sql}")
        merge_sql = decomposition.merge.sql("duckdb")
        run.notes.append(f"[merge] {merge_sql}")
        if run.explain_only:
            return pa.table({})
        if partitioned and self.dask_client is None:
            partials = self._dispatch_chunks(chunk_sets, build, replicas, shipped, run)
        else:
            partials = self._dispatch(jobs, shipped, run)
        if not partials:
            empty_sql = sql_builder.local_sql(decomposition.shard, empty=True)
            partials = [self._run_merge(empty_sql, shipped, run)]
        if len(partials) == 1 and not decomposition.aggregated:
            return normalize_partial(decomposition.finish_single(partials[0]))
        merged = pa.concat_tables([normalize_partial(p) for p in partials], promote_options="permissive")
        return self._run_merge(merge_sql, {PARTIALS: merged}, run)

    def _dispatch(self, jobs: dict[str, str], shipped: dict[str, pa.Table], run: _Run) -> list[pa.Table]:
        if self.dask_client is not None:
            return dispatch.run_dask(self.dask_client, self.deployment, jobs, shipped, run)
        futures: dict[str, Future[pa.Table]] = {
            shard: self.pool.submit(dispatch.run_shard, self.stores[shard], sql, shipped, run)
            for shard, sql in jobs.items()
        }
        return dispatch.gather(futures, run)

    def _dispatch_chunks(
        self,
        chunk_sets: dict[str, list[tuple[int, int]]],
        build: Callable[[str, list[tuple[int, int]]], str],
        replicas: dict[tuple[int, int], list[str]],
        shipped: dict[str, pa.Table],
        run: _Run,
    ) -> list[pa.Table]:
        """Per-shard queries; the chunks of a shard that cannot be reached are asked of their replicas."""
        results: list[pa.Table] = []
        failed: set[str] = set()
        pending = chunk_sets
        while pending:
            futures = {
                shard: self.pool.submit(
                    dispatch.run_shard, self.stores[shard], build(shard, chunks), shipped, run
                )
                for shard, chunks in pending.items()
            }
            outcome = dispatch.gather_each(futures, run)
            retry: dict[str, list[tuple[int, int]]] = {}
            for shard, result in outcome.items():
                if isinstance(result, pa.Table):
                    results.append(result)
                    continue
                failed.add(shard)
                log.warning("%s; trying replicas", result)
                for chunk in pending[shard]:
                    others = [s for s in replicas.get(chunk, []) if s not in failed and s in self.stores]
                    if not others:
                        raise QueryError(
                            f"{result}; chunk {chunk[0]}/{chunk[1]} has no replica on another shard"
                        )
                    retry.setdefault(others[0], []).append(chunk)
            run.notes.extend(f"failover: {len(c)} chunks to {s}" for s, c in retry.items())
            pending = retry
        return results

    def _run_merge(self, sql: str, tables: dict[str, pa.Table], run: _Run) -> pa.Table:
        run.check()
        cursor = self._merge_cursor(sql)
        try:
            for name, table in tables.items():
                cursor.register(name, table)
            return normalize_partial(cursor.sql(sql).to_arrow_table())
        except duckdb.Error as exc:
            raise QueryError(f"the query failed: {str(exc).splitlines()[0]}") from exc
        finally:
            cursor.close()

    def _merge_cursor(self, sql: str) -> duckdb.DuckDBPyConnection:
        lowered = sql.lower()
        if any(p in lowered for p in ("scisql_", "ivo_", "adql_")) and not self._merge_udfs:
            from dms.udfs import register_duckdb

            with self._lock:
                if not self._merge_udfs:
                    register_duckdb(self._merge, temporary=False)
                    self._merge_udfs = True
        return self._merge.cursor()  # integer division is set for the whole connection (confine)


def _refuse_case_blind_set(query: exp.SetOperation, left: pa.Table, run: _Run) -> None:
    """UNION (DISTINCT), INTERSECT and EXCEPT compare rows; in the Qserv dialect text compares without regard
    to case, and which spelling MySQL keeps is not defined: refused for text columns."""
    if run.lang != "qserv":
        return
    text = [f.name for f in left.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    if text:
        raise QueryRefused(
            f"{query.key.upper()} compares rows with the text column {text[0]!r}: MySQL (and Qserv) compare "
            "text without regard to case and keep an arbitrary spelling, which DMS cannot reproduce; use "
            "UNION ALL, LOWER(...), or --lang sql"
        )


def _literal(value: Any) -> exp.Expression:
    if value is None:
        return exp.null()
    if isinstance(value, bool):
        return exp.true() if value else exp.false()
    if isinstance(value, int | float):
        return exp.Literal.number(repr(value) if isinstance(value, float) else value)
    return exp.Literal.string(str(value))


def _with_cap(select: exp.Select, max_rows: int | None) -> exp.Select:
    if max_rows is None:
        return select
    limit = select.args.get("limit")
    current = None
    if limit is not None and isinstance(limit.expression, exp.Literal):
        current = int(limit.expression.this)
    capped = select.copy()
    if current is None or current > max_rows + 1:
        capped.set("limit", exp.Limit(expression=exp.Literal.number(max_rows + 1)))
    return capped


def _count_shortcut(select: exp.Select, tables: dict[str, Any]) -> tuple[str, str, int] | None:
    """`SELECT COUNT(*) FROM t`: the registry knows the answer."""
    if len(tables) != 1 or len(select.expressions) != 1:
        return None
    if any(select.args.get(k) for k in ("where", "group", "having", "joins", "distinct", "offset")):
        return None
    projection = select.expressions[0]
    inner = projection.unalias() if isinstance(projection, exp.Alias) else projection
    if not (isinstance(inner, exp.Count) and isinstance(inner.this, exp.Star)):
        return None
    limit = select.args.get("limit")
    if limit is not None and not (
        isinstance(limit.expression, exp.Literal) and int(limit.expression.this) > 0
    ):
        return None
    table = next(iter(tables.values()))
    return projection.alias_or_name or "count", table.name, table.row_count
