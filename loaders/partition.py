"""Spatial partitioning on HEALPix: `_healpix_29`, chunk layouts (fixed or adaptive) and overlap margins.

Everything here is pure numpy/healpy over arrays, so it is testable alone and fast on millions of rows.
A chunk is a nested HEALPix pixel (order, pixel); it covers the order-29 index range
[pixel << 2(29-order), (pixel+1) << 2(29-order)). Chunks of one table never overlap; with adaptive
partitioning they may be at different orders. Chunks are named in data by their NUNIQ number
(4 * 4**order + pixel), which is unique across orders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import healpy
import numpy as np
import numpy.typing as npt

from dms.errors import DMSError

ORDER_29 = 29
NSIDE_29 = 1 << ORDER_29
MAX_ADAPTIVE_ORDER = 13

IntArray = npt.NDArray[np.int64]


class PartitionError(DMSError):
    """Rows or options that cannot be partitioned."""


def healpix_29(ra: npt.ArrayLike, dec: npt.ArrayLike) -> IntArray:
    """Nested HEALPix index at order 29 of each position (degrees), as healpy computes it."""
    ra_arr = np.asarray(ra, dtype=np.float64)
    dec_arr = np.asarray(dec, dtype=np.float64)
    bad = ~(np.isfinite(ra_arr) & np.isfinite(dec_arr)) | (np.abs(dec_arr) > 90.0)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise PartitionError(
            f"{int(bad.sum())} rows have no valid position (first: row {first}, "
            f"ra={ra_arr[first]!r}, dec={dec_arr[first]!r}); ra and dec must be finite and |dec| <= 90"
        )
    return np.asarray(
        healpy.ang2pix(NSIDE_29, np.mod(ra_arr, 360.0), dec_arr, nest=True, lonlat=True), np.int64
    )


def nuniq(order: npt.ArrayLike, pixel: npt.ArrayLike) -> IntArray:
    """NUNIQ number of (order, pixel): one integer naming a pixel at any order."""
    return np.asarray(
        4 * (np.int64(4) ** np.asarray(order, np.int64)) + np.asarray(pixel, np.int64), np.int64
    )


def from_nuniq(uniq: int) -> tuple[int, int]:
    """(order, pixel) of a NUNIQ number."""
    order = (int(uniq).bit_length() - 3) // 2
    return order, int(uniq) - 4 * 4**order


def pixel_range(order: int, pixel: int) -> tuple[int, int]:
    """The inclusive order-29 index range [lo, hi] covered by a pixel."""
    shift = 2 * (ORDER_29 - order)
    return pixel << shift, ((pixel + 1) << shift) - 1


@dataclass(frozen=True)
class ChunkLayout:
    """A set of non-overlapping chunks, sorted by their order-29 range, plus the base order for new ones."""

    base_order: int
    orders: IntArray
    pixels: IntArray

    def __post_init__(self) -> None:
        if not 0 <= self.base_order <= MAX_ADAPTIVE_ORDER:
            raise PartitionError(f"chunk order {self.base_order} is outside 0..{MAX_ADAPTIVE_ORDER}")

    @classmethod
    def from_chunks(cls, base_order: int, chunks: list[tuple[int, int]]) -> ChunkLayout:
        orders = np.array([c[0] for c in chunks], np.int64)
        pixels = np.array([c[1] for c in chunks], np.int64)
        lo = pixels << (2 * (ORDER_29 - orders))
        index = np.argsort(lo)
        return cls(base_order, orders[index], pixels[index])

    @property
    def lo(self) -> IntArray:
        return np.asarray(self.pixels << (2 * (ORDER_29 - self.orders)), np.int64)

    @property
    def hi(self) -> IntArray:
        return np.asarray(((self.pixels + 1) << (2 * (ORDER_29 - self.orders))) - 1, np.int64)

    def __len__(self) -> int:
        return len(self.pixels)

    def assign(self, h29: IntArray) -> tuple[IntArray, IntArray]:
        """(order, pixel) of the chunk holding each index: a registered chunk, else the base-order pixel."""
        orders = np.full(len(h29), self.base_order, np.int64)
        pixels = h29 >> (2 * (ORDER_29 - self.base_order))
        if len(self):
            lo, hi = self.lo, self.hi
            at = np.searchsorted(lo, h29, side="right") - 1
            valid = at >= 0
            inside = np.zeros(len(h29), bool)
            inside[valid] = h29[valid] <= hi[at[valid]]
            orders[inside] = self.orders[at[inside]]
            pixels[inside] = self.pixels[at[inside]]
        return orders, pixels

    def with_chunks(self, orders: IntArray, pixels: IntArray) -> ChunkLayout:
        """This layout plus the given chunks (which must not overlap it)."""
        pairs = set(zip(self.orders.tolist(), self.pixels.tolist(), strict=True))
        pairs |= set(zip(orders.tolist(), pixels.tolist(), strict=True))
        return ChunkLayout.from_chunks(self.base_order, sorted(pairs))


def adaptive_layout(
    h29: IntArray, base_order: int, max_chunk_rows: int | None, overlap_arcsec: float = 0.0
) -> ChunkLayout:
    """Chunks for a first load: base-order pixels holding rows, each split into its four children
    (all four kept, so the layout keeps covering the parent) while it has more than `max_chunk_rows` rows,
    down to the finest order whose chunks are still wider than the overlap allows (HATS-style adaptive
    partitioning). A chunk that is still too big there is refused with the options that would fix it."""
    counts = SkyCounts(finest_chunk_order(overlap_arcsec))
    counts.add(h29)
    return counts.layout(base_order, max_chunk_rows, overlap_arcsec)


class SkyCounts:
    """Rows per HEALPix pixel at one order, gathered batch by batch: all an adaptive layout needs to know of a
    load, so a streamed load never holds its positions whole (at most one entry per occupied pixel)."""

    DENSE_PIXELS = 1 << 26
    """Orders with at most this many pixels (order 10 and coarser) are counted in one dense array."""

    def __init__(self, order: int) -> None:
        self.order = order
        self._dense: IntArray | None = None
        if 12 * 4**order <= self.DENSE_PIXELS:
            self._dense = np.zeros(12 * 4**order, np.int64)
        self._pixels = np.zeros(0, np.int64)
        self._counts = np.zeros(0, np.int64)

    def add(self, h29: IntArray) -> None:
        pixels = h29 >> (2 * (ORDER_29 - self.order))
        if self._dense is not None:  # no sort, whatever the number of pixels
            if len(pixels) < len(self._dense):  # in place: a bincount would allocate (and fault in) 100 MB
                np.add.at(self._dense, pixels, 1)
            else:
                self._dense += np.bincount(pixels, minlength=len(self._dense))
            return
        pixels, counts = np.unique(pixels, return_counts=True)
        merged = np.concatenate([self._pixels, pixels])
        self._pixels, inverse = np.unique(merged, return_inverse=True)
        self._counts = np.bincount(
            inverse, weights=np.concatenate([self._counts, counts]), minlength=len(self._pixels)
        ).astype(np.int64)

    @property
    def pixels(self) -> IntArray:
        """The occupied pixels, sorted."""
        if self._dense is not None:
            return np.flatnonzero(self._dense).astype(np.int64)
        return self._pixels

    @property
    def counts(self) -> IntArray:
        """The rows in each of `pixels`."""
        if self._dense is not None:
            return self._dense[self._dense > 0]
        return self._counts

    def rows_in(self, order: int, pixel: int) -> int:
        shift = 2 * (self.order - order)
        if self._dense is not None:
            return int(self._dense[pixel << shift : (pixel + 1) << shift].sum())
        lo, hi = np.searchsorted(self._pixels, [pixel << shift, (pixel + 1) << shift], "left")
        return int(self._counts[lo:hi].sum())

    def layout(self, base_order: int, max_chunk_rows: int | None, overlap_arcsec: float) -> ChunkLayout:
        """The adaptive layout of the counted rows (see `adaptive_layout`)."""
        finest = finest_chunk_order(overlap_arcsec)
        if base_order > finest:
            raise PartitionError(
                f"an overlap of {overlap_arcsec:g} arcsec is too large for chunks at order {base_order}: use "
                f"--chunk-order {finest} or coarser, or an --overlap of at most "
                f"{max_overlap_arcsec(base_order):.4g} arcsec"
            )
        assert self.order == finest
        base_pixels = np.unique(self.pixels >> (2 * (finest - base_order)))
        if max_chunk_rows is None:
            return ChunkLayout(base_order, np.full(len(base_pixels), base_order, np.int64), base_pixels)
        chunks: list[tuple[int, int]] = []
        too_big: list[tuple[int, int, int]] = []
        pending = [(base_order, int(p)) for p in base_pixels]
        while pending:
            order, pixel = pending.pop()
            rows = self.rows_in(order, pixel)
            if rows > max_chunk_rows and order < finest:
                pending.extend((order + 1, 4 * pixel + child) for child in range(4))
            else:
                chunks.append((order, pixel))
                if rows > max_chunk_rows:
                    too_big.append((rows, order, pixel))
        if too_big:
            raise PartitionError(_too_big_advice(max(too_big), len(too_big), max_chunk_rows, overlap_arcsec))
        return ChunkLayout.from_chunks(base_order, chunks)


def _too_big_advice(densest: tuple[int, int, int], count: int, max_chunk_rows: int, overlap: float) -> str:
    """Which option to change, and to what, when chunks at the finest allowed order are still too big."""
    rows, order, pixel = densest
    text = (
        f"{count} chunks still hold more than --max-chunk-rows {max_chunk_rows:,} rows at order {order}, "
        f"the finest "
    )
    fixes = [f"raise --max-chunk-rows to at least {rows:,} (the densest chunk, order {order} pixel {pixel})"]
    if order < MAX_ADAPTIVE_ORDER:
        text += f"an overlap of {overlap:g} arcsec allows (a chunk must be wider than twice the overlap): "
        fixes.append(
            f"lower --overlap to at most {max_overlap_arcsec(order + 1):.4g} arcsec so chunks can split to "
            f"order {order + 1}"
        )
    else:
        text += "order of adaptive splitting: "
    fixes.append("or give --fixed-order to keep the --chunk-order pixels whole")
    return text + "; ".join(fixes)


def max_overlap_arcsec(order: int) -> float:
    """The largest overlap margin that chunks of `order` allow: pixels at least twice the margin wide (a
    pixel's width taken as healpy's resolution over sqrt(2), conservatively), as `overlap_order` requires."""
    return float(healpy.nside2resol(1 << order, arcmin=True) * 60 / math.sqrt(2) / 2)


def finest_chunk_order(overlap_arcsec: float) -> int:
    """The finest chunk order (at most MAX_ADAPTIVE_ORDER) whose pixels the overlap margin allows."""
    order = 0
    while order < MAX_ADAPTIVE_ORDER and max_overlap_arcsec(order + 1) >= overlap_arcsec:
        order += 1
    return order


def overlap_order(margin_arcsec: float, finest_chunk_order: int) -> int:
    """The order whose pixels are at least twice the margin wide, so every point within the margin of a row
    lies in the row's pixel or one of its eight neighbours at that order."""
    if margin_arcsec <= 0:
        raise PartitionError("the overlap margin must be positive")
    order = 0
    while order < ORDER_29 and max_overlap_arcsec(order + 1) >= margin_arcsec:
        order += 1
    if order < finest_chunk_order:
        raise PartitionError(
            f"an overlap of {margin_arcsec} arcsec is too large for chunks at order {finest_chunk_order}: "
            f"use a coarser chunk order (at most {order}) or a smaller overlap"
        )
    return order


