"""The fast path: a query of a shape seen before, answered from the first one's plan with its new literals
bound as parameters.

A cone at new coordinates or a lookup of another id has the shape (dms.query.shape) of one planned before.
Its `ShapeTemplate` keeps what the planner made of the first one: the bound WHERE clause (to find the new
query's chunks: healpy's coverage or the director index, a few microseconds) and the per-shard query with
each literal of the WHERE clause as a named placeholder. So the new query costs no parse, no binding and
no rewrite: the chunk-dependent parts (Parquet files, `_healpix_29` ranges, chunk lists) are bound too
(`ShardSql.parameters`), and the rendered text is kept per shard and per padded length of those lists.

Which literal of the text is which node of the plan is known from the parser's positions (sqlglot's
`meta["start"]`), checked against the literal's text. A literal that cannot be matched, that lies outside
the WHERE clause (LIMIT, the select list) or whose value the planner used otherwise is *fixed*: the
template serves only queries where it has the same text. Only a flat SELECT over one partitioned table
without aggregates takes this path: on one shard it has no merge step, on several the partial results
are merged as the first query's plan says. Anything else is planned as usual.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from sqlglot import exp

from dms.query.adql import frames
from dms.query.registry import Snapshot
from dms.query.restrict import RestrictionFinder
from dms.query.rewrite import Decomposition
from dms.query.shape import Literal, Shape
from dms.query.shape_memo import ShapeMemo
from dms.query.shard_plan import ChunkKey, QueryPlan
from dms.query.sources import ShardSql
from dms.query.validate import TableRef
from dms.schema.catalog import CatalogTable
from dms.shards import ShardBackend

log = logging.getLogger(__name__)
TEMPLATE_CACHE_SIZE = 256
"""Shapes an engine keeps templates of (the least recently used go first)."""
_PG_PLACEHOLDER = re.compile(r"%\(dms_\w+\)s")


@dataclass(frozen=True)
class FastQuery:
    """One per-shard query of the fast path: its shard, chunks, text and parameters."""

    shard: str
    chunks: tuple[ChunkKey, ...]
    sql: str
    params: dict[str, Any]


@dataclass
class ShapeTemplate:
    """The plan of one query shape with the WHERE clause's literals as parameters."""

    alias: str
    table: CatalogTable
    select: exp.Select
    aliases: dict[str, TableRef]
    where: exp.Expression
    shard_template: exp.Select
    decomposition: Decomposition
    merge: str
    """The merge database's query over the partial results of several shards."""
    slot_of_start: dict[int, int]
    """The first query's literal positions (as the plan's nodes remember them) -> literal number."""
    parameters: frozenset[int]
    fixed: dict[int, tuple[str, str]]
    """Literal number -> (kind, text) it must have for this template to apply."""
    file_tables: tuple[CatalogTable, ...]
    texts: dict[Hashable, str | None] = field(default_factory=dict)
    """(shard, signature) -> rendered per-shard text (None: not usable with parameters)."""

    def bind(
        self, shape: Shape, snapshot: Snapshot, stores: dict[str, ShardBackend]
    ) -> list[FastQuery] | None:
        """The per-shard queries of a query of this shape (one per shard its chunks are on), or None when
        this path does not apply to it (a fixed literal differs, or no chunk is read)."""
        literals = shape.literals
        for i, fixed in self.fixed.items():
            if (literals[i].kind, literals[i].text) != fixed:
                log.debug("shape template: literal %d is fixed at %r", i, fixed[1])
                return None
        where = self.where.copy()
        for node in where.find_all(exp.Literal):
            slot = self.slot_of_start.get(node.meta.get("start", -1))
            if slot is not None and slot in self.parameters:
                node.set("this", literals[slot].text)
        restriction = RestrictionFinder(self.alias, self.table).find(where)
        builder = ShardSql(self.select, self.aliases, snapshot, stores)
        builder.primary_alias = self.alias
        chunk_sets = builder.choose_chunks(self.table, restriction.ranges, restriction.ids)
        if not chunk_sets:
            return None  # the usual path answers from the empty relation
        builder.ranges = {self.alias: restriction.ranges} if restriction.ranges is not None else {}
        user = {f"dms_p{i}": literals[i].value for i in self.parameters}
        queries = []
        for shard, chunks in sorted(chunk_sets.items()):
            builder.parameters, builder.signature = {}, []
            signature, bound = builder.bound_values(self.alias, self.table, stores[shard], chunks)
            key = (shard, signature)
            if key not in self.texts:  # built once per shard and padded list lengths
                expression = builder.shard_expression(self.shard_template, shard, chunks)
                assert tuple(builder.signature) == signature and builder.parameters == bound
                self.texts[key] = _render(expression, stores[shard].dialect)
            text = self.texts[key]
            if text is None:
                return None
            queries.append(FastQuery(shard, tuple(chunks), text, {**user, **bound}))
        return queries


