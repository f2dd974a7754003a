"""Per-shard SQL: which chunks each shard reads, and the query text it runs in its own dialect.

Table references are replaced by the shard's data (Parquet files of the chosen chunks on DuckDB shards, the
shard's table on PostgreSQL), and the chunk-locality predicates are added: primary rows are never overlap
copies, a near-neighbour partner comes from the primary row's chunk, and the `_healpix_29` ranges of a
spatial restriction (which let PostgreSQL use its index and DuckDB skip row groups).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from dms.loaders.partition import nuniq
from dms.query.errors import QueryRefused
from dms.query.registry import Snapshot
from dms.query.restrict import merge_ranges
from dms.query.validate import TableRef
from dms.schema.catalog import SQL_TYPES, CatalogTable
from dms.shards import ShardBackend

MAX_RANGES = 64
_FILES = "dms_files"
ChunkKey = tuple[int, int]


class ShardSql:
    def __init__(
        self,
        select: exp.Select,
        aliases: dict[str, TableRef],
        snapshot: Snapshot,
        shards: dict[str, ShardBackend] | None = None,
    ) -> None:
        self.shards = shards or {}
        self.select = select
        self.aliases = aliases
        self.snapshot = snapshot
        self.overlap_aliases: set[str] = set()
        self.primary_alias: str | None = None
        self.radius: dict[str, float] = {}
        self.ranges: dict[str, np.ndarray] = {}
        self.parameters: dict[str, Any] | None = None
        """When a dict: the chunk-dependent values (files, `_healpix_29` ranges, chunk lists) are rendered as
        named placeholders and their values put here, so the text depends only on `signature`."""
        self.signature: list[tuple[str, int]] = []
        """In parameter mode: what the text depends on besides the template (kinds and padded lengths)."""

    # choosing chunks --------------------------------------------------------------------------------

    def choose_chunks(
        self, table: CatalogTable, ranges: np.ndarray | None, ids: frozenset[int] | None
    ) -> dict[str, list[ChunkKey]]:
        chunks = self.snapshot.chunks[table.name]
        selected = chunks.select(ranges)
        if ids is not None:
            wanted = self._chunks_of_ids(table, ids)
            uniq = nuniq(chunks.orders[selected], chunks.pixels[selected])
            selected = selected[np.isin(uniq, np.array(sorted(wanted), np.int64))]
        by_shard: dict[str, list[ChunkKey]] = defaultdict(list)
        for i in selected.tolist():
            by_shard[str(chunks.shard[i])].append((int(chunks.orders[i]), int(chunks.pixels[i])))
        return dict(by_shard)

    def _chunks_of_ids(self, table: CatalogTable, ids: frozenset[int]) -> set[int]:
        director = table.name if table.role == "director" else table.director_table
        if not ids:
            return set()
        found = self.snapshot.chunks_of_ids(director or "", sorted(ids))
        if table.role == "child":  # rows loaded without their director, placed by position (orphans)
            found |= self.snapshot.chunks_of_ids(table.name, sorted(ids))
        return found

    def check_layouts(self, primary: str, chunk_sets: dict[str, list[ChunkKey]]) -> None:
        """A near-neighbour partner table must have the primary's chunk layout on the chosen chunks."""
        primary_table = self.aliases[primary].catalog
        assert primary_table is not None
        for alias in self.overlap_aliases:
            table = self.aliases[alias].catalog
            assert table is not None
            if table.name == primary_table.name:
                continue
            partner = self.snapshot.chunks[table.name]
            own = set(zip(partner.orders.tolist(), partner.pixels.tolist(), strict=True))
            for shard, chunks in chunk_sets.items():
                for order, pixel in chunks:
                    lo, hi = pixel << 2 * (29 - order), ((pixel + 1) << 2 * (29 - order)) - 1
                    inside = (partner.lo <= hi) & (partner.hi >= lo)
                    if inside.any() and (order, pixel) not in own:
                        raise QueryRefused(
                            f"{table.name} and {primary_table.name} are partitioned into different chunks, "
                            "so "
                            f"they cannot be matched chunk by chunk; load {table.name} with "
                            f"`--like {primary_table.name}`"
                        )
                    if (order, pixel) in own and partner.shard[list(own).index((order, pixel))] is None:
                        raise QueryRefused(f"chunk {order}/{pixel} of {table.name} is not placed on {shard}")

    def replicated_shard(self, stores: dict[str, ShardBackend]) -> str:
        tables = [r.catalog for r in self.aliases.values() if r.catalog is not None]
        kind = tables[0].storage_kind
        for name in sorted(stores):
            shard = stores[name]
            if shard.kind == kind and all(
                shard.shared_table or name in self.snapshot.chunks[t.name].replicated_files for t in tables
            ):
                return name
        raise QueryRefused(f"no shard holds all of {', '.join(t.name for t in tables)}")

    # per-shard SQL ------------------------------------------------------------------------------------------

    def shard_sql(self, template: exp.Select, shard: str, chunks: list[ChunkKey]) -> str:
        """The per-shard query of `shard` over its `chunks`, in the shard's dialect."""
        return self.shard_expression(template, shard, chunks).sql(self.shards[shard].dialect)

    def shard_expression(self, template: exp.Select, shard: str, chunks: list[ChunkKey]) -> exp.Select:
        query = template.copy()
        for table in list(query.find_all(exp.Table)):
            self._replace_table(query, table, self.shards[shard], chunks)
        return query

    def local_sql(self, template: exp.Select, *, empty: bool = False) -> str:
        """The query over empty catalog tables and the shipped small tables, for the merge database."""
        query = template.copy()
        for table in list(query.find_all(exp.Table)):
            ref = self.aliases.get(table.alias_or_name)
            if ref is not None and ref.catalog is not None:
                table.replace(empty_relation(ref.catalog, table.alias_or_name))
            elif ref is not None:
                table.replace(_shipped_table(ref, table.alias_or_name))
        return query.sql("duckdb")

    def _replace_table(
        self, query: exp.Select, table: exp.Table, backend: ShardBackend, chunks: list[ChunkKey]
    ) -> None:
        alias = table.alias_or_name
        ref = self.aliases.get(alias)
        if ref is None:
            return
        join = next((j for j in query.args.get("joins") or [] if j.this is table), None)
        if ref.catalog is None:
            table.replace(_shipped_table(ref, alias))
            return
        catalog = ref.catalog
        files = self._files(catalog, backend.name, chunks)
        if self.parameters is not None and catalog.partitioned:
            relation, value = backend.relation_bound(catalog, files, _FILES)
            if value is not None:
                self.parameters[_FILES] = value
            self.signature.append(("relation", relation is not None))
        else:
            relation = backend.relation(catalog, files)
        if relation is None:
            table.replace(empty_relation(catalog, alias))
        else:
            relation.set("alias", exp.TableAlias(this=exp.to_identifier(alias, quoted=True)))
            table.replace(relation)
        if alias in self.radius:  # a near-neighbour partner (one reached by a match table has no radius)
            self._expand_zones(query, alias, catalog)
        self._add_chunk_predicates(query, join, alias, catalog, backend, chunks)

    def _expand_zones(self, query: exp.Select, alias: str, catalog: CatalogTable) -> None:
        """A near-neighbour partner's rows, each repeated for its declination zone and the two next to it
        (zones as tall as the match radius), so the join is a hash join on (chunk, zone) instead of a
        comparison of every pair of rows in a chunk; each matching pair still meets exactly once."""
        source = next(
            t
            for t in query.find_all(exp.Table, exp.Subquery)
            if t.alias_or_name == alias and t.find_ancestor(exp.From, exp.Join) is not None
        )
        height = max(self.radius.get(alias, 0.0), 1e-9)
        zone = _zone(exp.column(_quoted(catalog.dec_column or "dec")), height)
        zones = exp.Array(
            expressions=[
                exp.Sub(this=zone.copy(), expression=exp.Literal.number(1)),
                zone.copy(),
                exp.Add(this=zone.copy(), expression=exp.Literal.number(1)),
            ]
        )
        inner = source.copy()
        inner.set("alias", None)
        expanded = exp.select("*", exp.alias_(exp.Anonymous(this="UNNEST", expressions=[zones]), "_zone"))
        expanded = expanded.from_(
            inner
            if isinstance(inner, exp.Table)
            else exp.Subquery(this=inner.this, alias=exp.TableAlias(this=exp.to_identifier("_inner")))
        )
        source.replace(
            exp.Subquery(this=expanded, alias=exp.TableAlias(this=exp.to_identifier(alias, quoted=True)))
        )

    def _add_chunk_predicates(
        self,
        query: exp.Select,
        join: exp.Join | None,
        alias: str,
        catalog: CatalogTable,
        backend: ShardBackend,
        chunks: list[ChunkKey],
    ) -> None:
        """Chunk-locality predicates of a partitioned table, and (on shards that keep every load in one table)
        the committed-loads filter of every catalog table."""
        predicates: list[exp.Expression] = []
        column = _column
        if alias in self.overlap_aliases:
            primary = self.primary_alias or next(
                a
                for a in self.aliases
                if a not in self.overlap_aliases and getattr(self.aliases[a].catalog, "partitioned", False)
            )
            predicates.append(exp.EQ(this=column("_chunk", alias), expression=column("_chunk", primary)))
            primary_table = self.aliases[primary].catalog
            assert primary_table is not None
            if alias in self.radius:
                height = max(self.radius[alias], 1e-9)
                predicates.append(
                    exp.EQ(
                        this=column("_zone", alias),
                        expression=_zone(column(_quoted(primary_table.dec_column or "dec"), primary), height),
                    )
                )
        elif catalog.role == "director" or (catalog.role == "match" and alias == self.primary_alias):
            predicates.append(exp.Not(this=column("_overlap", alias)))
        elif catalog.role == "match":
            # its copy in the primary row's chunk (it has one in the chunk of each of its two objects)
            assert self.primary_alias is not None
            predicates.append(
                exp.EQ(this=column("_chunk", alias), expression=column("_chunk", self.primary_alias))
            )
        clipped = self._clipped_ranges(alias, chunks)
        if clipped is not None:
            if self.parameters is not None:
                predicates.append(self._bound_ranges(column("_healpix_29", alias), clipped))
            else:
                predicates.append(_range_predicate(column("_healpix_29", alias), clipped))
        values = self._chunk_values(alias, catalog, backend, chunks)
        if values is not None:
            predicates.append(self._chunk_list(column("_chunk", alias), values))
        if backend.shared_table:
            predicates.append(self._committed_rows(column("_load_id", alias), catalog))
        if not predicates:
            return
        condition = exp.and_(*predicates)
        if join is not None and (join.side or join.args.get("on") is not None):  # hash-joinable in the ON
            join.set("on", exp.and_(join.args["on"], condition) if join.args.get("on") else condition)
        else:
            query.where(condition, copy=False)

    def _files(self, catalog: CatalogTable, shard: str, chunks: list[ChunkKey]) -> list[str]:
        data = self.snapshot.chunks[catalog.name]
        if catalog.partitioned:
            return [f for key in chunks for f in data.files.get((shard, *key), [])]
        return data.replicated_files.get(shard, [])

    def _clipped_ranges(self, alias: str, chunks: list[ChunkKey]) -> np.ndarray | None:
        """The alias's `_healpix_29` ranges within the chunks (None: no spatial restriction)."""
        ranges = self.ranges.get(alias)
        if ranges is None:
            return None
        from dms.query.restrict import intersect_ranges

        shard_ranges = np.array([_chunk_range(k) for k in chunks], np.int64).reshape(-1, 2)
        return intersect_ranges(merge_ranges(ranges), merge_ranges(shard_ranges))

    def _chunk_values(
        self, alias: str, catalog: CatalogTable, backend: ShardBackend, chunks: list[ChunkKey]
    ) -> list[int] | None:
        """The `_chunk` values a shared-table shard must filter on (its table also holds the replicas of
        other shards' chunks), or None when the ranges or the whole table already select the rows."""
        if not (backend.shared_table and catalog.partitioned and alias not in self.overlap_aliases):
            return None
        total = self.snapshot.chunks[catalog.name]
        on_shard = int((total.shard == backend.name).sum())
        if catalog.replicas > 1 or (alias not in self.ranges and on_shard and len(chunks) < on_shard):
            return [int(nuniq(o, p)) for o, p in chunks]
        return None

    def bound_values(
        self, alias: str, catalog: CatalogTable, backend: ShardBackend, chunks: list[ChunkKey]
    ) -> tuple[tuple[tuple[str, int], ...], dict[str, Any]]:
        """In parameter mode, the signature and the parameters that building the per-shard query of one
        partitioned alias would give, without building it (the fast path's text is then looked up)."""
        params: dict[str, Any] = {}
        signature: list[tuple[str, int]] = []
        relation, value = backend.relation_bound(catalog, self._files(catalog, backend.name, chunks), _FILES)
        if value is not None:
            params[_FILES] = value
        signature.append(("relation", relation is not None))
        clipped = self._clipped_ranges(alias, chunks)
        if clipped is not None:
            clipped = _fewer_ranges(clipped)
            slots = _padded(len(clipped))
            signature.append(("ranges", slots))
            for i in range(slots):
                lo, hi = clipped[min(i, len(clipped) - 1)].tolist()
                params[f"dms_r{i}lo"], params[f"dms_r{i}hi"] = int(lo), int(hi)
        values = self._chunk_values(alias, catalog, backend, chunks)
        if values is not None:
            slots = _padded(len(values))
            signature.append(("chunks", slots))
            for i in range(slots):
                params[f"dms_c{i}"] = values[min(i, len(values) - 1)]
        return tuple(signature), params

    def _bound_ranges(self, column: exp.Column, ranges: np.ndarray) -> exp.Expression:
        """The ranges as placeholders, padded (by repeating the last) to a power of two of them so that few
        texts serve every cone."""
        assert self.parameters is not None
        ranges = _fewer_ranges(ranges)
        slots = _padded(len(ranges))
        self.signature.append(("ranges", slots))
        if not slots:
            return exp.false()
        terms = []
        for i in range(slots):
            lo, hi = ranges[min(i, len(ranges) - 1)].tolist()
            self.parameters[f"dms_r{i}lo"], self.parameters[f"dms_r{i}hi"] = int(lo), int(hi)
            terms.append(
                exp.Between(
                    this=column.copy(),
                    low=exp.Placeholder(this=f"dms_r{i}lo"),
                    high=exp.Placeholder(this=f"dms_r{i}hi"),
                )
            )
        return exp.paren(exp.or_(*terms)) if len(terms) > 1 else terms[0]

    def _chunk_list(self, column: exp.Column, values: list[int]) -> exp.Expression:
        if self.parameters is None:
            return exp.In(this=column, expressions=[exp.Literal.number(v) for v in values])
        slots = _padded(len(values))
        self.signature.append(("chunks", slots))
        names = [f"dms_c{i}" for i in range(slots)]
        for i, name in enumerate(names):
            self.parameters[name] = values[min(i, len(values) - 1)]
        return exp.In(this=column, expressions=[exp.Placeholder(this=n) for n in names])

    def _committed_rows(self, load_id: exp.Column, catalog: CatalogTable) -> exp.Expression:
        """Rows of a shared-table shard a query may read: those of the loads committed as of the snapshot,
        named one by one, so rows of a load still being written, or of one that failed, are never read."""
        committed = self.snapshot.committed_loads.get(catalog.name, [])
        if not committed:
            return exp.false()
        return exp.In(this=load_id, expressions=[exp.Literal.number(i) for i in committed])


