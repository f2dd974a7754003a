"""Alembic environment and revisions for the control database (branch `control`) and every shard (`shard`)."""
