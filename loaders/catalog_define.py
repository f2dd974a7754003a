"""`dms load --create` of a table that exists: accepted when it asks for the same table, refused otherwise.

Running the same `--create` command again (a repeated or resumed load) must keep working, but a `--create`
with other options must not silently load into the table as it was first defined: the message names each
option that differs, with both values, and how to start afresh.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dms.schema.catalog import CatalogError, CatalogTable

if TYPE_CHECKING:
    from dms.loaders.catalog import TableOptions

#: CatalogTable field -> the `dms load` option that sets it.
DEFINING_OPTIONS = {
    "role": "--role",
    "storage_kind": "--storage",
    "chunk_order": "--chunk-order",
    "max_chunk_rows": "--max-chunk-rows/--fixed-order",
    "overlap_arcsec": "--overlap",
    "replicas": "--replicas",
    "like_table": "--like",
    "id_column": "--id",
    "ra_column": "--ra",
    "dec_column": "--dec",
    "director_table": "--director",
    "director_key_column": "--director-key",
    "director_table2": "--director2",
    "director_key2_column": "--director-key2",
    "region_columns": "--region",
}


class TableExistsError(CatalogError):
    """`--create` of an existing table with a different definition."""


def _same(a: object, b: object) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()  # column and table names are matched without case
    return a == b


def differences(existing: CatalogTable, wanted: CatalogTable, options: TableOptions) -> list[str]:
    """'--option: was X, now Y' for each defining option that differs."""
    found = []
    for attribute, option in DEFINING_OPTIONS.items():
        was, now = getattr(existing, attribute), getattr(wanted, attribute)
        if not _same(was, now):
            found.append(f"{option} was {was!r}, now {now!r}")
    if options.description is not None and options.description != existing.description:
        found.append(f"--description was {existing.description!r}, now {options.description!r}")
    columns = {c.name.lower(): c for c in existing.columns}
    for what, given in (("unit", options.units), ("ucd", options.ucds)):
        for name, value in sorted(given.items()):
            column = columns.get(name.lower())
            if column is not None and getattr(column, what) != value:
                found.append(f"--{what} {name} was {getattr(column, what)!r}, now {value!r}")
    return found


def check_same_definition(existing: CatalogTable, wanted: CatalogTable, options: TableOptions) -> None:
    """Refuse a `--create` that would define `existing` differently from how it was created."""
    found = differences(existing, wanted, options)
    if found:
        raise TableExistsError(
            f"table {existing.name} already exists with other options ({'; '.join(found)}): load into it "
            f"without --create, or drop it first (`dms catalog drop {existing.name} --yes`) to create it "
            "anew"
        )
