"""DMS's own tables (schema/dms.yaml): valid Felis, created on a real PostgreSQL, and enforcing what they say.

The schema is created and seeded once per module; each behaviour test runs in a transaction that is rolled
back, so every test starts from the same seeded state. One test creates and drops the schema on a fresh
database of its own.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import healpy
import psycopg
import pytest
import sqlalchemy as sa
from felis.datamodel import CheckConstraint, ForeignKeyConstraint, Schema, UniqueConstraint
from felis.metadata import MetaDataBuilder
from psycopg import errors, sql
from psycopg.types.json import Jsonb

from dms.schema import SCHEMA_VERSION

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schema" / "dms.yaml"

# Every check felis offers that applies to a schema not published through TAP.
STRICT_CONTEXT = {"id_generation": True, "check_description": True, "check_redundant_datatypes": True}

EXPECTED_TABLES = {
    "user_group",
    "group_member",
    "data_release",
    "workspace",
    "workspace_table",
    "workspace_share",
    "web_session",
    "alert",
    "prompt_visit",
    "prompt_detector_run",
    "alert_feed_delivery",
    "alert_feed_message",
    "alert_feed_offset",
    "alert_feed_topic",
    "schema_info",
    "site",
    "shard",
    "catalog_table",
    "chunk",
    "chunk_replica",
    "director_index",
    "catalog_column",
    "catalog_load",
    "chunk_file",
    "instrument",
    "physical_filter",
    "detector",
    "day_obs",
    "exposure",
    "dataset_type",
    "collection",
    "collection_chain",
    "dataset",
    "tagged_dataset",
    "datastore_record",
    "replication_policy",
    "replication_task",
    "exposure_log",
    "distribution_subscription",
    "distribution_item",
    "efd_topic",
    "efd_sample",
    "qc_metric",
    "qc_measurement",
    "qc_threshold",
    "qc_alarm",
    "efd_ingest_batch",
    "efd_transform_column",
    "efd_transform_run",
    "efd_exposure_transform",
    "qc_unit",
    "gateway_event",
    "job",
    "batch_job",
    "batch_task",
    "batch_dataset",
    "batch_task_input",
    "batch_quota",
    "ocs_command",
    "calibration",
    "user_account",
    "access_token",
    "catalog_generation",
}

# A position (degrees) and the chunk holding it at the seed director's chunk order.
RA, DEC = 150.0, 2.2
CHUNK_ORDER = 7
CHUNK_ID = int(healpy.ang2pix(2**CHUNK_ORDER, RA, DEC, nest=True, lonlat=True))
DATASET_ID = uuid.UUID("3f1c7c52-7a1e-4d0b-9c53-0d6c1b2a9e11")
EXPOSURE_ID = 2025041500123


def healpix_29_range(order: int, pixel: int) -> tuple[int, int]:
    """First and last order-29 nested index inside `pixel` at `order`."""
    shift = 2 * (29 - order)
    return pixel << shift, ((pixel + 1) << shift) - 1


# ---------------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def felis_schema() -> Schema:
    return Schema.from_uri(str(SCHEMA_PATH), context=STRICT_CONTEXT)


@pytest.fixture(scope="module")
def metadata(felis_schema: Schema) -> sa.MetaData:
    return MetaDataBuilder(felis_schema).build()


def create_dms_schema(uri: str, metadata: sa.MetaData) -> None:
    """CREATE SCHEMA dms and every table in it, as a migration would, in one transaction."""
    engine = sa.create_engine(sa.make_url(uri).set(drivername="postgresql+psycopg"))
    try:
        with engine.begin() as conn:
            conn.execute(sa.schema.CreateSchema("dms"))
            metadata.create_all(conn)
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def dms_database(pg_server: Any, metadata: sa.MetaData) -> Iterator[str]:
    """URI of a database holding the dms schema and the seed rows, shared by this module's tests."""
    name = f"t_dms_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        create_dms_schema(pg_server.get_uri(name), metadata)
        with psycopg.connect(pg_server.get_uri(name), autocommit=True) as conn:
            seed(conn)
        yield pg_server.get_uri(name)
    finally:
        with psycopg.connect(pg_server.get_uri(), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def dms_connection(dms_database: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(dms_database, autocommit=True) as conn:
        yield conn


@pytest.fixture()
def db(dms_connection: psycopg.Connection) -> Iterator[psycopg.Connection]:
    """The seeded dms database, inside a transaction that is rolled back after the test."""
    with dms_connection.transaction(force_rollback=True):
        yield dms_connection


@contextmanager
def refused(
    db: psycopg.Connection, error: type[psycopg.Error], constraint: str | None = None
) -> Iterator[None]:
    """Expect the statements in the block to fail with `error` (naming `constraint`), and undo only them."""
    with pytest.raises(error) as caught, db.transaction():
        yield
    if constraint is not None:
        assert caught.value.diag.constraint_name == constraint


def insert(conn: psycopg.Connection, table: str, row: dict[str, Any]) -> None:
    """INSERT one row into dms.`table`; dicts and lists are sent as JSONB."""
    values = [Jsonb(v) if isinstance(v, dict | list) else v for v in row.values()]
    conn.execute(
        sql.SQL("INSERT INTO dms.{} ({}) VALUES ({})").format(
            sql.Identifier(table),
            sql.SQL(", ").join(map(sql.Identifier, row)),
            sql.SQL(", ").join(sql.Placeholder() * len(row)),
        ),
        values,
    )


# ---------------------------------------------------------------------------------------------------------
# Seed rows: a small but complete deployment every behaviour test starts from
# ---------------------------------------------------------------------------------------------------------

_CHUNK_MIN, _CHUNK_MAX = healpix_29_range(CHUNK_ORDER, CHUNK_ID)

SEED: list[tuple[str, dict[str, Any]]] = [
    ("schema_info", {"key": "schema_version", "value": "1.0.0"}),
    ("site", {"name": "usdf", "role": "archive", "root_uri": "s3://rubin-usdf/"}),
    ("site", {"name": "summit", "role": "summit", "root_uri": "file:///repo/"}),
    ("shard", {"name": "shard0", "kind": "duckdb", "location": "catalog/shard0.duckdb"}),
    ("shard", {"name": "pg1", "kind": "postgres", "site": "usdf"}),
    (
        "catalog_table",
        {
            "name": "dp1.Object",
            "role": "director",
            "id_column": "objectId",
            "ra_column": "coord_ra",
            "dec_column": "coord_dec",
            "chunk_order": CHUNK_ORDER,
            "storage_kind": "duckdb",
            "felis_schema": "dp1",
            "felis_table": "Object",
        },
    ),
    (
        "catalog_table",
        {
            "name": "dp1.Source",
            "role": "child",
            "director_table": "dp1.Object",
            "director_key_column": "objectId",
            "chunk_order": CHUNK_ORDER,
            "storage_kind": "duckdb",
        },
    ),
    ("catalog_table", {"name": "dp1.Visit", "role": "replicated", "storage_kind": "postgres"}),
    *(
        (
            "chunk",
            {
                "table_name": table,
                "chunk_order": CHUNK_ORDER,
                "chunk_id": CHUNK_ID,
                "healpix_29_min": _CHUNK_MIN,
                "healpix_29_max": _CHUNK_MAX,
                "row_count": 10,
            },
        )
        for table in ("dp1.Object", "dp1.Source")
    ),
    (
        "chunk_replica",
        {
            "table_name": "dp1.Object",
            "chunk_order": CHUNK_ORDER,
            "chunk_id": CHUNK_ID,
            "shard": "shard0",
            "is_primary": True,
            "state": "ready",
        },
    ),
    (
        "director_index",
        {"table_name": "dp1.Object", "object_id": 1001, "chunk_order": CHUNK_ORDER, "chunk_id": CHUNK_ID},
    ),
    (
        "instrument",
        {
            "name": "LSSTCam",
            "class_name": "lsst.obs.lsst.LsstCam",
            "detector_max": 1000,
            "exposure_max": 10**14,
            "visit_max": 10**14,
        },
    ),
    ("physical_filter", {"instrument": "LSSTCam", "name": "r_57", "band": "r"}),
    ("detector", {"instrument": "LSSTCam", "id": 94, "full_name": "R22_S11", "purpose": "SCIENCE"}),
    ("day_obs", {"instrument": "LSSTCam", "id": 20250415}),
    (
        "exposure",
        {
            "instrument": "LSSTCam",
            "id": EXPOSURE_ID,
            "obs_id": "MC_O_20250415_000123",
            "physical_filter": "r_57",
            "day_obs": 20250415,
            "seq_num": 123,
            "exposure_time": 30.0,
            "tracking_ra": RA,
            "tracking_dec": DEC,
        },
    ),
    ("dataset_type", {"name": "calexp", "storage_class": "ExposureF", "dimensions": ["instrument", "visit"]}),
    ("collection", {"name": "LSSTCam/runs/test", "type": "RUN"}),
    ("collection", {"name": "LSSTCam/tagged", "type": "TAGGED"}),
    ("collection", {"name": "LSSTCam/defaults", "type": "CHAINED"}),
    (
        "dataset",
        {
            "id": DATASET_ID,
            "dataset_type": "calexp",
            "run": "LSSTCam/runs/test",
            "data_id": {"instrument": "LSSTCam", "visit": EXPOSURE_ID, "detector": 94},
        },
    ),
    (
        "efd_topic",
        {"name": "lsst.sal.MTMount.azimuth", "csc": "MTMount", "kind": "telemetry", "field_schema": {}},
    ),
    ("qc_metric", {"name": "validate_drp.PA1", "unit": "mmag", "description": "Photometric repeatability."}),
    (
        "qc_threshold",
        {
            "name": "validate_drp.PA1.design",
            "metric": "validate_drp.PA1",
            "operator": "<=",
            "value": 5.0,
            "unit": "mmag",
            "level": "design",
        },
    ),
    (
        "qc_measurement",
        {
            "metric": "validate_drp.PA1",
            "value": 7.5,
            "unit": "mmag",
            "scope": "exposure",
            "instrument": "LSSTCam",
            "exposure": EXPOSURE_ID,
        },
    ),
    ("job", {"job_id": "seedjob", "query": "SELECT 1"}),
]


def seed(conn: psycopg.Connection) -> None:
    for table, row in SEED:
        insert(conn, table, row)


# One more valid row per table, given the seed. Each rejection case below changes one of these in one way, so
# the case fails for the reason it names and no other (test_valid_row_is_accepted proves the base is valid).
VALID: dict[str, dict[str, Any]] = {
    "site": {"name": "ukdf", "role": "satellite", "root_uri": "davs://ukdf.example.org/"},
    "shard": {"name": "shard1", "kind": "postgres", "site": "usdf"},
    "catalog_table": {
        "name": "dp1.DiaObject",
        "role": "director",
        "id_column": "diaObjectId",
        "ra_column": "ra",
        "dec_column": "dec",
        "chunk_order": CHUNK_ORDER,
        "storage_kind": "postgres",
    },
    "chunk": {
        "table_name": "dp1.Object",
        "chunk_order": 0,
        "chunk_id": 11,
        "healpix_29_min": healpix_29_range(0, 11)[0],
        "healpix_29_max": healpix_29_range(0, 11)[1],
    },
    "chunk_replica": {
        "table_name": "dp1.Object",
        "chunk_order": CHUNK_ORDER,
        "chunk_id": CHUNK_ID,
        "shard": "pg1",
        "checksum": "sha256:9f86d081884c7d65",
    },
    "director_index": {
        "table_name": "dp1.Object",
        "object_id": 1002,
        "chunk_order": CHUNK_ORDER,
        "chunk_id": CHUNK_ID,
    },
    "exposure": {
        "instrument": "LSSTCam",
        "id": EXPOSURE_ID + 1,
        "obs_id": "MC_O_20250415_000124",
        "physical_filter": "r_57",
        "day_obs": 20250415,
        "seq_num": 124,
        "exposure_time": 30.0,
    },
    "dataset_type": {"name": "raw", "storage_class": "Exposure", "dimensions": ["instrument", "exposure"]},
    "collection": {"name": "LSSTCam/runs/other", "type": "RUN"},
    "collection_chain": {"parent": "LSSTCam/defaults", "position": 0, "child": "LSSTCam/runs/test"},
    "dataset": {
        "id": uuid.UUID("8d4f5e2a-1b3c-4d5e-8f90-112233445566"),
        "dataset_type": "calexp",
        "run": "LSSTCam/runs/test",
        "data_id": {"instrument": "LSSTCam", "visit": EXPOSURE_ID, "detector": 95},
    },
    "datastore_record": {
        "dataset_id": DATASET_ID,
        "site": "usdf",
        "path": "LSSTCam/runs/test/calexp/calexp_94.fits",
        "size_bytes": 123_456_789,
        "checksum": "d41d8cd98f00b204e9800998ecf8427e",
        "checksum_algorithm": "md5",
        "formatter": "lsst.obs.base.formatters.fitsExposure.FitsExposureFormatter",
        "file_format": "fits",
    },
    "efd_topic": {
        "name": "lsst.sal.ATDome.logevent_azimuthInPosition",
        "csc": "ATDome",
        "kind": "event",
        "field_schema": {"type": "record", "fields": [{"name": "inPosition", "type": "boolean"}]},
    },
    "efd_sample": {
        "topic": "lsst.sal.MTMount.azimuth",
        "sample_time": dt.datetime(2025, 4, 15, 3, 0, 0, 123456, tzinfo=dt.UTC),
        "private_snd_stamp": 1744686037.123456,
        "fields": {"actualPosition": 181.5, "actualVelocity": 0.01},
    },
    "qc_threshold": {
        "name": "validate_drp.PA1.minimum",
        "metric": "validate_drp.PA1",
        "operator": "<=",
        "value": 8.0,
        "unit": "mmag",
        "level": "minimum",
    },
    "qc_measurement": {
        "metric": "validate_drp.PA1",
        "value": 4.2,
        "unit": "mmag",
        "scope": "detector",
        "instrument": "LSSTCam",
        "exposure": EXPOSURE_ID,
        "detector": 94,
    },
    "qc_alarm": {
        "threshold_id": 1,
        "measurement_id": 1,
        "severity": "warning",
        "message": "validate_drp.PA1 = 7.5 mmag, design requires <= 5.0 mmag",
    },
    "job": {
        "job_id": "j1",
        "phase": "COMPLETED",
        "lang": "ADQL",
        "query": "SELECT TOP 10 * FROM dp1.Object",
        "parameters": {"MAXREC": "10"},
        "creation_time": dt.datetime(2025, 4, 14, 23, 59, tzinfo=dt.UTC),
        "start_time": dt.datetime(2025, 4, 15, tzinfo=dt.UTC),
        "end_time": dt.datetime(2025, 4, 15, 0, 1, tzinfo=dt.UTC),
        "row_count": 10,
    },
}

REJECTED: list[tuple[str, dict[str, Any], type[psycopg.Error], str]] = [
    ("site", {"role": "moon"}, errors.CheckViolation, "ck_site_role"),
    ("shard", {"kind": "mysql"}, errors.CheckViolation, "ck_shard_kind"),
    ("shard", {"state": "broken"}, errors.CheckViolation, "ck_shard_state"),
    ("shard", {"name": "Shard-1"}, errors.CheckViolation, "ck_shard_name"),
    ("shard", {"site": "mars"}, errors.ForeignKeyViolation, "fk_shard_site"),
    ("catalog_table", {"role": "sharded"}, errors.CheckViolation, "ck_catalog_table_role"),
    ("catalog_table", {"name": "Object; DROP TABLE x"}, errors.CheckViolation, "ck_catalog_table_name"),
    ("catalog_table", {"storage_kind": "mysql"}, errors.CheckViolation, "ck_catalog_table_storage_kind"),
    ("catalog_table", {"chunk_order": 30}, errors.CheckViolation, "ck_catalog_table_chunk_order"),
    ("catalog_table", {"chunk_order": None}, errors.CheckViolation, "ck_catalog_table_chunk_order"),
    ("catalog_table", {"role": "replicated"}, errors.CheckViolation, "ck_catalog_table_chunk_order"),
    ("catalog_table", {"role": "child"}, errors.CheckViolation, "ck_catalog_table_director"),
    ("catalog_table", {"director_table": "dp1.Object"}, errors.CheckViolation, "ck_catalog_table_director"),
    ("catalog_table", {"ra_column": None}, errors.CheckViolation, "ck_catalog_table_director_columns"),
    ("catalog_table", {"overlap_arcsec": -1.0}, errors.CheckViolation, "ck_catalog_table_overlap"),
    (
        "catalog_table",
        {
            "role": "child",
            "director_table": "dp1.Object",
            "director_key_column": "objectId",
            "chunk_order": 8,
        },
        errors.ForeignKeyViolation,
        "fk_catalog_table_director",
    ),
    ("chunk", {"healpix_29_min": 0}, errors.CheckViolation, "ck_chunk_healpix_29_range"),
    ("chunk", {"table_name": "dp1.Nothing"}, errors.ForeignKeyViolation, "fk_chunk_table"),
    ("chunk_replica", {"state": "lost"}, errors.CheckViolation, "ck_chunk_replica_state"),
    ("chunk_replica", {"version": 0}, errors.CheckViolation, "ck_chunk_replica_version"),
    ("chunk_replica", {"checksum": "9F86D081"}, errors.CheckViolation, "ck_chunk_replica_checksum"),
    ("chunk_replica", {"shard": "nowhere"}, errors.ForeignKeyViolation, "fk_chunk_replica_shard"),
    ("chunk_replica", {"chunk_id": CHUNK_ID + 1}, errors.ForeignKeyViolation, "fk_chunk_replica_chunk"),
    ("director_index", {"chunk_id": CHUNK_ID + 1}, errors.ForeignKeyViolation, "fk_director_index_chunk"),
    ("director_index", {"object_id": 1001}, errors.UniqueViolation, "director_index_pkey"),
    ("exposure", {"physical_filter": "X_99"}, errors.ForeignKeyViolation, "fk_exposure_physical_filter"),
    ("exposure", {"day_obs": 20250416}, errors.ForeignKeyViolation, "fk_exposure_day_obs"),
    ("exposure", {"obs_id": "MC_O_20250415_000123"}, errors.UniqueViolation, "un_exposure_obs_id"),
    ("exposure", {"tracking_dec": 91.0}, errors.CheckViolation, "ck_exposure_pointing"),
    ("exposure", {"exposure_time": -1.0}, errors.CheckViolation, "ck_exposure_times"),
    ("dataset_type", {"dimensions": {"instrument": 1}}, errors.CheckViolation, "ck_dataset_type_dimensions"),
    ("dataset_type", {"name": "raw frames"}, errors.CheckViolation, "ck_dataset_type_name"),
    ("collection", {"type": "CALIBRATION"}, errors.CheckViolation, "ck_collection_type"),
    ("collection_chain", {"child": "LSSTCam/defaults"}, errors.CheckViolation, "ck_collection_chain_member"),
    (
        "collection_chain",
        {"child": "LSSTCam/missing"},
        errors.ForeignKeyViolation,
        "fk_collection_chain_child",
    ),
    ("dataset", {"run": "LSSTCam/runs/missing"}, errors.ForeignKeyViolation, "fk_dataset_run"),
    ("dataset", {"dataset_type": "bias"}, errors.ForeignKeyViolation, "fk_dataset_dataset_type"),
    ("dataset", {"data_id": [1, 2]}, errors.CheckViolation, "ck_dataset_data_id"),
    (
        "dataset",  # the seed dataset's data ID, keys in another order: JSONB equality ignores key order
        {"data_id": {"detector": 94, "visit": EXPOSURE_ID, "instrument": "LSSTCam"}},
        errors.UniqueViolation,
        "un_dataset_data_id",
    ),
    ("datastore_record", {"checksum_algorithm": None}, errors.CheckViolation, "ck_datastore_record_checksum"),
    (
        "datastore_record",
        {"checksum_algorithm": "crc64"},
        errors.CheckViolation,
        "ck_datastore_record_checksum",
    ),
    ("datastore_record", {"size_bytes": -1}, errors.CheckViolation, "ck_datastore_record_size"),
    ("datastore_record", {"site": "mars"}, errors.ForeignKeyViolation, "fk_datastore_record_site"),
    ("efd_topic", {"kind": "metric"}, errors.CheckViolation, "ck_efd_topic_kind"),
    ("efd_topic", {"retention_days": 0}, errors.CheckViolation, "ck_efd_topic_retention"),
    ("efd_sample", {"topic": "lsst.sal.Nope.x"}, errors.ForeignKeyViolation, "fk_efd_sample_topic"),
    ("efd_sample", {"fields": [181.5]}, errors.CheckViolation, "ck_efd_sample_fields"),
    ("qc_threshold", {"level": "ideal"}, errors.CheckViolation, "ck_qc_threshold_level"),
    ("qc_threshold", {"operator": "=~"}, errors.CheckViolation, "ck_qc_threshold_operator"),
    ("qc_threshold", {"severity": "fatal"}, errors.CheckViolation, "ck_qc_threshold_severity"),
    ("qc_threshold", {"name": "validate_drp.PA1.design"}, errors.UniqueViolation, "un_qc_threshold_name"),
    (
        "qc_measurement",
        {"scope": "exposure", "exposure": None},
        errors.CheckViolation,
        "ck_qc_measurement_scope",
    ),
    ("qc_measurement", {"scope": "production"}, errors.CheckViolation, "ck_qc_measurement_scope"),
    ("qc_measurement", {"exposure": 1}, errors.ForeignKeyViolation, "fk_qc_measurement_exposure"),
    ("qc_measurement", {"detector": 9999}, errors.ForeignKeyViolation, "fk_qc_measurement_detector"),
    ("qc_alarm", {"state": "cleared"}, errors.CheckViolation, "ck_qc_alarm_state"),
    (
        "qc_alarm",
        {"cleared_at": dt.datetime(2000, 1, 1, tzinfo=dt.UTC), "state": "cleared"},
        errors.CheckViolation,
        "ck_qc_alarm_times",
    ),
    ("qc_alarm", {"severity": "fatal"}, errors.CheckViolation, "ck_qc_alarm_severity"),
    ("qc_alarm", {"measurement_id": 999}, errors.ForeignKeyViolation, "fk_qc_alarm_measurement"),
    ("job", {"phase": "RUNNING"}, errors.CheckViolation, "ck_job_phase"),
    ("job", {"phase": "ERROR"}, errors.CheckViolation, "ck_job_error"),
    ("job", {"end_time": dt.datetime(2025, 4, 14, tzinfo=dt.UTC)}, errors.CheckViolation, "ck_job_times"),
    ("job", {"execution_duration": -5}, errors.CheckViolation, "ck_job_counts"),
    ("job", {"parameters": "[]"}, errors.CheckViolation, "ck_job_parameters"),
]


# ---------------------------------------------------------------------------------------------------------
# The Felis document
# ---------------------------------------------------------------------------------------------------------


def test_schema_passes_felis_strict_validation(felis_schema: Schema) -> None:
    assert felis_schema.name == "dms"
    assert felis_schema.version == SCHEMA_VERSION
    assert {table.name for table in felis_schema.tables} == EXPECTED_TABLES


def test_every_table_has_a_primary_key_and_everything_a_description(felis_schema: Schema) -> None:
    missing_key = [table.name for table in felis_schema.tables if not table.primary_key]
    undescribed = [
        f"{table.name}.{obj.name}"
        for table in felis_schema.tables
        for obj in [table, *table.columns, *table.constraints, *table.indexes]
        if not (obj.description or "").strip()
    ]
    assert missing_key == []
    assert undescribed == []


def test_constraint_and_index_names_say_kind_and_table(felis_schema: Schema) -> None:
    prefixes = {CheckConstraint: "ck", ForeignKeyConstraint: "fk", UniqueConstraint: "un"}
    misnamed = [
        obj.name
        for table in felis_schema.tables
        for obj, prefix in [
            *((c, prefixes[type(c)]) for c in table.constraints),
            *((i, "idx") for i in table.indexes),
        ]
        if not obj.name.startswith(f"{prefix}_{table.name}_")
    ]
    assert misnamed == []


def test_metadata_uses_the_dms_postgresql_schema(metadata: sa.MetaData) -> None:
    assert metadata.schema == "dms"
    assert {table.name for table in metadata.tables.values()} == EXPECTED_TABLES
    assert all(table.schema == "dms" for table in metadata.tables.values())


# ---------------------------------------------------------------------------------------------------------
# The schema as PostgreSQL creates it
# ---------------------------------------------------------------------------------------------------------


def test_create_and_drop_on_a_fresh_database(pg_database: str, metadata: sa.MetaData) -> None:
    create_dms_schema(pg_database, metadata)
    engine = sa.create_engine(sa.make_url(pg_database).set(drivername="postgresql+psycopg"))
    try:
        with engine.begin() as conn:
            assert set(sa.inspect(conn).get_table_names(schema="dms")) == EXPECTED_TABLES
            metadata.drop_all(conn)  # foreign keys let the tables be dropped in dependency order
            assert sa.inspect(conn).get_table_names(schema="dms") == []
    finally:
        engine.dispose()


def _catalog(db: psycopg.Connection, query: str) -> list[tuple[Any, ...]]:
    return db.execute(query).fetchall()


def test_every_table_has_a_primary_key_in_postgresql(db: psycopg.Connection) -> None:
    rows = _catalog(
        db,
        """
        SELECT c.relname, EXISTS (SELECT 1 FROM pg_constraint p WHERE p.conrelid = c.oid AND p.contype = 'p')
        FROM pg_class c WHERE c.relnamespace = 'dms'::regnamespace AND c.relkind = 'r'
        """,
    )
    assert {name for name, _ in rows} == EXPECTED_TABLES
    assert [name for name, has_key in rows if not has_key] == []


def test_descriptions_become_postgresql_comments(db: psycopg.Connection) -> None:
    uncommented = _catalog(
        db,
        """
        SELECT c.relname, a.attname
        FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE c.relnamespace = 'dms'::regnamespace AND c.relkind = 'r'
          AND (coalesce(col_description(c.oid, a.attnum), '') = ''
               OR coalesce(obj_description(c.oid, 'pg_class'), '') = '')
        """,
    )
    assert uncommented == []
    # Felis's constraint descriptions reach PostgreSQL too (primary keys have none; index ones are dropped).
    uncommented_constraints = _catalog(
        db,
        "SELECT conname FROM pg_constraint WHERE connamespace = 'dms'::regnamespace AND contype <> 'p' "
        "AND coalesce(obj_description(oid, 'pg_constraint'), '') = ''",
    )
    assert uncommented_constraints == []


def test_constraints_and_indexes_exist_under_their_felis_names(
    db: psycopg.Connection, felis_schema: Schema
) -> None:
    kinds = {CheckConstraint: "c", ForeignKeyConstraint: "f", UniqueConstraint: "u"}
    expected = {(c.name, kinds[type(c)]) for t in felis_schema.tables for c in t.constraints}
    found = set(
        _catalog(
            db, "SELECT conname, contype::text FROM pg_constraint WHERE connamespace = 'dms'::regnamespace"
        )
    )
    assert expected <= found
    assert {(name, kind) for name, kind in found if kind != "p"} == expected
    index_names = {
        row[0] for row in _catalog(db, "SELECT indexname FROM pg_indexes WHERE schemaname = 'dms'")
    }
    assert {i.name for t in felis_schema.tables for i in t.indexes} <= index_names


def test_foreign_keys_reference_dms_tables_with_identical_column_types(
    db: psycopg.Connection, felis_schema: Schema
) -> None:
    pairs = _catalog(
        db,
        """
        SELECT con.conname, con.confrelid::regclass::text,
               format_type(a.atttypid, a.atttypmod), format_type(r.atttypid, r.atttypmod)
        FROM pg_constraint con
        CROSS JOIN LATERAL unnest(con.conkey, con.confkey) AS k(col, refcol)
        JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.col
        JOIN pg_attribute r ON r.attrelid = con.confrelid AND r.attnum = k.refcol
        WHERE con.contype = 'f' AND con.connamespace = 'dms'::regnamespace
        """,
    )
    foreign_keys = {c.name for t in felis_schema.tables for c in t.constraints if c.type == "ForeignKey"}
    assert {name for name, *_ in pairs} == foreign_keys
    assert all(referenced.startswith("dms.") for _, referenced, _, _ in pairs)
    assert [(name, own, ref) for name, _, own, ref in pairs if own != ref] == []


def test_column_types_follow_the_overrides(db: psycopg.Connection, felis_schema: Schema) -> None:
    types = {
        (table, column): (data_type, precision)
        for table, column, data_type, precision in _catalog(
            db,
            "SELECT table_name, column_name, data_type, datetime_precision "
            "FROM information_schema.columns WHERE table_schema = 'dms'",
        )
    }
    expected_by_override = {
        "TIMESTAMP(1)": ("timestamp with time zone", 6),  # felis passes 1 as timezone=True, not a precision
        "JSONB": ("jsonb", None),
        "UUID": ("uuid", None),
    }
    for table in felis_schema.tables:
        for column in table.columns:
            found = types[table.name, column.name]
            if column.postgresql_datatype is not None:
                assert found == expected_by_override[column.postgresql_datatype], (table.name, column.name)
            elif column.datatype == "timestamp":
                # Only observation times, which are TAI and so carry no UTC offset, are zone-less.
                assert found == ("timestamp without time zone", 6), (table.name, column.name)
                assert "TAI" in (column.description or ""), (table.name, column.name)
    assert {key for key, found in types.items() if found == ("jsonb", None)} == {
        ("dataset_type", "dimensions"),
        ("dataset", "data_id"),
        ("efd_topic", "field_schema"),
        ("efd_sample", "fields"),
        ("qc_metric", "tags"),
        ("qc_measurement", "data_id"),
        ("qc_threshold", "applies_to"),
        ("qc_alarm", "data_id"),
        ("qc_alarm", "series"),
        ("efd_transform_column", "fields"),
        ("efd_transform_column", "function_args"),
        ("gateway_event", "payload"),
        ("job", "parameters"),
        ("distribution_subscription", "dataset_types"),
        ("distribution_subscription", "runs"),
        ("distribution_subscription", "tables"),
        ("prompt_visit", "detectors"),
        ("prompt_visit", "timings"),
        ("prompt_detector_run", "timings"),
        ("batch_job", "workflow"),
        *(("batch_task", c) for c in ("config", "data_id", "inputs", "args", "outputs")),
        ("batch_dataset", "value"),
        ("ocs_command", "parameters"),
    }


# ---------------------------------------------------------------------------------------------------------
# What the database enforces
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("table", sorted(VALID))
def test_valid_row_is_accepted(db: psycopg.Connection, table: str) -> None:
    insert(db, table, VALID[table])
    (count,) = db.execute(sql.SQL("SELECT count(*) FROM dms.{}").format(sql.Identifier(table))).fetchone()
    seeded = sum(seed_table == table for seed_table, _ in SEED)
    assert count == seeded + 1


@pytest.mark.parametrize(
    ("table", "change", "error", "constraint"),
    REJECTED,
    ids=[f"{constraint}:{','.join(change)}" for _, change, _, constraint in REJECTED],
)
def test_bad_row_is_refused_by_the_database(
    db: psycopg.Connection, table: str, change: dict[str, Any], error: type[psycopg.Error], constraint: str
) -> None:
    with refused(db, error, constraint):
        insert(db, table, {**VALID[table], **change})


def test_jsonb_columns_store_and_query_json(db: psycopg.Connection) -> None:
    detector, data_id = db.execute(
        "SELECT (data_id->>'detector')::int, data_id FROM dms.dataset WHERE data_id @> %s",
        [Jsonb({"instrument": "LSSTCam", "detector": 94})],
    ).fetchone()
    assert detector == 94
    assert data_id == {"instrument": "LSSTCam", "visit": EXPOSURE_ID, "detector": 94}
    insert(db, "efd_sample", VALID["efd_sample"])
    (position,) = db.execute("SELECT (fields->>'actualPosition')::float8 FROM dms.efd_sample").fetchone()
    assert position == 181.5


def test_jsonb_columns_refuse_text_that_is_not_json(db: psycopg.Connection) -> None:
    with refused(db, errors.InvalidTextRepresentation):
        db.execute("UPDATE dms.job SET parameters = %s::text::jsonb", ["{MAXREC: 10"])
    with refused(db, errors.InvalidTextRepresentation):
        insert(db, "efd_sample", {**VALID["efd_sample"], "fields": "{actualPosition"})


def test_defaults(db: psycopg.Connection) -> None:
    state, registered_at = db.execute(
        "SELECT state, registered_at FROM dms.shard WHERE name = 'pg1'"
    ).fetchone()
    assert state == "active"
    assert registered_at.tzinfo is not None
    assert abs(dt.datetime.now(dt.UTC) - registered_at) < dt.timedelta(hours=1)
    overlap, row_count = db.execute(
        "SELECT overlap_arcsec, row_count FROM dms.catalog_table WHERE name = 'dp1.Object'"
    ).fetchone()
    assert (overlap, row_count) == (60.0, 0)
    phase, parameters, duration = db.execute(
        "SELECT phase, parameters, execution_duration FROM dms.job WHERE job_id = 'seedjob'"
    ).fetchone()
    assert (phase, parameters, duration) == ("PENDING", {}, 0)
    insert(db, "chunk_replica", VALID["chunk_replica"])
    replica = db.execute(
        "SELECT state, version, is_primary FROM dms.chunk_replica WHERE shard = 'pg1'"
    ).fetchone()
    assert replica == ("pending", 1, False)


def test_timestamps_with_time_zone_keep_the_instant(db: psycopg.Connection) -> None:
    santiago = dt.timezone(dt.timedelta(hours=-4))
    sent = dt.datetime(2025, 4, 15, 23, 30, tzinfo=santiago)
    insert(db, "efd_sample", {**VALID["efd_sample"], "sample_time": sent})
    (stored,) = db.execute("SELECT sample_time FROM dms.efd_sample").fetchone()
    assert stored == sent
    assert stored.astimezone(dt.UTC) == dt.datetime(2025, 4, 16, 3, 30, tzinfo=dt.UTC)


def test_uuid_and_autoincrement_keys(db: psycopg.Connection) -> None:
    (dataset_id,) = db.execute("SELECT id FROM dms.dataset").fetchone()
    assert dataset_id == DATASET_ID
    insert(db, "qc_measurement", VALID["qc_measurement"])
    ids = [row[0] for row in db.execute("SELECT measurement_id FROM dms.qc_measurement ORDER BY 1")]
    assert len(ids) == 2
    assert ids[0] == 1  # the seed's; sequences are not rolled back, so the new id is only known to be larger
    assert ids[1] > ids[0]


@pytest.mark.parametrize(
    ("order", "pixel"), [(0, 0), (0, 11), (29, 0), (29, 12 * 4**29 - 1), (CHUNK_ORDER, CHUNK_ID)]
)
def test_chunk_accepts_every_pixel_with_its_exact_range(
    db: psycopg.Connection, order: int, pixel: int
) -> None:
    low, high = healpix_29_range(order, pixel)
    row = {"table_name": "dp1.Visit", "chunk_order": order, "chunk_id": pixel, "healpix_29_min": low}
    with refused(db, errors.CheckViolation, "ck_chunk_healpix_29_range"):
        insert(db, "chunk", {**row, "healpix_29_max": high + 1})
    insert(db, "chunk", {**row, "healpix_29_max": high})


@pytest.mark.parametrize(
    ("order", "pixel"), [(0, -1), (0, 12), (CHUNK_ORDER, 12 * 4**CHUNK_ORDER), (29, 12 * 4**29)]
)
def test_chunk_refuses_pixels_outside_the_sphere(db: psycopg.Connection, order: int, pixel: int) -> None:
    low, high = healpix_29_range(order, pixel)  # consistent range, so only the pixel itself is wrong
    row = {"chunk_order": order, "chunk_id": pixel, "healpix_29_min": low, "healpix_29_max": high}
    with refused(db, errors.CheckViolation, "ck_chunk_pixel"):
        insert(db, "chunk", {"table_name": "dp1.Visit", **row})


def test_director_index_finds_the_shard_and_range_of_an_object(db: psycopg.Connection) -> None:
    """objectId -> chunk -> primary replica's shard; the chunk's range holds the object's _healpix_29."""
    shard, low, high = db.execute(
        """
        SELECT r.shard, c.healpix_29_min, c.healpix_29_max
        FROM dms.director_index d
        JOIN dms.chunk c USING (table_name, chunk_order, chunk_id)
        JOIN dms.chunk_replica r USING (table_name, chunk_order, chunk_id)
        WHERE d.table_name = 'dp1.Object' AND d.object_id = 1001 AND r.is_primary
        """
    ).fetchone()
    healpix_29 = int(healpy.ang2pix(2**29, RA, DEC, nest=True, lonlat=True))
    assert shard == "shard0"
    assert low <= healpix_29 <= high
    (chunk_ids,) = db.execute(
        "SELECT array_agg(chunk_id) FROM dms.chunk "
        "WHERE table_name = 'dp1.Object' AND healpix_29_min <= %s AND healpix_29_max >= %s",
        [healpix_29, healpix_29],
    ).fetchone()
    assert chunk_ids == [CHUNK_ID]


def test_removing_a_table_cascades_to_its_placement_but_shards_in_use_stay(db: psycopg.Connection) -> None:
    with refused(db, errors.ForeignKeyViolation, "fk_chunk_replica_shard"):
        db.execute("DELETE FROM dms.shard WHERE name = 'shard0'")
    with refused(db, errors.ForeignKeyViolation, "fk_catalog_table_director"):
        db.execute("DELETE FROM dms.catalog_table WHERE name = 'dp1.Object'")  # dp1.Source follows it
    db.execute("DELETE FROM dms.catalog_table WHERE name IN ('dp1.Source', 'dp1.Object')")
    counts = db.execute(
        "SELECT (SELECT count(*) FROM dms.chunk), (SELECT count(*) FROM dms.chunk_replica), "
        "(SELECT count(*) FROM dms.director_index)"
    ).fetchone()
    assert counts == (0, 0, 0)
    db.execute("DELETE FROM dms.shard WHERE name = 'shard0'")


def test_datasets_are_protected_until_their_files_are_forgotten(db: psycopg.Connection) -> None:
    insert(db, "datastore_record", VALID["datastore_record"])
    insert(db, "tagged_dataset", {"collection": "LSSTCam/tagged", "dataset_id": DATASET_ID})
    with refused(db, errors.ForeignKeyViolation, "fk_datastore_record_dataset"):
        db.execute("DELETE FROM dms.dataset WHERE id = %s", [DATASET_ID])
    with refused(db, errors.ForeignKeyViolation, "fk_dataset_run"):
        db.execute("DELETE FROM dms.collection WHERE name = 'LSSTCam/runs/test'")
    db.execute("DELETE FROM dms.datastore_record WHERE dataset_id = %s", [DATASET_ID])
    db.execute("DELETE FROM dms.dataset WHERE id = %s", [DATASET_ID])
    (tagged,) = db.execute("SELECT count(*) FROM dms.tagged_dataset").fetchone()
    assert tagged == 0


def test_alarm_lifecycle(db: psycopg.Connection) -> None:
    insert(db, "qc_alarm", VALID["qc_alarm"])
    with refused(db, errors.UniqueViolation, "un_qc_alarm_threshold_measurement"):
        insert(db, "qc_alarm", VALID["qc_alarm"])  # re-evaluating the same threshold raises nothing new
    db.execute("UPDATE dms.qc_alarm SET state = 'acknowledged', acknowledged_at = now()")
    db.execute("UPDATE dms.qc_alarm SET state = 'cleared', cleared_at = now()")
    db.execute("DELETE FROM dms.qc_measurement")  # alarms go with the measurement they refer to
    (alarms,) = db.execute("SELECT count(*) FROM dms.qc_alarm").fetchone()
    assert alarms == 0