def _column(name: str | exp.Identifier, alias: str) -> exp.Column:
    """`alias.name` with the alias quoted: a table alias the user quoted ("objA") keeps its case."""
    return exp.column(name, exp.to_identifier(alias, quoted=True))


def _quoted(name: str) -> exp.Identifier:
    """A registry column name as written in the catalog (`decl_PS`), quoted for every shard dialect."""
    return exp.to_identifier(name, quoted=True)


def _zone(dec: exp.Expression, height: float) -> exp.Expression:
    """The declination zone of a position: floor((dec + 90) / height), as a BIGINT."""
    shifted = exp.paren(exp.Add(this=dec, expression=exp.Literal.number(90)))
    return exp.Cast(
        this=exp.Floor(this=exp.Div(this=shifted, expression=exp.Literal.number(repr(height)))),
        to=exp.DataType.build("BIGINT"),
    )


def _chunk_range(key: ChunkKey) -> tuple[int, int]:
    order, pixel = key
    shift = 2 * (29 - order)
    return pixel << shift, ((pixel + 1) << shift) - 1


def _range_predicate(column: exp.Column, ranges: np.ndarray) -> exp.Expression:
    if len(ranges) == 0:
        return exp.false()
    ranges = _fewer_ranges(ranges)
    terms = [
        exp.Between(this=column.copy(), low=exp.Literal.number(int(lo)), high=exp.Literal.number(int(hi)))
        for lo, hi in ranges.tolist()
    ]
    return exp.paren(exp.or_(*terms)) if len(terms) > 1 else terms[0]


