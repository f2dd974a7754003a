"""Plan: decide whether a flat SELECT over partitioned tables is chunk-local, and how.

A join of partitioned tables is evaluated chunk by chunk only when every table is tied to one primary alias:
- a child table joined to its director on director_key = id (or two children of one director on their keys,
  or a director to itself on its id): matching rows share a chunk;
- a director reached through a match table tied to the primary and to it on their keys (Qserv's match
  tables, stored in the chunks of both directors): its rows are read with their overlap copies;
- a director within the overlap radius of the primary (scisql_angSep(a.ra, a.dec, b.ra, b.dec) < r, or
  scisql_s2PtInCircle(b.ra, b.dec, a.ra, a.dec, r) = 1, with r no larger than b's overlap): b's rows are read
  with their overlap copies, restricted to the primary row's chunk.
Anything else is refused with the reason and what would make it evaluable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot import exp

from dms.query.errors import QueryRefused
from dms.query.restrict import constant
from dms.schema.catalog import CatalogTable


@dataclass
class JoinPlan:
    primary: str
    overlap_aliases: set[str] = field(default_factory=set)
    radius: dict[str, float] = field(default_factory=dict)  # match radius (deg) of each overlap alias


def conjuncts(node: exp.Expression | None) -> list[exp.Expression]:
    if node is None:
        return []
    if isinstance(node, exp.Where | exp.Paren):
        return conjuncts(node.this)
    if isinstance(node, exp.And):
        return conjuncts(node.this) + conjuncts(node.expression)
    return [node]


def _column_of(node: exp.Expression, tables: dict[str, CatalogTable]) -> tuple[str, str] | None:
    if isinstance(node, exp.Column) and node.table in tables:
        return node.table, node.name.lower()
    return None


class JoinAnalyzer:
    def __init__(self, select: exp.Select, tables: dict[str, CatalogTable]) -> None:
        self.select = select
        self.tables = tables  # alias -> partitioned table
        self.key_edges: set[frozenset[str]] = set()
        self.nn_edges: dict[tuple[str, str], float] = {}  # (a, b) -> radius in degrees, b may use overlap
        predicates = conjuncts(select.args.get("where"))
        for join in select.args.get("joins") or []:
            predicates += conjuncts(join.args.get("on"))
            for column in join.args.get("using") or []:
                self._using(join, column)
        for predicate in predicates:
            self._edge(predicate)

    def _key(self, alias: str, column: str) -> str | None:
        """Which object a column identifies: the director table's name, for ids and director keys."""
        table = self.tables[alias]
        if table.role == "director" and table.id_column and column == table.id_column.lower():
            return table.name
        if (
            table.role in ("child", "match")
            and table.director_key_column
            and column == table.director_key_column.lower()
        ):
            return table.director_table
        if (
            table.role == "match"
            and table.director_key2_column
            and column == table.director_key2_column.lower()
        ):
            return table.director_table2
        return None

    def _through_match(self, primary: str, other: str) -> bool:
        """Whether `other` is a director reached from the primary through a match table tied to both on their
        keys: its row is then in the primary row's chunk or that chunk's overlap (a match pair is never
        farther apart than the directors' overlap)."""
        if self.tables[other].role != "director":
            return False
        for alias, table in self.tables.items():
            if table.role != "match" or alias in (primary, other):
                continue
            directors = {table.director_table, table.director_table2}
            if (
                {self.tables[primary].name, self.tables[other].name} <= directors
                and frozenset((primary, alias)) in self.key_edges
                and frozenset((alias, other)) in self.key_edges
            ):
                return True
        return False

    def _using(self, join: exp.Join, column: exp.Expression) -> None:
        right = join.this.alias_or_name
        name = column.name.lower()
        for left in self.tables:
            if left != right and right in self.tables:
                key_l, key_r = self._key(left, name), self._key(right, name)
                if key_l is not None and key_l == key_r:
                    self.key_edges.add(frozenset((left, right)))

    def _edge(self, predicate: exp.Expression) -> None:
        if isinstance(predicate, exp.EQ):
            left, right = (
                _column_of(predicate.this, self.tables),
                _column_of(predicate.expression, self.tables),
            )
            if left and right and left[0] != right[0]:
                key_l, key_r = self._key(*left), self._key(*right)
                if key_l is not None and key_l == key_r:
                    self.key_edges.add(frozenset((left[0], right[0])))
                    return
            call, one = predicate.this, predicate.expression
            if constant(call) == 1:
                call, one = one, call
            if (
                constant(one) == 1
                and isinstance(call, exp.Anonymous)
                and call.name.lower() == "scisql_s2ptincircle"
            ):
                args = call.expressions
                radius = constant(args[4]) if len(args) == 5 else None
                self._nn(args[:2], args[2:4], radius)
        elif isinstance(predicate, exp.LT | exp.LTE | exp.GT | exp.GTE):
            call, bound = predicate.this, predicate.expression
            if isinstance(predicate, exp.GT | exp.GTE):
                call, bound = bound, call
            if (
                isinstance(call, exp.Anonymous)
                and call.name.lower() == "scisql_angsep"
                and len(call.expressions) == 4
            ):
                self._nn(call.expressions[:2], call.expressions[2:], constant(bound))

    def _position_alias(self, args: list[exp.Expression]) -> str | None:
        ra, dec = (_column_of(a, self.tables) for a in args)
        if ra is None or dec is None or ra[0] != dec[0]:
            return None
        table = self.tables[ra[0]]
        if (
            table.role != "director"
            or (table.ra_column or "").lower() != ra[1]
            or ((table.dec_column or "").lower() != dec[1])
        ):
            return None
        return ra[0]

    def _nn(self, first: list[exp.Expression], second: list[exp.Expression], radius: float | None) -> None:
        a, b = self._position_alias(first), self._position_alias(second)
        if a and b and a != b and radius is not None:
            for pair in ((a, b), (b, a)):
                self.nn_edges[pair] = min(radius, self.nn_edges.get(pair, radius))

    def plan(self) -> JoinPlan:
        aliases = list(self.tables)
        if len(aliases) == 1:
            return JoinPlan(aliases[0])
        reasons = []
        for primary in sorted(aliases, key=lambda a: self.tables[a].role != "director"):
            overlap: set[str] = set()
            radii: dict[str, float] = {}
            ok = True
            for other in aliases:
                if other == primary or frozenset((primary, other)) in self.key_edges:
                    continue
                if self._through_match(primary, other):
                    overlap.add(other)  # matched by id, no radius: no zone join
                    continue
                radius = self.nn_edges.get((primary, other))
                margin = self.tables[other].overlap_arcsec / 3600.0
                if radius is not None and radius <= margin:
                    overlap.add(other)
                    radii[other] = radius
                    continue
                ok = False
                if radius is not None:
                    reasons.append(
                        f"the match radius {radius * 3600:g} arcsec between {primary} and {other} "
                        f"exceeds {self.tables[other].name}'s overlap of "
                        f"{self.tables[other].overlap_arcsec:g} arcsec"
                    )
                else:
                    reasons.append(f"{primary} and {other} are not joined chunk-locally")
                break
            if ok:
                self._check_outer_joins(overlap)
                return JoinPlan(primary, overlap, radii)
        detail = reasons[0] if reasons else "the tables are not joined chunk-locally"
        raise QueryRefused(
            f"this join cannot be evaluated chunk by chunk: {detail}. Join a child table to its director on "
            "its director key (e.g. s.objectId = o.objectId), or match two director tables by position with "
            "scisql_angSep(a.ra, a.dec, b.ra, b.dec) < r (ADQL: DISTANCE(...) < r) within the overlap radius"
        )

    def _check_outer_joins(self, overlap: set[str]) -> None:
        for join in self.select.args.get("joins") or []:
            side = (join.side or "").upper()
            alias = join.this.alias_or_name
            if side in ("RIGHT", "FULL") and (overlap or alias not in self.tables):
                raise QueryRefused(
                    "RIGHT and FULL OUTER joins with a near-neighbour match cannot be evaluated "
                    "chunk by chunk; write it as a LEFT JOIN from the primary table"
                )
            if side == "LEFT" and alias not in overlap and alias in self.tables and overlap:
                continue
