"""Science Platform: groups, released data, personal workspaces and their shares, portal sessions (1.16.0).

* `dms.user_group`, `dms.group_member`: groups of users, for sharing workspace tables;
* `dms.data_release`: which schemas and tables are released (the DAC sees only released data; QA and
  Commissioning instances also show the rest to tokens with the `unreleased` scope);
* `dms.workspace`, `dms.workspace_table`, `dms.workspace_share`: each user's own schema, its tables (with
  their sizes, counted against the user's quota) and read-only shares with users or groups;
* `dms.web_session`: portal sessions (a cookie's hash, bound to the token that logged in);
* `dms.table_visible(schema, table, viewer, unreleased)`: the one visibility rule, used by the services and
  by row-level security on TAP_SCHEMA, so a TAP_SCHEMA query lists only what its caller may read.

Revision ID: c0021
Revises: c0019
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from dms.migrations.schema_info import set_schema_version

revision: str = "c0021"
down_revision: str | None = "c0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = (
    "web_session",
    "workspace_share",
    "workspace_table",
    "workspace",
    "data_release",
    "group_member",
    "user_group",
)
TAP_SCHEMA_TABLES = ("schemas", "tables", "columns", "keys", "key_columns")


def _name(name: str, comment: str, length: int = 64) -> sa.Column:
    return sa.Column(name, sa.VARCHAR(length=length), nullable=False, comment=comment)


def _when(name: str, comment: str) -> sa.Column:
    return sa.Column(
        name,
        postgresql.TIMESTAMP(timezone=1),
        server_default=sa.text("CURRENT_TIMESTAMP"),
        nullable=False,
        comment=comment,
    )


def _groups() -> None:
    op.create_table(
        "user_group",
        _name("name", "Group name."),
        _when("created_at", "When the group was created (UTC)."),
        sa.CheckConstraint("name ~ '^[A-Za-z][A-Za-z0-9_.@-]{0,63}$'", name="ck_user_group_name"),
        sa.PrimaryKeyConstraint("name"),
        schema="dms",
        comment="A group of users, to share workspace tables with. Managed with `dms users group`.",
    )
    op.create_table(
        "group_member",
        _name("group_name", "The group (user_group.name)."),
        _name("user_name", "The member (user_account.name)."),
        sa.ForeignKeyConstraint(
            ["group_name"], ["dms.user_group.name"], name="fk_group_member_group", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_name"], ["dms.user_account.name"], name="fk_group_member_user", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("group_name", "user_name"),
        schema="dms",
        comment="The members of each group.",
    )


def _release() -> None:
    op.create_table(
        "data_release",
        _name("schema_name", "Schema (lower case), e.g. apdb, alerts, dp1."),
        sa.Column(
            "table_name",
            sa.VARCHAR(length=128),
            server_default=sa.text("''"),
            nullable=False,
            comment="Table of the schema (lower case, unqualified); empty, the whole schema.",
        ),
        sa.Column(
            "released",
            sa.BOOLEAN(),
            nullable=False,
            comment="Whether the data are released (visible on the DAC); false, QA and Commissioning only.",
        ),
        _when("updated_at", "When the state was last set (UTC)."),
        sa.PrimaryKeyConstraint("schema_name", "table_name"),
        schema="dms",
        comment="Release state of schemas and tables; anything not listed is released. Set with "
        "`dms release set`.",
    )


def _workspaces() -> None:
    op.create_table(
        "workspace",
        _name("owner", "The user (user_account.name)."),
        _name("schema_name", "The user's own schema, user_<name> (lower case)."),
        sa.Column(
            "max_bytes", sa.BIGINT(), nullable=True, comment="Quota in bytes; NULL, the deployment default."
        ),
        sa.Column(
            "max_rows", sa.BIGINT(), nullable=True, comment="Quota in rows; NULL, the deployment default."
        ),
        _when("created_at", "When the workspace was created (UTC)."),
        sa.ForeignKeyConstraint(
            ["owner"], ["dms.user_account.name"], name="fk_workspace_owner", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("owner"),
        sa.UniqueConstraint("schema_name", name="un_workspace_schema"),
        schema="dms",
        comment="A user's personal workspace, a schema of their own for Level 3 tables, with its quota.",
    )
    op.create_table(
        "workspace_table",
        _name("owner", "The user who owns the table (workspace.owner)."),
        _name("table_name", "Table name in the owner's schema (lower case).", 63),
        sa.Column("row_count", sa.BIGINT(), nullable=False, comment="Rows of the table."),
        sa.Column("byte_count", sa.BIGINT(), nullable=False, comment="Bytes on disk (with indexes, TOAST)."),
        sa.Column("source", sa.TEXT(), nullable=False, comment="Where it came from, a file name or a query."),
        _when("created_at", "When the table was created (UTC)."),
        sa.ForeignKeyConstraint(
            ["owner"], ["dms.workspace.owner"], name="fk_workspace_table_owner", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("owner", "table_name"),
        schema="dms",
        comment="The tables of the personal workspaces (private unless shared).",
    )
    op.create_table(
        "workspace_share",
        _name("owner", "Owner of the shared table."),
        _name("table_name", "The shared table.", 63),
        sa.Column(
            "grantee_kind",
            sa.VARCHAR(length=8),
            nullable=False,
            comment="Whether the grantee is a user or a group.",
        ),
        _name("grantee", "The user or group that may read the table."),
        _when("created_at", "When the share was made (UTC)."),
        sa.CheckConstraint("grantee_kind IN ('user', 'group')", name="ck_workspace_share_kind"),
        sa.ForeignKeyConstraint(
            ["owner", "table_name"],
            ["dms.workspace_table.owner", "dms.workspace_table.table_name"],
            name="fk_workspace_share_table",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("owner", "table_name", "grantee_kind", "grantee"),
        schema="dms",
        comment="Read-only shares of workspace tables with named users or groups.",
    )
    op.create_table(
        "web_session",
        _name("session_hash", "SHA-256 (hex) of the session cookie; the cookie itself is never stored."),
        _name("token_id", "The token that logged in (access_token.token_id).", 16),
        _when("created_at", "When the session started (UTC)."),
        sa.Column(
            "expires_at",
            postgresql.TIMESTAMP(timezone=1),
            nullable=False,
            comment="When the session ends (UTC).",
        ),
        sa.ForeignKeyConstraint(
            ["token_id"], ["dms.access_token.token_id"], name="fk_web_session_token", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("session_hash"),
        schema="dms",
        comment="Portal sessions, a cookie bound to the token that logged in (its scopes and expiry apply).",
    )


VISIBLE_FUNCTION = """
CREATE FUNCTION dms.table_visible(p_schema text, p_table text, p_viewer text, p_unreleased boolean)
RETURNS boolean LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  SELECT CASE
    WHEN lower(p_schema) = 'tap_schema' THEN true
    WHEN EXISTS (SELECT 1 FROM dms.workspace w WHERE w.schema_name = lower(p_schema)) THEN
      p_viewer IS NOT NULL AND EXISTS (
        SELECT 1 FROM dms.workspace w JOIN dms.workspace_table t ON t.owner = w.owner
        WHERE w.schema_name = lower(p_schema) AND t.table_name = lower(p_table)
          AND (w.owner = p_viewer OR EXISTS (
            SELECT 1 FROM dms.workspace_share s
            WHERE s.owner = t.owner AND s.table_name = t.table_name
              AND ((s.grantee_kind = 'user' AND s.grantee = p_viewer)
                OR (s.grantee_kind = 'group' AND s.grantee IN (
                  SELECT m.group_name FROM dms.group_member m WHERE m.user_name = p_viewer))))))
    ELSE coalesce(p_unreleased, false) OR coalesce((
      SELECT r.released FROM dms.data_release r
      WHERE r.schema_name = lower(p_schema) AND r.table_name IN (lower(p_table), '')
      ORDER BY r.table_name DESC LIMIT 1), true)
  END
