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
from dms.query.adql import frames
from dms.query.errors import QueryCancelled, QueryError, QueryRefused, QueryTimeout
from dms.query.fast_path import FastQuery, TemplateCache, build_template, literal_blind
from dms.query.integrity import reroute_damaged
from dms.query.lineage import catalog_region_resolver, catalog_unit_resolver
from dms.query.mysql_semantics import mysql_semantics
from dms.query.parse import parse
from dms.query.planner import Planner
from dms.query.registry import Registry, Snapshot
from dms.query.rewrite import PARTIALS
from dms.query.shape import Shape, shape_of
from dms.query.shard_plan import QueryPlan
from dms.query.sources import ShardSql, normalize_partial
from dms.query.validate import LOCAL_SCHEMA, Catalog, TableRef, bind, check_adql_types
from dms.shards import ShardBackend, ShardCancelled, ShardQueryError, ShardUnavailable
from dms.shards.parquet.transfer import LOCKED_DOWN, confine

log = logging.getLogger(__name__)
INLINE_IN_LIMIT = 10_000
INNER_ROW_LIMIT = 5_000_000
"""Most rows of an intermediate result (WITH query, derived table, subquery, side of a set operation)."""
SHAPE_NOTE = "plan from the cache of query shapes: this query's literals bound as parameters"
SHAPE_LANGS = ("sql", "adql")
"""Languages whose queries are kept by shape (Qserv's MySQL semantics depend on more than the text)."""


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
    run_inner: bool = False  # with explain_only: subqueries still run (for `plan`)
    lang: str = "sql"
    notes: list[str] = field(default_factory=list)
    plans: list[QueryPlan] = field(default_factory=list)
    counter: itertools.count[int] = field(default_factory=itertools.count)
    flat: tuple[exp.Select, dict[str, TableRef], QueryPlan] | None = None
    """The last flat SELECT planned (for the shape cache: a query that is one flat SELECT)."""

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
        self.planner = Planner(self.stores, self.roots)
        self._merge = duckdb.connect(config=LOCKED_DOWN)
        confine(self._merge, [])  # the merge reads only the Arrow tables it is given
        self._merge_udfs = False
        self._lock = threading.Lock()
        self.templates = TemplateCache()
        """Plans by query shape: a query of a known shape is a parameter bind (dms.query.fast_path)."""

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
        shape = shape_of(query) if lang in SHAPE_LANGS and not uploads else None
        if shape is not None:
            fast = self._fast(lang, shape, max_rows, timeout, cancel)
            if fast is not None:
                return fast
        run = self._run(lang, query, max_rows, timeout, uploads, cancel)
        if lang == "qserv":
            columns = qserv_sql.show_columns(query, run.snapshot.tables)
            if columns is not None:
                return QueryResult(columns, False, ["answered from the registry"])
        units = catalog_unit_resolver(run.snapshot.tables)
        regions = catalog_region_resolver(run.snapshot.tables)
        with frames.collect_notes() as notes:  # what the translation and binding said, passed on below
            parsed = parse(query, lang, unit_of=units, region_of=regions)
            table = self._evaluate(parsed, run, top=True)
        for item in notes:
            frames.note(item.text, info_name=item.info_name)
        if shape is not None and not notes:  # a note would be missing from the fast path's answers
            self._remember_shape(
                lang, query, shape, parsed, run, lambda t: parse(t, lang, unit_of=units, region_of=regions)
            )
        return _capped(table, max_rows, run.notes)

    def _remember_shape(
        self,
        lang: str,
        text: str,
        shape: Shape,
        parsed: exp.Query,
        run: _Run,
        reparse: Callable[[str], exp.Expr],
    ) -> None:
        """Keep the plan of a flat SELECT over one catalog table by its shape (dms.query.fast_path); an
        ADQL query's numbers must pass its translation untouched (`reparse` translates another text)."""
        if run.flat is None or len(run.plans) != 1 or run.catalog.materialized:
            return
        if not isinstance(parsed, exp.Select) or parsed.args.get("with_"):
            return
        if sum(1 for _ in parsed.find_all(exp.Select)) != 1:
            return  # a subquery's rows may have become literals of the plan
        select, aliases, plan = run.flat
        # ADQL's strings stay fixed: the grammar check, frames and units read them during the translation
        template = build_template(shape, select, aliases, plan, self.stores, bind_strings=lang != "adql")
        if template is None or (lang == "adql" and not literal_blind(text, shape, parsed, reparse)):
            return
        self.templates.put((lang, shape.key, run.max_rows), run.snapshot.generation, template)

    def _fast(
        self,
        lang: str,
        shape: Shape,
        max_rows: int | None,
        timeout: float | None,
        cancel: threading.Event | None,
    ) -> QueryResult | None:
        """The result of a query of a known shape from its template (parameters bound; no merge when one
        shard answers), or None when the usual path must answer it."""
        snapshot = self.registry.snapshot()
        template = self.templates.get((lang, shape.key, max_rows), snapshot.generation)
        if template is None:
            return None
        try:
            queries = template.bind(shape, snapshot, self.stores)
        except Exception:  # a value the usual path reports better (say, an id beyond BIGINT)
            log.debug("shape template does not bind this query's literals", exc_info=True)
            return None
        if queries is None:
            return None
        if template.file_tables:  # files can go missing or be damaged without the registry changing
            chunk_sets = {q.shard: list(q.chunks) for q in queries}
            _, moved = reroute_damaged(snapshot, list(template.file_tables), self.roots, chunk_sets, {})
            if moved:
                return None
        try:
            if len(queries) == 1:  # in this thread: no dispatch, no merge
                partials = [self._fast_shard(queries[0], timeout, cancel)]
            else:
                futures = [self.pool.submit(self._fast_shard, q, timeout, cancel) for q in queries]
                partials = [f.result() for f in futures]
        except ShardUnavailable:
            return None  # the usual path asks the replicas
        except ShardCancelled as exc:
            if cancel is not None and cancel.is_set():
                raise QueryCancelled("the query was cancelled") from exc
            raise QueryTimeout("the query exceeded its timeout and was cancelled") from exc
        except ShardQueryError as exc:
            raise QueryError(f"the query failed on {exc}") from exc
        notes = [SHAPE_NOTE, *(f"[{q.shard}] {q.sql}" for q in queries)]
        if len(partials) == 1:
            table = normalize_partial(template.decomposition.finish_single(partials[0]))
        else:
            merged = pa.concat_tables([normalize_partial(p) for p in partials], promote_options="permissive")
            table = self._merge_partials(template.merge, merged)
            notes.append(f"[merge] {template.merge}")
        return _capped(table, max_rows, notes)

    def _fast_shard(
        self, query: FastQuery, timeout: float | None, cancel: threading.Event | None
    ) -> pa.Table:
        return self.stores[query.shard].execute(
            query.sql, timeout=timeout, cancel=cancel, params=query.params
        )

    def _merge_partials(self, sql: str, partials: pa.Table) -> pa.Table:
        cursor = self._merge_cursor(sql)
        try:
            cursor.register(PARTIALS, partials)
            return normalize_partial(cursor.sql(sql).to_arrow_table())
        except duckdb.Error as exc:
            raise QueryError(f"the query failed: {str(exc).splitlines()[0]}") from exc
        finally:
            cursor.close()

    def explain(self, query: str, *, lang: str = "sql") -> str:
        run = self._run(lang, query, None, None, None, None)
        run.explain_only = True
        regions = catalog_region_resolver(run.snapshot.tables)
        self._evaluate(parse(query, lang, region_of=regions), run, top=True)
        return "\n".join(run.notes)

    def plan(self, query: str, *, lang: str = "sql", max_rows: int | None = None) -> list[QueryPlan]:
        """The distributed plans of a query without running it: one per flat SELECT over catalog tables, in
        the order the engine evaluates them (subqueries are evaluated, so their plans come first)."""
        run = self._run(lang, query, max_rows, None, None, None)
        run.explain_only = run.run_inner = True
        regions = catalog_region_resolver(run.snapshot.tables)
        self._evaluate(parse(query, lang, region_of=regions), run, top=True)
        return run.plans

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        for store in self.stores.values():
            store.close()
        self.registry.close()
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
        if not top and run.explain_only and run.run_inner:
            run.explain_only = False  # the outer query's plan depends on this one's rows
            try:
                result = self._evaluate_whole(query, run, top)
            finally:
                run.explain_only = True
        else:
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
        if run.lang == "adql":
            check_adql_types(bound, aliases, run.catalog)
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
        plan = self.planner.plan(select, aliases, shipped, run, cap)
        run.plans.append(plan)
        run.flat = (select, aliases, plan)
        run.notes.extend(plan.describe())
        if plan.strategy == "registry":
            assert plan.output is not None
            return pa.table({plan.output: pa.array([plan.registry_count], pa.int64())})
        if run.explain_only:
            return pa.table({})
        return self._execute_plan(plan, shipped, run)

    def _execute_plan(self, plan: QueryPlan, shipped: dict[str, pa.Table], run: _Run) -> pa.Table:
        """Dispatch the plan's per-shard queries and merge their partial results."""
        assert plan.decomposition is not None and plan.merge is not None
        if plan.strategy == "chunks" and self.dask_client is None:
            assert plan.primary is not None
            replicas = run.snapshot.chunks[plan.primary].replicas
            partials = self._dispatch_chunks(plan, replicas, shipped, run)
        else:
            partials = self._dispatch({job.shard: job.sql for job in plan.jobs}, shipped, run)
        if not partials:
            assert plan.empty is not None
            partials = [self._run_merge(plan.empty, shipped, run)]
        if len(partials) == 1 and not plan.aggregated:
            return normalize_partial(plan.decomposition.finish_single(partials[0]))
        merged = pa.concat_tables([normalize_partial(p) for p in partials], promote_options="permissive")
        return self._run_merge(plan.merge, {PARTIALS: merged}, run)

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
        plan: QueryPlan,
        replicas: dict[tuple[int, int], list[str]],
        shipped: dict[str, pa.Table],
        run: _Run,
    ) -> list[pa.Table]:
        """The plan's per-shard queries; the chunks of a shard that cannot be reached are asked of their
        replicas (with SQL built for those chunks on the replica's shard)."""
        assert plan.rebuild is not None
        results: list[pa.Table] = []
        failed: set[str] = set()
        pending = plan.chunk_sets
        queries = {job.shard: job.sql for job in plan.jobs}
        while pending:
            futures = {
                shard: self.pool.submit(dispatch.run_shard, self.stores[shard], queries[shard], shipped, run)
                for shard in pending
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
            queries = {shard: plan.rebuild(shard, chunks) for shard, chunks in retry.items()}
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


def _capped(table: pa.Table, max_rows: int | None, notes: list[str]) -> QueryResult:
    overflow = max_rows is not None and table.num_rows > max_rows
    if overflow:
        table = table.slice(0, max_rows)
    return QueryResult(table, overflow, notes)


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