def overlap_rows(
    h29: IntArray, own_chunk: IntArray, layout: ChunkLayout, margin_arcsec: float
) -> tuple[IntArray, IntArray, IntArray]:
    """Which rows are copied as overlap into which other chunks.

    Returns (row index, chunk order, chunk pixel) triples, each row at most once per chunk. The test is
    conservative (every row within the margin of a chunk is included; a few rows a little farther may be)."""
    finest = max(int(layout.orders.max(initial=layout.base_order)), layout.base_order)
    order = overlap_order(margin_arcsec, finest)
    shift = 2 * (ORDER_29 - order)
    own_orders, _ = split_nuniq(own_chunk)
    # only rows in fine pixels on the edge of their chunk can be within the margin of another chunk
    edge = np.flatnonzero(_on_chunk_edge(h29 >> shift, order, own_orders))
    h29, own_chunk = h29[edge], own_chunk[edge]
    fine = h29 >> shift
    unique_fine, inverse = np.unique(fine, return_inverse=True)
    neighbours = healpy.get_all_neighbours(1 << order, unique_fine, nest=True)  # (8, n), -1 where none
    rows_out: list[IntArray] = []
    orders_out: list[IntArray] = []
    pixels_out: list[IntArray] = []
    for k in range(neighbours.shape[0]):
        nb = np.asarray(neighbours[k], np.int64)[inverse]
        valid = nb >= 0
        nb_orders, nb_pixels = layout.assign(np.where(valid, nb, 0) << shift)
        other = valid & (nuniq(nb_orders, nb_pixels) != own_chunk)
        idx = np.flatnonzero(other)
        rows_out.append(idx.astype(np.int64))
        orders_out.append(nb_orders[idx])
        pixels_out.append(nb_pixels[idx])
    rows = np.concatenate(rows_out)
    orders = np.concatenate(orders_out)
    pixels = np.concatenate(pixels_out)
    key = np.unique(np.stack([rows, nuniq(orders, pixels)]), axis=1)
    out_orders, out_pixels = split_nuniq(key[1])
    return edge[key[0]], out_orders, out_pixels


