"""The Alert Mini-Broker's tables (schema 1.12.0), in a PostgreSQL schema `minibroker` of their own.

* `filter`: each user's filters (the text they wrote, as checked by sqlglot), owned by a user account.
* `watch`: the positions (with radii) of each user's watch lists.
* `feature`: light-curve features per DiaObject, with a pgvector column `feature_vector` when the server has
  pgvector (else a `double precision[]`, and similarity filters are refused with a message saying why).
* `match`: what each filter selected on each visit (the alert id is the packet's reference in the archive).
* `run`: each filter's evaluation on each visit: matches, time taken, or the error its owner is told.

An index on apdb.DiaSource (visit, detector) lets the evaluator read a visit's alerts without a table scan.
Filters run as `dms_reader`, which may read `feature` and `watch` (through the compiled filter only, always
restricted to the owner's lists) and the APDB's DiaSource and DiaObject, and nothing else of this schema.

Revision ID: c0016
Revises: c0017
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from dms.migrations.schema_info import set_schema_version

revision: str = "c0016"
down_revision: str | None = "c0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

READER = "dms_reader"
FEATURE_DIMENSIONS = 6
#: Index name -> (table, definition): the mini-broker reads each visit's DiaSources once (the drift test
#: lists these as intended differences from apdb.yaml).
EXTRA_INDEXES = {"IDX_DiaSource_visit_detector": ("DiaSource", '("visit", "detector")')}
TABLES = """
CREATE SCHEMA IF NOT EXISTS minibroker;
CREATE TABLE minibroker.filter (
    filter_id bigserial PRIMARY KEY,
    owner varchar(64) NOT NULL REFERENCES dms.user_account (name) ON DELETE CASCADE,
    name varchar(64) NOT NULL,
    select_text text NOT NULL DEFAULT '',
    where_text text NOT NULL,
    active boolean NOT NULL DEFAULT true,
    created_at timestamp(1) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    UNIQUE (owner, name)
);
CREATE TABLE minibroker.watch (
    owner varchar(64) NOT NULL REFERENCES dms.user_account (name) ON DELETE CASCADE,
    watchlist varchar(64) NOT NULL,
    entry_name varchar(128) NOT NULL DEFAULT '',
    ra double precision NOT NULL CHECK (ra >= 0 AND ra < 360),
    dec double precision NOT NULL CHECK (dec >= -90 AND dec <= 90),
    radius_arcsec double precision NOT NULL CHECK (radius_arcsec > 0 AND radius_arcsec <= 36000)
);
CREATE INDEX idx_watch_owner_list ON minibroker.watch (owner, watchlist, dec);
CREATE TABLE minibroker.match (
    filter_id bigint NOT NULL REFERENCES minibroker.filter (filter_id) ON DELETE CASCADE,
    owner varchar(64) NOT NULL,
    visit bigint NOT NULL,
    alert_id bigint NOT NULL,
    dia_object_id bigint,
    selected jsonb NOT NULL DEFAULT '{}',
    matched_at timestamp(1) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    seq bigserial,
    PRIMARY KEY (filter_id, alert_id)
);
CREATE INDEX idx_match_owner_seq ON minibroker.match (owner, seq);
CREATE TABLE minibroker.run (
    filter_id bigint NOT NULL REFERENCES minibroker.filter (filter_id) ON DELETE CASCADE,
    owner varchar(64) NOT NULL,
    visit bigint NOT NULL,
    matches integer NOT NULL,
    seconds double precision NOT NULL,
    error text,
    ran_at timestamp(1) NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX idx_run_owner ON minibroker.run (owner, ran_at);
"""


def upgrade() -> None:
    for statement in TABLES.split(";"):
        if statement.strip():
            op.execute(statement)
    bind = op.get_bind()
    has_vector = bind.execute(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'vector'")).first()
    vector_type = f"vector({FEATURE_DIMENSIONS})" if has_vector else "double precision[]"
    op.execute(
        "CREATE TABLE minibroker.feature (dia_object_id bigint PRIMARY KEY, n_points integer NOT NULL, "
        "amplitude double precision, slope double precision, periodogram_period double precision, "
        "periodogram_power double precision, colour_g_r double precision, mean_flux double precision, "
        f"feature_vector {vector_type}, computed_at timestamp(1) NOT NULL DEFAULT CURRENT_TIMESTAMP)"
    )
    for index, (table, definition) in EXTRA_INDEXES.items():
        op.execute(f'CREATE INDEX IF NOT EXISTS "{index}" ON apdb."{table}" {definition}')
    op.execute(f"GRANT USAGE ON SCHEMA minibroker TO {READER}")
    op.execute(f"GRANT SELECT ON minibroker.feature, minibroker.watch TO {READER}")
    op.execute(f"GRANT USAGE ON SCHEMA apdb TO {READER}")
    op.execute(f'GRANT SELECT ON apdb."DiaSource", apdb."DiaObject" TO {READER}')
    set_schema_version("1.12.0")


def downgrade() -> None:
    op.execute(f'REVOKE SELECT ON apdb."DiaSource", apdb."DiaObject" FROM {READER}')
    op.execute(f"REVOKE USAGE ON SCHEMA apdb FROM {READER}")
    op.execute("DROP SCHEMA IF EXISTS minibroker CASCADE")
    for index in EXTRA_INDEXES:
        op.execute(f'DROP INDEX IF EXISTS apdb."{index}"')
    set_schema_version("1.11.0")
