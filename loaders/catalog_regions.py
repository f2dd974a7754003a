"""Region columns of a catalog load (`dms load --region COL`): each row's STC-S text with its representation.

A region column holds STC-S text (ObsCore's s_region form); beside it the load stores ``COL_shape`` (the
region as a DALI double array, ICRS) and ``COL_moc`` (its order-10 HEALPix cells and their neighbours), as
:mod:`dms.query.regions` defines them for ObsCore, so ADQL's INTERSECTS and CONTAINS test them exactly after
the cell-list prefilter. A row whose text is not one region is refused with its row number and text: the
load fails before any of its rows is committed.
"""

from __future__ import annotations

import pyarrow as pa

from dms.loaders.catalog_errors import LoadError
from dms.query import regions
from dms.query.adql import stcs
from dms.query.adql.errors import AdqlError
from dms.schema.catalog import CatalogTable, Column

SHAPE_TYPE = "list<double>"
MOC_TYPE = "list<int64>"


def representation_columns(region: Column) -> tuple[Column, Column]:
    """The two columns registered beside region column `region`."""
    return (
        Column(
            region.name + regions.SHAPE_SUFFIX,
            SHAPE_TYPE,
            unit="deg",
            ucd="pos.outline",
            description=f"{region.name} as a DALI array: [ra, dec] a point, [ra, dec, radius] a circle, else "
            "the polygon's vertices [ra1, dec1, ...] (ICRS, great-circle edges)",
        ),
        Column(
            region.name + regions.MOC_SUFFIX,
            MOC_TYPE,
            ucd="meta.id;pos",
            description=f"Nested HEALPix cells of order {regions.MOC_ORDER} covering {region.name} (and one "
            "ring of neighbours)",
        ),
    )


def with_representation(table: CatalogTable, batch: pa.Table, first_row: int, where: str) -> pa.Table:
    """`batch` (the table's read columns) with the representation columns of its region columns added, in
    the table's column order; `first_row` is the 1-based number of the batch's first row in `where`."""
    computed: dict[str, pa.Array] = {}
    for name in table.region_columns:
        if name not in batch.column_names:
            continue
        shapes, cells = [], []
        for i, text in enumerate(batch.column(name).to_pylist()):
            shape = _shape(name, text, first_row + i, where)
            shapes.append(shape)
            cells.append(None if shape is None else regions.coverage(shape))
        computed[name + regions.SHAPE_SUFFIX] = pa.array(shapes, pa.list_(pa.float64()))
        computed[name + regions.MOC_SUFFIX] = pa.array(cells, pa.list_(pa.int64()))
    if not computed:
        return batch
    names = [c.name for c in table.columns if c.name in batch.column_names or c.name in computed]
    arrays = [computed[n] if n in computed else batch.column(n) for n in names]
    return pa.Table.from_arrays(arrays, names=names)


def _shape(column: str, text: str | None, row: int, where: str) -> list[float] | None:
    """The DALI array of one row's region (None for NULL or blank text), or an error naming the row."""
    if text is None or not text.strip():
        return None
    try:
        shape = regions.shape_array(stcs.parse(text))
    except AdqlError as exc:
        raise LoadError(f"{where}, row {row}: column {column!r} is not a region: {exc}") from None
    if shape is None:
        raise LoadError(
            f"{where}, row {row}: column {column!r} holds {text!r}, a UNION, INTERSECTION or NOT; a region "
            "column holds one POSITION, CIRCLE, BOX or POLYGON per row"
        )
    if len(shape) == 3 and not 0 <= shape[2] <= 180:
        raise LoadError(
            f"{where}, row {row}: column {column!r} holds {text!r}, a circle whose radius is not 0 to 180"
        )
    return shape