def _padded(count: int) -> int:
    """The next power of two (0 stays 0)."""
    return 0 if count == 0 else 1 << (count - 1).bit_length()


def _fewer_ranges(ranges: np.ndarray) -> np.ndarray:
    """At most MAX_RANGES ranges: the smallest gaps merged (a few more rows tested, a shorter query)."""
    while len(ranges) > MAX_RANGES:  # merge the smallest gaps: a few more rows tested, a shorter query
        gaps = ranges[1:, 0] - ranges[:-1, 1]
        cut = np.sort(gaps)[len(ranges) - MAX_RANGES - 1]
        keep = np.r_[True, gaps > cut]
        starts = ranges[keep, 0]
        ends = np.r_[ranges[np.flatnonzero(keep)[1:] - 1, 1], ranges[-1, 1]]
        ranges = np.stack([starts, ends], axis=1)
    return ranges


def _shipped_table(ref: TableRef, alias: str) -> exp.Table:
    name = f"_up_{ref.name}" if ref.kind == "upload" else ref.name
    return exp.Table(
        this=exp.to_identifier(name), alias=exp.TableAlias(this=exp.to_identifier(alias, quoted=True))
    )


def empty_relation(table: CatalogTable, alias: str) -> exp.Expression:
    """A typed relation with the table's columns and no rows (for shards or queries without its data)."""
    columns = [
        exp.alias_(
            exp.Cast(this=exp.null(), to=exp.DataType.build(SQL_TYPES[c.datatype])), c.name, quoted=True
        )
        for c in table.columns
    ]
    if table.partitioned:
        columns += [
            exp.alias_(exp.Cast(this=exp.null(), to=exp.DataType.build(t)), n)
            for n, t in (("_healpix_29", "BIGINT"), ("_chunk", "BIGINT"), ("_overlap", "BOOLEAN"))
        ]
    select = exp.select(*columns).where(exp.false())
    return exp.Subquery(this=select, alias=exp.TableAlias(this=exp.to_identifier(alias, quoted=True)))


def normalize_partial(table: pa.Table) -> pa.Table:
    """Partial results from different shard kinds in common types: exact decimals become int64 (or double)."""
    columns = []
    for column in table.columns:
        if pa.types.is_decimal(column.type):
            if column.type.scale == 0:
                try:
                    column = pc.cast(column, pa.int64())
                except pa.ArrowInvalid:
                    column = pc.cast(column, pa.float64())
            else:
                column = pc.cast(column, pa.float64())
        columns.append(column)
    return pa.Table.from_arrays(columns, names=table.column_names)