$$
"""

#: the caller of a reader query, set by the services for the query's transaction (SET LOCAL)
VIEWER = (
    "nullif(current_setting('dms.viewer', true), ''), "
    "coalesce(current_setting('dms.unreleased', true), '') = 'on'"
)
POLICIES = {
    "tables": f"dms.table_visible(schema_name, substr(table_name, length(schema_name) + 2), {VIEWER})",
    "schemas": "schema_name = 'tap_schema' OR EXISTS (SELECT 1 FROM tap_schema.tables t "
    "WHERE t.schema_name = schemas.schema_name)",
    "columns": "EXISTS (SELECT 1 FROM tap_schema.tables t WHERE t.table_name = columns.table_name)",
    "keys": "EXISTS (SELECT 1 FROM tap_schema.tables t WHERE t.table_name = keys.from_table) AND "
    "EXISTS (SELECT 1 FROM tap_schema.tables t WHERE t.table_name = keys.target_table)",
    "key_columns": "EXISTS (SELECT 1 FROM tap_schema.keys k WHERE k.key_id = key_columns.key_id)",
}


def _visibility() -> None:
    op.execute(VISIBLE_FUNCTION)
    op.execute("GRANT EXECUTE ON FUNCTION dms.table_visible(text, text, text, boolean) TO PUBLIC")
    for table, condition in POLICIES.items():
        op.execute(f"ALTER TABLE tap_schema.{table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY dms_visible ON tap_schema.{table} FOR SELECT USING ({condition})")


def upgrade() -> None:
    _groups()
    _release()
    _workspaces()
    _visibility()
    set_schema_version("1.16.0")


def downgrade() -> None:
    for table in TAP_SCHEMA_TABLES:
        op.execute(f"DROP POLICY IF EXISTS dms_visible ON tap_schema.{table}")
        op.execute(f"ALTER TABLE tap_schema.{table} DISABLE ROW LEVEL SECURITY")
    op.execute("DROP FUNCTION IF EXISTS dms.table_visible(text, text, text, boolean)")
    schemas = op.get_bind().execute(sa.text("SELECT schema_name FROM dms.workspace")).scalars().all()
    for schema in schemas:
        quoted = op.get_bind().dialect.identifier_preparer.quote(schema)
        op.execute(f"DROP SCHEMA IF EXISTS {quoted} CASCADE")
    op.execute(
        "DELETE FROM tap_schema.columns WHERE table_name IN (SELECT table_name FROM tap_schema.tables "
        "WHERE schema_name IN (SELECT schema_name FROM dms.workspace))"
    )
    op.execute("DELETE FROM tap_schema.tables WHERE schema_name IN (SELECT schema_name FROM dms.workspace)")
    op.execute("DELETE FROM tap_schema.schemas WHERE schema_name IN (SELECT schema_name FROM dms.workspace)")
    for table in TABLES:
        op.drop_table(table, schema="dms")
    set_schema_version("1.15.0")
