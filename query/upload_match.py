"""Crossmatch of an uploaded table with a partitioned director table, chunk by chunk as a zone join.

``DISTANCE(POINT(u.ra, u.dec), POINT(c.ra, c.dec)) < r`` (``scisql_angSep``) or ``CONTAINS(POINT(c...),
CIRCLE(u..., r)) = 1`` (``scisql_s2PtInCircle``) between an upload ``u`` and a director table ``c``, inner
joined, is evaluated without comparing every upload row with every catalog row:

- each upload row's circle is covered with HEALPix pixels (inclusive) at the table's chunk orders: only the
  chunks some circle touches are read (chunk pruning);
- the upload is shipped with one copy per (chunk its circle touches, declination zone of height r around
  its own: zone - 1, zone, zone + 1), and the query gains ``u._chunk = c._chunk AND u._zone = zone(c.dec)``:
  each chunk's join is a hash join that meets only the upload rows near each catalog row, the same zone
  join as catalog crossmatches (:mod:`dms.query.sources`). A pair within r is in one chunk (the catalog
  row's own) and its zones differ by at most one, so it meets exactly once; the exact distance test stays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import healpy
import numpy as np
import pyarrow as pa
from sqlglot import exp

from dms.loaders.partition import nuniq
from dms.query.plan import conjuncts
from dms.query.registry import TableChunks
from dms.query.restrict import constant, merge_ranges
from dms.query.validate import TableRef
from dms.schema.catalog import CatalogTable

CHUNK_COLUMN = "_chunk"
ZONE_COLUMN = "_zone"


@dataclass(frozen=True)
class UploadMatch:
    """A positional join of upload alias `upload` (positions `ra`, `dec`) with director alias `catalog`."""

    upload: str
    upload_name: str
    ra: str
    dec: str
    catalog: str
    radius: float


def find_upload_match(
    select: exp.Select, aliases: dict[str, TableRef], partitioned: dict[str, CatalogTable]
) -> UploadMatch | None:
    """The upload crossmatch in `select`, when it has one this module can evaluate as a zone join: one
    partitioned director table, an upload used once, inner joined by a constant radius."""
    if len(partitioned) != 1:
        return None
    catalog, table = next(iter(partitioned.items()))
    uploads = [a for a, r in aliases.items() if r.kind == "upload"]
    if table.role != "director" or len(uploads) != 1:
        return None
    if any((j.side or "").upper() in ("LEFT", "RIGHT", "FULL") for j in select.args.get("joins") or []):
        return None  # an outer join must keep each upload row once; the copies would repeat it
    predicates = conjuncts(select.args.get("where"))
    for join in select.args.get("joins") or []:
        predicates += conjuncts(join.args.get("on"))
    for predicate in predicates:
        found = _positional(predicate, uploads[0], catalog, table)
        if found is not None:
            (ra, dec), radius = found
            return UploadMatch(uploads[0], aliases[uploads[0]].name, ra, dec, catalog, radius)
    return None


def _positional(
    predicate: exp.Expression, upload: str, catalog: str, table: CatalogTable
) -> tuple[tuple[str, str], float] | None:
    """((upload ra, upload dec), radius) of a distance predicate between the two aliases."""
    pairs: list[tuple[list[exp.Expression], float | None]] = []
    if isinstance(predicate, exp.LT | exp.LTE | exp.GT | exp.GTE):
        call, bound = predicate.this, predicate.expression
        if isinstance(predicate, exp.GT | exp.GTE):
            call, bound = bound, call
        if (
            isinstance(call, exp.Anonymous)
            and call.name.lower() == "scisql_angsep"
            and len(call.expressions) == 4
        ):
            pairs.append((list(call.expressions), constant(bound)))
    elif isinstance(predicate, exp.EQ):
        call, one = predicate.this, predicate.expression
        if constant(call) == 1:
            call, one = one, call
        if (
            constant(one) == 1
            and isinstance(call, exp.Anonymous)
            and call.name.lower() == "scisql_s2ptincircle"
            and len(call.expressions) == 5
        ):
            pairs.append((list(call.expressions[:4]), constant(call.expressions[4])))
    for args, radius in pairs:
        if radius is None or not 0 <= radius < 90:
            continue
        for first, second in ((args[:2], args[2:]), (args[2:], args[:2])):
            up = _columns_of(first, upload)
            if up is not None and _columns_of(second, catalog) == (
                (table.ra_column or "").lower(),
                (table.dec_column or "").lower(),
            ):
                return up, radius
    return None


def _columns_of(args: list[exp.Expression], alias: str) -> tuple[str, str] | None:
    if all(isinstance(a, exp.Column) and a.table == alias for a in args):
        return args[0].name.lower(), args[1].name.lower()
    return None


def zone(dec: np.ndarray, height: float) -> np.ndarray:
    """Declination zones as :func:`dms.query.sources._zone` computes them in SQL."""
    return np.floor((dec + 90.0) / height).astype(np.int64)


def expand_upload(match: UploadMatch, upload: pa.Table, chunks: TableChunks) -> tuple[pa.Table, np.ndarray]:
    """The upload with a copy per (touched chunk, nearby zone), and the order-29 ranges of those chunks."""
    names = {n.lower(): n for n in upload.column_names}
    ra = np.asarray(upload[names[match.ra]].to_numpy(zero_copy_only=False), np.float64)
    dec = np.asarray(upload[names[match.dec]].to_numpy(zero_copy_only=False), np.float64)
    existing = set(nuniq(chunks.orders, chunks.pixels).tolist())
    orders = sorted({int(o) for o in chunks.orders.tolist()})
    finest = max(orders, default=0)
    rows: list[int] = []
    chunk_ids: list[int] = []
    valid = np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90)
    radius = math.radians(match.radius)
    vectors = healpy.ang2vec(np.mod(ra[valid], 360.0), dec[valid], lonlat=True).reshape(-1, 3)
    for row, vector in zip(np.flatnonzero(valid).tolist(), vectors, strict=True):
        pixels = healpy.query_disc(1 << finest, vector, radius, inclusive=True, nest=True)
        touched = {int(u) for order in orders for u in nuniq(order, pixels >> 2 * (finest - order)).tolist()}
        for chunk in touched & existing:
            rows.append(row)
            chunk_ids.append(chunk)
    index = np.repeat(np.asarray(rows, np.int64), 3)
    height = max(match.radius, 1e-9)
    zones = (zone(dec[index[::3]], height)[:, None] + np.array([-1, 0, 1])).reshape(-1) if rows else []
    expanded = upload.take(pa.array(index, pa.int64()))
    expanded = expanded.append_column(CHUNK_COLUMN, pa.array(np.repeat(chunk_ids, 3), pa.int64()))
    expanded = expanded.append_column(ZONE_COLUMN, pa.array(zones, pa.int64()))
    return expanded, _chunk_ranges(sorted(set(chunk_ids)))


def _chunk_ranges(uniqs: list[int]) -> np.ndarray:
    ranges = []
    for uniq in uniqs:
        order = (uniq.bit_length() - 3) // 2
        pixel = uniq - 4 * 4**order
        shift = 2 * (29 - order)
        ranges.append((pixel << shift, ((pixel + 1) << shift) - 1))
    return merge_ranges(np.array(ranges, np.int64).reshape(-1, 2))


def join_predicate(match: UploadMatch, table: CatalogTable) -> exp.Condition:
    """``u._chunk = c._chunk AND u._zone = zone(c.dec)``: the hash-join keys of the zone join."""
    height = max(match.radius, 1e-9)
    dec = exp.column(exp.to_identifier(table.dec_column or "dec", quoted=True), match.catalog)
    shifted = exp.paren(exp.Add(this=dec, expression=exp.Literal.number(90)))
    catalog_zone = exp.Cast(
        this=exp.Floor(this=exp.Div(this=shifted, expression=exp.Literal.number(repr(height)))),
        to=exp.DataType.build("BIGINT"),
    )
    return exp.and_(
        exp.EQ(
            this=exp.column(CHUNK_COLUMN, match.upload), expression=exp.column(CHUNK_COLUMN, match.catalog)
        ),
        exp.EQ(this=exp.column(ZONE_COLUMN, match.upload), expression=catalog_zone),
    )


def prepare_upload_match(
    select: exp.Select,
    aliases: dict[str, TableRef],
    partitioned: dict[str, CatalogTable],
    uploads: dict[str, pa.Table],
    shipped: dict[str, pa.Table],
    chunks: dict[str, TableChunks],
) -> np.ndarray | None:
    """Turn an upload crossmatch in `select` into a zone join (in place: the join keys are added to
    `select` and the shipped upload is replaced by its expansion); returns the order-29 ranges of the chunks
    to read, or None when `select` has no such crossmatch."""
    match = find_upload_match(select, aliases, partitioned)
    if match is None:
        return None
    table = partitioned[match.catalog]
    expanded, ranges = expand_upload(match, uploads[match.upload_name], chunks[table.name])
    shipped[f"_up_{match.upload_name}"] = expanded
    select.where(join_predicate(match, table), copy=False)
    return ranges
