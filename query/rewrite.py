"""Rewrite: split one bound SELECT into the query each shard runs and the query that merges their results.

Aggregates are decomposed (COUNT -> SUM of counts, AVG -> SUM/COUNT, MIN/MAX of MIN/MAX, COUNT(DISTINCT x)
-> x pushed down as a grouping key and counted at the merge); GROUP BY keys, HAVING, ORDER BY (including by
an aggregate), DISTINCT, LIMIT and OFFSET are applied at the merge. Shards get LIMIT offset+limit when that
is correct (no aggregation), so a top-N query moves N rows per shard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from sqlglot import exp

from dms.query.errors import QueryRefused

PARTIALS = "_partials"
DECOMPOSABLE = (exp.Count, exp.Sum, exp.Min, exp.Max, exp.Avg)
VARIANCE = (exp.Stddev, exp.StddevSamp, exp.StddevPop, exp.Variance, exp.VariancePop)


@dataclass
class Decomposition:
    shard: exp.Select
    merge: exp.Select
    aggregated: bool
    names: list[str] | None = None  # output names of a row query (its shard columns are _c0, _c1, ...)
    offset: int = 0
    limit: int | None = None

    def finish_single(self, partial: pa.Table) -> pa.Table:
        """The merge of a row query that ran on one shard only: the shard already applied DISTINCT, ORDER BY
        and LIMIT offset+limit, so only OFFSET, the limit and the output names remain."""
        assert self.names is not None
        table = partial.select([f"_c{i}" for i in range(len(self.names))]).rename_columns(self.names)
        return table.slice(self.offset, self.limit)


def _limit_value(select: exp.Select, key: str) -> int | None:
    node = select.args.get(key)
    if node is None:
        return None
    value = node.expression if isinstance(node, exp.Limit | exp.Offset) else node
    if isinstance(value, exp.Literal) and value.is_int:
        return int(value.this)
    raise QueryRefused(f"{key.upper()} must be a whole number")


def has_aggregates(select: exp.Select) -> bool:
    if select.args.get("group"):
        return True
    for node in (*select.expressions, select.args.get("having"), select.args.get("order")):
        if node is not None and any(
            _is_aggregate(a) and a.parent_select is select for a in node.find_all(exp.AggFunc)
        ):
            return True
    return False


def _is_aggregate(node: exp.Expression) -> bool:
    return isinstance(node, exp.AggFunc) and node.find_ancestor(exp.Window) is None


def decompose(select: exp.Select, max_rows: int | None) -> Decomposition:
    if any(select.find_all(exp.Window)):
        raise QueryRefused(
            "window functions cannot be evaluated across chunks; compute them on a result "
            "(e.g. in a subquery over a restricted set) or client-side"
        )
    if has_aggregates(select):
        return _decompose_aggregate(select)
    return _decompose_rows(select, max_rows)


def _output_name(projection: exp.Expression, index: int) -> str:
    return projection.alias_or_name or f"col{index}"


def _order_targets(select: exp.Select) -> list[tuple[exp.Ordered, int | None]]:
    """Each ORDER BY item and the projection it names (by alias or position), if any."""
    order = select.args.get("order")
    names = [p.alias_or_name for p in select.expressions]
    targets = []
    for item in order.expressions if order else []:
        key = item.this
        index = None
        if isinstance(key, exp.Literal) and key.is_int:
            index = int(key.this) - 1
            if not 0 <= index < len(names):
                raise QueryRefused(f"ORDER BY position {key.this} is not in the select list")
        elif isinstance(key, exp.Column) and not key.table and key.name in names:
            index = names.index(key.name)
        targets.append((item, index))
    return targets


def _decompose_rows(select: exp.Select, max_rows: int | None) -> Decomposition:
    shard = select.copy()
    projections = [p.copy() for p in select.expressions]
    names = [_output_name(p, i) for i, p in enumerate(projections)]
    shard_items: list[Any] = [
        exp.alias_(p.unalias() if isinstance(p, exp.Alias) else p, f"_c{i}")
        for i, p in enumerate(projections)
    ]
    merge_order: list[Any] = []
    for item, index in _order_targets(select):
        if index is None:
            shard_items.append(exp.alias_(item.this.copy(), f"_o{len(merge_order)}"))
            target = exp.column(f"_o{len(merge_order)}")
        else:
            target = exp.column(f"_c{index}")
        ordered = item.copy()
        ordered.set("this", target)
        merge_order.append(ordered)
    distinct = select.args.get("distinct")
    if distinct is not None and len(shard_items) > len(projections):
        raise QueryRefused("with SELECT DISTINCT, ORDER BY items must appear in the select list")
    shard.set("expressions", shard_items)
    limit, offset = _limit_value(select, "limit"), _limit_value(select, "offset")
    cap = None if max_rows is None else max_rows + 1
    wanted = None if limit is None else limit + (offset or 0)
    if cap is not None:
        wanted = cap + (offset or 0) if wanted is None else min(wanted, cap + (offset or 0))
    shard.set("offset", None)
    shard.set("limit", None if wanted is None else exp.Limit(expression=exp.Literal.number(wanted)))
    shard.set("order", exp.Order(expressions=[o.copy() for o in merge_order]) if merge_order else None)
    merge = exp.select(*[exp.alias_(exp.column(f"_c{i}"), n, quoted=True) for i, n in enumerate(names)])
    merge = merge.from_(PARTIALS)
    if distinct is not None:
        merge.set("distinct", exp.Distinct())
    if merge_order:
        merge.set("order", exp.Order(expressions=merge_order))
    if limit is not None:
        merge.set("limit", exp.Limit(expression=exp.Literal.number(limit)))
    if offset:
        merge.set("offset", exp.Offset(expression=exp.Literal.number(offset)))
    return Decomposition(shard, merge, aggregated=False, names=names, offset=offset or 0, limit=limit)


class _AggregateSplitter:
    """Collects group keys and partial aggregates; rewrites final expressions over the partial columns."""

    def __init__(self, select: exp.Select) -> None:
        group = select.args.get("group")
        self.group_keys: list[exp.Expression] = [g.copy() for g in (group.expressions if group else [])]
        self.distinct_keys: list[exp.Expression] = []
        self.partials: list[exp.Expression] = []

    def _shard_side(self, expression: exp.Expression) -> exp.Expression:
        """`expression` as a shard computes it: `final` put the group keys' `_g<i>` columns in place of the
        keys before the aggregates were split, and a shard's SELECT cannot name its own output column."""
        keys = {f"_g{i}": key for i, key in enumerate(self.group_keys)}

        def restore(node: exp.Expression) -> exp.Expression:
            if isinstance(node, exp.Column) and not node.table and node.name in keys:
                return keys[node.name].copy()
            return node

        return expression.transform(restore)

    def _partial(self, expression: exp.Expression) -> exp.Column:
        expression = self._shard_side(expression)
        for i, existing in enumerate(self.partials):
            if existing == expression:
                return exp.column(f"_a{i}")
        self.partials.append(expression)
        return exp.column(f"_a{len(self.partials) - 1}")

    def _distinct_key(self, expression: exp.Expression) -> exp.Column:
        expression = self._shard_side(expression)
        for i, existing in enumerate(self.distinct_keys):
            if existing == expression:
                return exp.column(f"_d{i}")
        self.distinct_keys.append(expression)
        return exp.column(f"_d{len(self.distinct_keys) - 1}")

    def final(self, expression: exp.Expression) -> exp.Expression:
        """The expression evaluated at the merge, over partial columns."""
        expression = expression.copy()
        for i, key in enumerate(self.group_keys):
            expression = expression.transform(lambda n, k=key, i=i: exp.column(f"_g{i}") if n == k else n)
        return expression.transform(self._merge_aggregate)

    def _merge_aggregate(self, node: exp.Expression) -> exp.Expression:
        if not _is_aggregate(node):
            if isinstance(node, exp.Column) and node.table and not node.name.startswith("_"):
                raise QueryRefused(f"column {node.sql()} must appear in GROUP BY or be used in an aggregate")
            return node
        assert isinstance(node, exp.AggFunc)
        argument = node.this
        if isinstance(argument, exp.Distinct):
            inner = argument.expressions[0] if len(argument.expressions) == 1 else None
            if inner is None or not isinstance(node, DECOMPOSABLE):
                raise QueryRefused(f"{node.sql()} cannot be computed across chunks")
            key = self._distinct_key(inner)
            return type(node)(this=exp.Distinct(expressions=[key]))
        if isinstance(node, exp.Count):
            return exp.func("COALESCE", exp.Sum(this=self._partial(node.copy())), exp.Literal.number(0))
        if isinstance(node, exp.Sum):
            return exp.Sum(this=self._partial(node.copy()))
        if isinstance(node, exp.Min | exp.Max):
            return type(node)(this=self._partial(node.copy()))
        if isinstance(node, exp.Avg):
            total = exp.Sum(this=self._partial(exp.Sum(this=argument.copy())))
            count = exp.Sum(this=self._partial(exp.Count(this=argument.copy())))
            return exp.Div(
                this=exp.Cast(this=total, to=exp.DataType.build("double")),
                expression=exp.func("NULLIF", count, exp.Literal.number(0)),
            )
        if isinstance(node, VARIANCE):
            return self._variance(node, argument)
        raise QueryRefused(
            f"aggregate {node.sql()} cannot be computed across chunks; supported: COUNT, SUM, MIN, MAX, AVG, "
            "STDDEV/VARIANCE and COUNT(DISTINCT ...)"
        )

    def _variance(self, node: exp.AggFunc, argument: exp.Expression) -> exp.Expression:
        value = exp.Cast(this=argument.copy(), to=exp.DataType.build("double"))
        n = exp.Sum(this=self._partial(exp.Count(this=argument.copy())))
        s = exp.Sum(this=self._partial(exp.Sum(this=value.copy())))
        ss = exp.Sum(this=self._partial(exp.Sum(this=exp.Mul(this=value.copy(), expression=value.copy()))))
        population = isinstance(node, exp.StddevPop | exp.VariancePop)
        denominator = n.copy() if population else exp.Sub(this=n.copy(), expression=exp.Literal.number(1))
        numerator = exp.Sub(
            this=ss,
            expression=exp.Div(
                this=exp.Mul(this=s.copy(), expression=s.copy()),
                expression=exp.func("NULLIF", n, exp.Literal.number(0)),
            ),
        )
        variance = exp.Div(
            this=exp.func("GREATEST", numerator, exp.Literal.number(0)),
            expression=exp.func("NULLIF", denominator, exp.Literal.number(0)),
        )
        if isinstance(node, exp.Stddev | exp.StddevSamp | exp.StddevPop):
            return exp.func("SQRT", variance)  # type: ignore[no-any-return, return-value, unused-ignore]
        return variance


