"""Revisions record the schema version they bring the control database to (checked on every connect)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


def set_schema_version(version: str) -> None:
    """Set dms.schema_info's schema_version and felis_version.dms (schema/dms.yaml moves with it)."""
    for key in ("schema_version", "felis_version.dms"):
        op.execute(
            sa.text("UPDATE dms.schema_info SET value = :v WHERE key = :k").bindparams(v=version, k=key)
        )
