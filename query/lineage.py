"""Which table column each output column of a query is, so units and UCDs come from the column's own table.

A column of the result has an origin only when it is that column, passed through unchanged: named (perhaps
aliased) in the SELECT list, or selected by ``*``, possibly through derived tables and CTEs. An expression,
an aggregate or an uploaded column has none, so it borrows no metadata; nor does a name that could belong to
two tables. Set operations take the origins of their first branch, as their column names are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from sqlglot import exp

if TYPE_CHECKING:
    from dms.schema.catalog import CatalogTable


@dataclass(frozen=True)
class Origin:
    """A column of a published table: `table` as the catalogue names it (``schema.table``), `column` exact."""

    table: str
    column: str


@dataclass(frozen=True)
class Source:
    """A table a query reads: its published name (None for an upload) and its columns in order."""

    name: str | None
    columns: Sequence[str]


# (schema or None, table) as the query wrote them -> the table, or None when the name is not known.
Lookup = Callable[[str | None, str], Source | None]
Pairs = list[tuple[str, Origin | None]]


def output_origins(query: exp.Expression, lookup: Lookup) -> list[Origin | None] | None:
    """The origin of each output column of `query`, in order; None when the outputs cannot be listed
    (an unknown table, a table function, ...)."""
    pairs = _outputs(query, lookup, {})
    return None if pairs is None else [origin for _, origin in pairs]


def column_origin(column: exp.Column, lookup: Lookup) -> Origin | None:
    """The origin of a column reference inside a query (for IN_UNIT): resolved in its own SELECT's FROM."""
    select = column.find_ancestor(exp.Select)
    if select is None:
        return None
    sources = _sources(select, lookup, _visible_ctes(select))
    return None if sources is None else _find(sources, column.table, column.name)


def _visible_ctes(node: exp.Expression) -> dict[str, exp.Expression]:
    ctes: dict[str, exp.Expression] = {}
    chain: list[exp.Expression] = []
    scope = node
    while scope is not None:
        chain.append(scope)
        scope = scope.parent  # type: ignore[assignment]
    for ancestor in reversed(chain):  # inner WITHs shadow outer ones
        with_ = ancestor.args.get("with_")
        if isinstance(with_, exp.With):
            ctes.update({cte.alias_or_name.lower(): cte.this for cte in with_.expressions})
    return ctes


def _outputs(node: exp.Expression, lookup: Lookup, ctes: dict[str, exp.Expression]) -> Pairs | None:
    while isinstance(node, exp.Subquery):
        node = node.this
    with_ = node.args.get("with_")
    if isinstance(with_, exp.With):
        ctes = {**ctes, **{cte.alias_or_name.lower(): cte.this for cte in with_.expressions}}
    if isinstance(node, exp.SetOperation):
        return _outputs(node.this, lookup, ctes)
    if not isinstance(node, exp.Select):
        return None
    sources = _sources(node, lookup, ctes)
    if sources is None:
        return None
    pairs: Pairs = []
    for projection in node.expressions:
        if isinstance(projection, exp.Star):
            pairs.extend(pair for _, columns in sources for pair in columns)
        elif isinstance(projection, exp.Column) and isinstance(projection.this, exp.Star):
            chosen = [columns for alias, columns in sources if alias == projection.table.lower()]
            if len(chosen) != 1:
                return None
            pairs.extend(chosen[0])
        else:
            inner = projection.this if isinstance(projection, exp.Alias) else projection
            origin = _find(sources, inner.table, inner.name) if isinstance(inner, exp.Column) else None
            pairs.append((projection.alias_or_name, origin))
    return pairs


