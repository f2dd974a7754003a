"""Planning a flat SELECT over catalog tables: restrictions -> chunks per shard -> per-shard SQL -> merge,
as a `QueryPlan` (dms.query.shard_plan), cached by the bound query's text, the result cap and the registry
generation."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from sqlglot import exp

from dms.query.errors import QueryRefused
from dms.query.integrity import ChunkDamaged, check_files_exist, damaged_files, reroute_damaged
from dms.query.plan import JoinAnalyzer
from dms.query.restrict import RestrictionFinder, intersect_ranges
from dms.query.rewrite import decompose
from dms.query.shard_plan import PlanCache, QueryPlan, ShardJob
from dms.query.sources import ShardSql
from dms.query.upload_match import prepare_upload_match
from dms.query.validate import TableRef
from dms.shards import ShardBackend

if TYPE_CHECKING:
    from dms.query.engine import _Run

PLAN_CACHE_SIZE = 512
"""Plans a planner keeps (the least recently used go first)."""


class Planner:
    """Plans of one engine's queries over its shards; thread-safe."""

    def __init__(self, stores: dict[str, ShardBackend], roots: dict[str, str]) -> None:
        self.stores = stores
        self.roots = roots
        self.cache = PlanCache(PLAN_CACHE_SIZE)

    def _plan(
        self,
        select: exp.Select,
        aliases: dict[str, TableRef],
        shipped: dict[str, pa.Table],
        run: _Run,
        cap: int | None,
    ) -> QueryPlan:
        """The plan of a flat SELECT over catalog tables: chunks per shard, their SQL (built once), merge."""
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
            return QueryPlan(
                "registry",
                primary=counted[1],
                registry_count=counted[2],
                output=counted[0],
                notes=(f"answered from the registry's row count of {counted[1]}",),
                file_tables=tuple(on_files),
            )
        notes: list[str] = []
        partitioned = {a: t for a, t in catalog_refs.items() if t.partitioned}
        upload_ranges = prepare_upload_match(
            select, aliases, partitioned, run.catalog.uploads, shipped, run.snapshot.chunks
        )
        sql_builder = ShardSql(select, aliases, run.snapshot, self.stores)
        decomposition = decompose(select, cap)

        def build(shard: str, chunks: list[tuple[int, int]]) -> str:
            return sql_builder.shard_sql(decomposition.shard, shard, chunks)

        jobs: tuple[ShardJob, ...]
        overlap: tuple[str, ...] = ()
        if not partitioned:
            shard = sql_builder.replicated_shard(self.stores)
            jobs = (ShardJob(shard, (), build(shard, [])),)
            strategy, primary_name, primary_alias = "replicated", None, None
        else:
            join_plan = JoinAnalyzer(select, partitioned).plan()
            sql_builder.overlap_aliases = join_plan.overlap_aliases
            sql_builder.primary_alias = join_plan.primary
            sql_builder.radius = join_plan.radius
            ranges, ids = upload_ranges, None
            if upload_ranges is not None:
                notes.append(f"upload crossmatch: zone join over {len(upload_ranges)} chunk ranges")
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
            sql_builder.ranges = {join_plan.primary: ranges} if ranges is not None else {}
            jobs = tuple(
                ShardJob(shard, tuple(chunks), build(shard, chunks)) for shard, chunks in chunk_sets.items()
            )
            notes.append(
                f"primary {primary.name} as {join_plan.primary}: "
                f"{sum(len(c) for c in chunk_sets.values())} chunks on {len(chunk_sets)} shards"
                + (
                    f"; overlap used for {sorted(join_plan.overlap_aliases)}"
                    if join_plan.overlap_aliases
                    else ""
                )
            )
            strategy, primary_name, primary_alias = "chunks", primary.name, join_plan.primary
            overlap = tuple(sorted(join_plan.overlap_aliases))
        return QueryPlan(
            strategy,
            primary=primary_name,
            primary_alias=primary_alias,
            overlap_aliases=overlap,
            jobs=jobs,
            merge=decomposition.merge.sql("duckdb"),
            aggregated=decomposition.aggregated,
            empty=sql_builder.local_sql(decomposition.shard, empty=True) if not jobs else None,
            notes=tuple(notes),
            decomposition=decomposition,
            rebuild=build,
            file_tables=tuple(on_files),
        )

    def plan(
        self,
        select: exp.Select,
        aliases: dict[str, TableRef],
        shipped: dict[str, pa.Table],
        run: _Run,
        cap: int | None,
    ) -> QueryPlan:
        """The plan from the cache (keyed by the bound query's text, the cap and the registry generation:
        a load, drop or placement change makes a new key), else planned now; then checked against the files
        it reads, which can go missing without the registry changing."""
        cacheable = all(ref.kind == "catalog" for ref in aliases.values())
        key = (select.sql(), cap, run.snapshot.generation) if cacheable else None
        plan = self.cache.get(key) if key is not None else None
        if plan is None:
            plan = self._plan(select, aliases, shipped, run, cap)
            if key is not None:
                self.cache.put(key, plan)
        else:
            run.notes.append("plan from the cache")
        return plan if run.explain_only else self._checked(plan, run)

    def _checked(self, plan: QueryPlan, run: _Run) -> QueryPlan:
        """The plan with the chunks whose files are missing or damaged read from intact replicas (an error
        naming the files when there is none)."""
        tables = list(plan.file_tables)
        if not tables:
            return plan
        if plan.strategy == "registry":
            for table in tables:
                check_files_exist(run.snapshot, table, self.roots)
            return plan
        if plan.strategy == "replicated":
            problems = damaged_files(run.snapshot, tables, self.roots, plan.jobs[0].shard, None)
            if problems:
                raise ChunkDamaged(f"replicated data cannot be read: {'; '.join(problems)}")
            return plan
        assert plan.primary is not None and plan.rebuild is not None
        replicas = run.snapshot.chunks[plan.primary].replicas
        chunk_sets, moved = reroute_damaged(run.snapshot, tables, self.roots, plan.chunk_sets, replicas)
        if not moved:
            return plan
        jobs = tuple(ShardJob(s, tuple(c), plan.rebuild(s, c)) for s, c in chunk_sets.items())
        return dataclasses.replace(plan, jobs=jobs, notes=(*plan.notes, *moved))


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