def _render(expression: exp.Select, dialect: str) -> str | None:
    text = expression.sql(dialect)
    if dialect == "postgres" and "%" in _PG_PLACEHOLDER.sub("", text):
        return None  # a % of the query itself would need escaping for psycopg's placeholders
    return text


def build_template(
    shape: Shape,
    select: exp.Select,
    aliases: dict[str, TableRef],
    plan: QueryPlan,
    stores: dict[str, ShardBackend],
    *,
    bind_strings: bool = True,
) -> ShapeTemplate | None:
    """The template of a planned flat SELECT, or None when its shape cannot take the fast path; with
    `bind_strings` False every string literal is fixed."""
    if plan.strategy != "chunks" or plan.aggregated or plan.overlap_aliases or plan.decomposition is None:
        return None
    if plan.merge is None:
        return None
    if len(aliases) != 1 or select.args.get("joins") or plan.primary_alias not in aliases:
        return None
    alias = plan.primary_alias
    table = aliases[alias].catalog
    where = select.args.get("where")
    if table is None or not table.partitioned or table.role == "match" or where is None:
        return None
    kinds = {stores[s].dialect for s in stores if stores[s].kind == table.storage_kind}
    strings_bind = bind_strings and kinds <= {"postgres"}  # DuckDB types a bound string as VARCHAR
    slot_of_start = {lit.start: i for i, lit in enumerate(shape.literals)}
    shard = plan.decomposition.shard.copy()
    usable: dict[int, bool] = {}
    for tree, top in ((select, select), (shard, shard)):
        for node in tree.find_all(exp.Literal):
            slot = slot_of_start.get(node.meta.get("start", -1))
            if slot is None:
                continue
            literal = shape.literals[slot]
            ok = (
                node.this == literal.text
                and node.is_string == (literal.kind == "string")
                and (strings_bind or literal.kind != "string")
                and node.find_ancestor(exp.Where) is top.args.get("where")
                and node.parent_select is top
            )
            usable[slot] = usable.get(slot, True) and ok
    parameters = frozenset(slot for slot, ok in usable.items() if ok)
    for node in list(shard.find_all(exp.Literal)):
        slot = slot_of_start.get(node.meta.get("start", -1))
        if slot in parameters:
            node.replace(exp.Placeholder(this=f"dms_p{slot}"))
    fixed = {i: (lit.kind, lit.text) for i, lit in enumerate(shape.literals) if i not in parameters}
    return ShapeTemplate(
        alias=alias,
        table=table,
        select=select,
        aliases=aliases,
        where=where.copy(),
        shard_template=shard,
        decomposition=plan.decomposition,
        merge=plan.merge or "",
        slot_of_start=slot_of_start,
        parameters=parameters,
        fixed=fixed,
        file_tables=plan.file_tables,
    )


def literal_blind(text: str, shape: Shape, parsed: exp.Expr, parse: Callable[[str], exp.Expr]) -> bool:
    """Whether `parse` (an ADQL translation) carries the query's numbers into `parsed` as they are, and
    uses them for nothing else: the same text with every number changed must parse to `parsed` with
    those numbers changed. A translation that computes from a number (a folded constant, a region's
    HEALPix cells, a frame transformation) fails the check, so its shape never takes the fast path."""
    changed = {i: _other_number(lit) for i, lit in enumerate(shape.literals) if lit.kind != "string"}
    if not changed:
        return True
    pieces, position = [], 0
    for i, value in changed.items():
        literal = shape.literals[i]
        pieces += [text[position : literal.start], value]
        position = literal.end
    pieces.append(text[position:])
    try:
        with frames.collect_notes() as notes:  # the probe's notes are no part of the query's answer
            probe = parse("".join(pieces))
    except Exception:  # any refusal: the translation reads these numbers
        return False
    if notes:
        return False
    slot_of_start = {lit.start: i for i, lit in enumerate(shape.literals)}
    expected = parsed.copy()
    for node in expected.find_all(exp.Literal):
        slot = slot_of_start.get(node.meta.get("start", -1))
        if slot in changed and not node.is_string and node.this == shape.literals[slot].text:
            node.set("this", changed[slot])
    return expected == probe and expected.sql("postgres") == probe.sql("postgres")


def _other_number(literal: Literal) -> str:
    """A number of the same kind and length as `literal`'s, but another value."""
    last = literal.text[-1]
    if not last.isdigit():  # "10." : a decimal without fraction digits
        return literal.text + "5"
    return literal.text[:-1] + str((int(last) + 3) % 10)


class TemplateCache(ShapeMemo[ShapeTemplate]):
    """A thread-safe LRU map of (shape, result cap, registry generation) to templates; emptied when the
    generation changes (a load, drop or placement change), since no older key can be asked again."""

    def __init__(self, size: int = TEMPLATE_CACHE_SIZE) -> None:
        super().__init__(size)