def _compact_bits(value: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """Bits 0, 2, 4, ... of each value packed together: one coordinate of a nested HEALPix index."""
    value = value & np.uint64(0x5555555555555555)
    for shift, mask in (
        (1, 0x3333333333333333),
        (2, 0x0F0F0F0F0F0F0F0F),
        (4, 0x00FF00FF00FF00FF),
        (8, 0x0000FFFF0000FFFF),
        (16, 0x00000000FFFFFFFF),
    ):
        value = (value | (value >> np.uint64(shift))) & np.uint64(mask)
    return value


def _on_chunk_edge(fine: IntArray, order: int, chunk_orders: IntArray) -> npt.NDArray[np.bool_]:
    """Whether each order-`order` pixel touches the boundary of its chunk (at `chunk_orders`): in the
    nested scheme the pixel's low bits interleave its x and y inside the chunk; the edge is x or y at 0 or
    max."""
    depth = (order - chunk_orders).astype(np.int64)
    local = (fine & ((np.int64(1) << (2 * depth)) - 1)).astype(np.uint64)
    x = _compact_bits(local).astype(np.int64)
    y = _compact_bits(local >> np.uint64(1)).astype(np.int64)
    last = (np.int64(1) << depth) - 1
    return np.asarray((x == 0) | (y == 0) | (x == last) | (y == last))


def split_nuniq(uniq: IntArray) -> tuple[IntArray, IntArray]:
    """(orders, pixels) of NUNIQ numbers (chunk orders are at most 13, so float exponents are exact)."""
    _, exponent = np.frexp(uniq.astype(np.float64))
    orders = ((exponent.astype(np.int64) - 3) // 2).astype(np.int64)
    return orders, uniq - 4 * (np.int64(4) ** orders)