def _decompose_aggregate(select: exp.Select) -> Decomposition:
    splitter = _AggregateSplitter(select)
    projections: list[tuple[Any, str]] = [
        (p.unalias() if isinstance(p, exp.Alias) else p, _output_name(p, i))
        for i, p in enumerate(select.expressions)
    ]
    finals = [exp.alias_(splitter.final(e), n, quoted=True) for e, n in projections]
    having = select.args.get("having")
    final_having = splitter.final(having.this) if having else None
    order_items = []
    for item, index in _order_targets(select):
        ordered = item.copy()
        ordered.set(
            "this",
            exp.column(projections[index][1], quoted=True)
            if index is not None
            else splitter.final(item.this),
        )
        order_items.append(ordered)
    shard = select.copy()
    shard_items = [exp.alias_(k.copy(), f"_g{i}") for i, k in enumerate(splitter.group_keys)]
    shard_items += [exp.alias_(k.copy(), f"_d{i}") for i, k in enumerate(splitter.distinct_keys)]
    shard_items += [exp.alias_(p.copy(), f"_a{i}") for i, p in enumerate(splitter.partials)]
    if not shard_items:
        shard_items = [exp.alias_(exp.Count(this=exp.Star()), "_a0")]
    shard.set("expressions", shard_items)
    keys = [*splitter.group_keys, *splitter.distinct_keys]
    shard.set("group", exp.Group(expressions=[k.copy() for k in keys]) if keys else None)
    for key in ("having", "order", "limit", "offset", "distinct"):
        shard.set(key, None)
    merge = exp.select(*finals).from_(PARTIALS)
    if splitter.group_keys:
        merge.set(
            "group", exp.Group(expressions=[exp.column(f"_g{i}") for i in range(len(splitter.group_keys))])
        )
    if final_having is not None:
        merge.set("having", exp.Having(this=final_having))
    if select.args.get("distinct"):
        merge.set("distinct", exp.Distinct())
    if order_items:
        merge.set("order", exp.Order(expressions=order_items))
    for key in ("limit", "offset"):
        if select.args.get(key):
            merge.set(key, select.args[key].copy())
    return Decomposition(shard, merge, aggregated=True)
