"""VO services: the read-only role user queries run under, TAP_SCHEMA, the ADQL functions.

* Role ``dms_reader`` (NOLOGIN; cluster-wide, so created only if missing): TAP, SCS and SIA run every user
  query after ``SET LOCAL ROLE dms_reader`` in a READ ONLY transaction. It may read the published schemas
  (``ivoa``, ``tap_schema``) and nothing of ``dms`` (jobs, placement, registry). The migrating user is made
  a member so that it may switch to it.
* Schema ``tap_schema`` with the TAP 1.1 tables as lsst-felis defines them (``felis.tap_schema``); their
  rows are written by ``dms.services.vo.tap_schema.sync`` from the Felis definitions.
* ObsCore 1.1 columns that Rubin's ``ivoa.ObsCore`` (lsst-sdm-schemas) lacks but the standard requires:
  ``access_estsize`` and ``pol_states`` (the drift test lists them as intended differences).
* The ``adql_*`` / ``ivo_*`` functions of ``udfs/*/50_adql.sql`` (CREATE OR REPLACE of every UDF).

Revision ID: c0005
Revises: c0004
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from dms.migrations.udf_ops import install_udfs

revision: str = "c0005"
down_revision: str | None = "c0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

READER = "dms_reader"
OBSCORE_EXTRA_COLUMNS = {"access_estsize": "bigint", "pol_states": "varchar(64)"}
PUBLISHED = ("ivoa", "tap_schema")
ADQL_FUNCTIONS = (
    "adql_area(double precision[])",
    "adql_centroid(double precision[])",
    "adql_contains(double precision[], double precision[])",
    "adql_round(double precision, integer)",
    "adql_truncate(double precision, integer)",
    "adql_mod(bigint, bigint)",
    "adql_mod(integer, integer)",
    "adql_mod(double precision, double precision)",
    "ivo_hasword(text, text)",
    "ivo_hashlist_has(text, text)",
    "ivo_interval_overlaps(double precision, double precision, double precision, double precision)",
    "ivo_to_jd(timestamp)",
    "ivo_to_mjd(timestamp)",
    "_dms_triangle_area(double precision, double precision, double precision, double precision, "
    "double precision, double precision)",
    "_dms_triangle_excess(double precision, double precision, double precision, double precision, "
    "double precision, double precision, double precision, double precision, double precision)",
)


def upgrade() -> None:
    op.execute(
        f"""DO $$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{READER}') THEN
                CREATE ROLE {READER} NOLOGIN;
            END IF;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;  -- created concurrently
        END $$"""
    )
    op.execute(
        f"""DO $$ BEGIN
            IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
                EXECUTE format('GRANT {READER} TO %I', current_user);
            END IF;
        END $$"""
    )
    op.execute("CREATE SCHEMA IF NOT EXISTS tap_schema")
    from felis.tap_schema import TableManager

    TableManager(engine_url="postgresql://", schema_name="tap_schema").metadata.create_all(op.get_bind())
    for schema in PUBLISHED:
        op.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        op.execute(f"GRANT USAGE ON SCHEMA {schema} TO {READER}")
        op.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {READER}")
        op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO {READER}")
    op.execute(f"REVOKE ALL ON SCHEMA dms FROM {READER}")
    for column, kind in OBSCORE_EXTRA_COLUMNS.items():
        op.execute(f'ALTER TABLE ivoa."ObsCore" ADD COLUMN IF NOT EXISTS {column} {kind}')
    install_udfs()


def downgrade() -> None:
    for signature in ADQL_FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
    for schema in PUBLISHED:
        op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} REVOKE SELECT ON TABLES FROM {READER}")
    op.execute("DROP SCHEMA IF EXISTS tap_schema CASCADE")
    for column in OBSCORE_EXTRA_COLUMNS:
        op.execute(f'ALTER TABLE ivoa."ObsCore" DROP COLUMN IF EXISTS {column}')
    # The role is shared by every database of the server: drop only this database's grants, then the role
    # itself if no other database still uses it.
    op.execute(f"DROP OWNED BY {READER}")
    op.execute(
        f"""DO $$ BEGIN
            DROP ROLE IF EXISTS {READER};
        EXCEPTION WHEN dependent_objects_still_exist THEN NULL;
        END $$"""
    )