def _sources(
    select: exp.Select, lookup: Lookup, ctes: dict[str, exp.Expression]
) -> list[tuple[str, Pairs]] | None:
    """The FROM and JOIN items of `select`: (alias, its columns with their origins)."""
    items = []
    from_ = select.args.get("from_")
    if from_ is not None:
        items.append(from_.this)
    items += [join.this for join in select.args.get("joins") or []]
    sources: list[tuple[str, Pairs]] = []
    for item in items:
        alias = item.alias_or_name.lower()
        if isinstance(item, exp.Subquery):
            pairs = _outputs(item.this, lookup, ctes)
        elif isinstance(item, exp.Table) and item.name:
            if not item.db and item.name.lower() in ctes:
                inner = {k: v for k, v in ctes.items() if k != item.name.lower()}
                pairs = _outputs(ctes[item.name.lower()], lookup, inner)
            else:
                source = lookup(item.db or None, item.name)
                pairs = (
                    None
                    if source is None
                    else [(c, Origin(source.name, c) if source.name else None) for c in source.columns]
                )
        else:
            return None
        if pairs is None:
            return None
        sources.append((alias, pairs))
    return sources


def _find(sources: list[tuple[str, Pairs]], qualifier: str, name: str) -> Origin | None:
    candidates = [columns for alias, columns in sources if not qualifier or alias == qualifier.lower()]
    found = [origin for columns in candidates for column, origin in columns if column.lower() == name.lower()]
    return found[0] if len(found) == 1 else None


def catalog_unit_resolver(tables: Mapping[str, CatalogTable]) -> Callable[[exp.Column], str | None]:
    """IN_UNIT's unit of a column reference over the engine's catalog tables (``schema.table`` -> table),
    taken from the table the column belongs to in its SELECT."""
    qualified = {name.lower(): table for name, table in tables.items()}
    lookup = _catalog_lookup(tables)

    def unit_of(column: exp.Column) -> str | None:
        origin = column_origin(column, lookup)
        table = qualified.get(origin.table.lower()) if origin is not None else None
        found = (
            next((c for c in table.columns if c.name == origin.column), None) if table and origin else None
        )
        return found.unit if found is not None and found.unit else None

    return unit_of


def region_resolver(
    lookup: Lookup, kind_of: Callable[[Origin], Literal["region", "text"] | None]
) -> Callable[[exp.Column], Literal["region", "text"] | None]:
    """Which column references are region columns, by their own table's metadata (`kind_of` the column it
    is: see dms.query.adql.geometry.RegionOf). A reference whose table is not known is a region column by
    name (ObsCore's s_region), as without a resolver."""

    def region_of(column: exp.Column) -> Literal["region", "text"] | None:
        origin = column_origin(column, lookup)
        if origin is None:
            return "region" if column.name.lower() == "s_region" else None
        return kind_of(origin)

    return region_of


def catalog_region_resolver(
    tables: Mapping[str, CatalogTable],
) -> Callable[[exp.Column], Literal["region", "text"] | None]:
    """ADQL's region columns over the engine's catalog tables: those `dms load --region` registered."""
    qualified = {name.lower(): table for name, table in tables.items()}

    def kind_of(origin: Origin) -> Literal["region", "text"] | None:
        table = qualified.get(origin.table.lower())
        if table is None:
            return None
        if origin.column in table.region_columns:
            return "region"
        text = any(c.name == origin.column and c.datatype == "string" for c in table.columns)
        return "text" if text else None

    return region_resolver(_catalog_lookup(tables), kind_of)


def _catalog_lookup(tables: Mapping[str, CatalogTable]) -> Lookup:
    """Catalog table names as queries write them: ``schema.table`` (any case), a bare name one schema has."""
    qualified = {name.lower(): table for name, table in tables.items()}
    bare: dict[str, list[CatalogTable]] = {}
    for name, table in qualified.items():
        bare.setdefault(name.split(".", 1)[-1], []).append(table)

    def lookup(schema: str | None, name: str) -> Source | None:
        if schema is not None:
            found = qualified.get(f"{schema}.{name}".lower())
        else:
            matches = bare.get(name.lower(), [])
            found = matches[0] if len(matches) == 1 else None
        return None if found is None else Source(found.name, [c.name for c in found.columns])

    return lookup
