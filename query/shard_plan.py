"""The distributed plan of one flat SELECT, as data: which chunks each shard reads, the SQL it runs, and the
merge that combines the partial results.

`QueryEngine.plan(sql)` returns the plans of a query (one per flat SELECT it evaluates: a WITH query, a
subquery or a side of a set operation has its own); `QueryPlan.to_dict` is its JSON form, which the golden
fixtures of tests/test_query_plans.py hold. The engine executes the same object it returns, so what the
fixtures check is what runs.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from dms.query.rewrite import Decomposition
from dms.schema.catalog import CatalogTable

ChunkKey = tuple[int, int]

PLAN_FORMAT = 1
"""Version of the JSON form; bump it when a field changes meaning."""


@dataclass(frozen=True)
class ShardJob:
    """One per-shard query: the shard, the chunks (order, pixel) it reads, its SQL in the shard's dialect."""

    shard: str
    chunks: tuple[ChunkKey, ...]
    sql: str

    def to_dict(self) -> dict[str, Any]:
        return {"shard": self.shard, "chunks": [list(c) for c in self.chunks], "sql": self.sql}


@dataclass
class QueryPlan:
    """How a flat SELECT over catalog tables is answered.

    `strategy` is "registry" (answered from the registry's row count: no shard is asked), "replicated" (one
    shard holding every table of the query) or "chunks" (the primary table's chunks on every shard that holds
    them). `merge` is the DuckDB SQL over the partial results (table `_partials`); a row query that runs on
    one shard skips it (`single_shard_finish`).
    """

    strategy: str
    primary: str | None = None
    primary_alias: str | None = None
    overlap_aliases: tuple[str, ...] = ()
    jobs: tuple[ShardJob, ...] = ()
    merge: str | None = None
    aggregated: bool = False
    registry_count: int | None = None
    output: str | None = None
    empty: str | None = None
    """The merge database's query over empty tables, when no shard holds any chunk the query reads."""
    notes: tuple[str, ...] = ()
    decomposition: Decomposition | None = field(default=None, repr=False, compare=False)
    rebuild: Callable[[str, list[ChunkKey]], str] | None = field(default=None, repr=False, compare=False)
    """The per-shard SQL of other chunks on another shard (failover to replicas)."""
    file_tables: tuple[CatalogTable, ...] = field(default=(), repr=False, compare=False)
    """The query's tables stored as files (checked before each run: files can go missing)."""

    @property
    def chunk_sets(self) -> dict[str, list[ChunkKey]]:
        return {job.shard: list(job.chunks) for job in self.jobs}

    @property
    def single_shard_finish(self) -> bool:
        return len(self.jobs) <= 1 and not self.aggregated

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready data (what golden fixtures compare)."""
        return {
            "format": PLAN_FORMAT,
            "strategy": self.strategy,
            "primary": self.primary,
            "primary_alias": self.primary_alias,
            "overlap_aliases": list(self.overlap_aliases),
            "jobs": [job.to_dict() for job in self.jobs],
            "merge": self.merge,
            "aggregated": self.aggregated,
            "registry_count": self.registry_count,
            "output": self.output,
            "empty": self.empty,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QueryPlan:
        """A plan read back from its JSON form (without the callables that only a live engine has)."""
        if data.get("format") != PLAN_FORMAT:
            raise ValueError(f"plan format {data.get('format')!r} is not {PLAN_FORMAT}")
        jobs = tuple(
            ShardJob(job["shard"], tuple((int(o), int(p)) for o, p in job["chunks"]), job["sql"])
            for job in data["jobs"]
        )
        return cls(
            strategy=data["strategy"],
            primary=data["primary"],
            primary_alias=data["primary_alias"],
            overlap_aliases=tuple(data["overlap_aliases"]),
            jobs=jobs,
            merge=data["merge"],
            aggregated=data["aggregated"],
            registry_count=data["registry_count"],
            output=data["output"],
            empty=data.get("empty"),
        )

    def describe(self) -> list[str]:
        """The plan as the lines `dms query --explain` prints."""
        lines = list(self.notes)
        lines += [f"[{job.shard}] {job.sql}" for job in self.jobs]
        if self.merge is not None:
            lines.append(f"[merge] {self.merge}")
        return lines


class PlanCache:
    """A thread-safe LRU map of plan keys to plans."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._plans: OrderedDict[Hashable, QueryPlan] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> QueryPlan | None:
        with self._lock:
            plan = self._plans.get(key)
            if plan is not None:
                self._plans.move_to_end(key)
            return plan

    def put(self, key: Hashable, plan: QueryPlan) -> None:
        with self._lock:
            self._plans[key] = plan
            self._plans.move_to_end(key)
            while len(self._plans) > self.size:
                self._plans.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._plans.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._plans)
