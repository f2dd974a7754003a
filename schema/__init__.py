"""The DMS data model: every table, read from Felis YAML.

Rubin's own definitions come from the PyPI package `lsst-sdm-schemas` wherever Rubin defines the table; DMS's
own tables are in `dms.yaml` beside this file. Each Felis schema becomes a PostgreSQL schema (namespace) of
the control database, except the data-release catalog (`dp1`), whose tables live on the catalog shards.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import sqlalchemy as sa
from felis.datamodel import Schema
from felis.metadata import MetaDataBuilder

from dms.errors import SchemaVersionError

SCHEMA_VERSION = "1.19.0"
"""Version of the control database schema this DMS expects; each migration that changes it bumps it."""

SHARD_SCHEMA_VERSION = "1.1.0"
"""Version of the per-shard bookkeeping schema this DMS expects."""

SCHEMA_INFO_TABLE = "schema_info"


@dataclass(frozen=True)
class FelisSource:
    """Where one Felis schema comes from and which PostgreSQL schema it occupies."""

    key: str
    resource: str  # "package:file.yaml"
    namespace: str  # PostgreSQL schema name
    in_control_db: bool


SOURCES: dict[str, FelisSource] = {
    s.key: s
    for s in (
        FelisSource("dms", "dms.schema:dms.yaml", "dms", True),
        FelisSource("apdb", "lsst.sdm.schemas:apdb.yaml", "apdb", True),
        FelisSource("ivoa_obscore", "lsst.sdm.schemas:ivoa_obscore.yaml", "ivoa", True),
        FelisSource("cdb_lsstcam", "lsst.sdm.schemas:cdb_lsstcam.yaml", "cdb_lsstcam", True),
        FelisSource("cdb_lsstcomcam", "lsst.sdm.schemas:cdb_lsstcomcam.yaml", "cdb_lsstcomcam", True),
        FelisSource(
            "cdb_lsstcomcamsim", "lsst.sdm.schemas:cdb_lsstcomcamsim.yaml", "cdb_lsstcomcamsim", True
        ),
        FelisSource("cdb_latiss", "lsst.sdm.schemas:cdb_latiss.yaml", "cdb_latiss", True),
        FelisSource("efd_lsstcam", "lsst.sdm.schemas:efd_lsstcam.yaml", "efd_lsstcam", True),
        FelisSource("dp1", "lsst.sdm.schemas:dp1.yaml", "dp1", False),
        # Views over dms.alert (migration c0015), so not compared as tables by the drift test.
        FelisSource("alerts", "dms.schema:alerts.yaml", "alerts", False),
    )
}

CONTROL_NAMESPACES: tuple[str, ...] = tuple(s.namespace for s in SOURCES.values() if s.in_control_db)


def felis_path(key: str) -> Path:
    """The YAML file of Felis schema `key` (one of SOURCES)."""
    package, _, filename = SOURCES[key].resource.partition(":")
    return Path(str(importlib.resources.files(package) / filename))


@cache
def felis_schema(key: str) -> Schema:
    """The validated Felis schema `key`, with its PostgreSQL namespace applied."""
    source = SOURCES[key]
    schema = Schema.from_uri(str(felis_path(key)), context={"id_generation": True})
    schema.name = source.namespace
    return schema


def felis_version(key: str) -> str:
    """The version a Felis schema declares (Rubin writes it either as a string or as {current: ...})."""
    version = felis_schema(key).version
    if version is None:
        from importlib.metadata import version as dist_version

        return f"lsst-sdm-schemas {dist_version('lsst-sdm-schemas')}"
    return version if isinstance(version, str) else version.current


@cache
def schema_metadata(key: str) -> sa.MetaData:
    """SQLAlchemy metadata of one Felis schema (tables qualified by its namespace)."""
    return MetaDataBuilder(felis_schema(key)).build()


def control_metadata() -> sa.MetaData:
    """One MetaData holding every table of the control database."""
    combined = sa.MetaData()
    for key, source in SOURCES.items():
        if source.in_control_db:
            for table in schema_metadata(key).sorted_tables:
                table.to_metadata(combined)
    return combined


def schema_info_rows() -> dict[str, str]:
    """What `dms.schema_info` records about the control database's schema."""
    rows = {"schema_version": SCHEMA_VERSION}
    for key, source in SOURCES.items():
        rows[f"felis_version.{key}"] = felis_version(key)
        rows[f"namespace.{key}"] = source.namespace
    return rows


def check_schema_version(conn: sa.Connection, label: str, expected: str = SCHEMA_VERSION) -> None:
    """Fail with a message naming both versions unless `conn`'s database is at `expected`."""
    found = read_schema_version(conn)
    if found == expected:
        return
    if found is None:
        message = (
            f"{label} has no DMS schema (no dms.{SCHEMA_INFO_TABLE}); this DMS expects schema version "
            f"{expected}: run `dms db upgrade`"
        )
    elif _version_tuple(found) < _version_tuple(expected):
        message = (
            f"{label} is at schema version {found} but this DMS expects {expected}: run `dms db upgrade`"
        )
    else:
        message = (
            f"{label} is at schema version {found}, unknown to this DMS (which expects {expected}); "
            "it was written by a newer DMS: upgrade DMS, or point at another database"
        )
    raise SchemaVersionError(label, found, expected, message)


def read_schema_version(conn: sa.Connection) -> str | None:
    """The schema version recorded in a database, or None if it has none."""
    if not sa.inspect(conn).has_table(SCHEMA_INFO_TABLE, schema="dms"):
        return None
    value = conn.execute(
        sa.text(f"SELECT value FROM dms.{SCHEMA_INFO_TABLE} WHERE key = 'schema_version'")
    ).scalar_one_or_none()
    return None if value is None else str(value)


def _version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (10**9,)  # unparseable: treat as newer than anything we know
