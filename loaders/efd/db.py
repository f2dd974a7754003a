"""psycopg connections to a deployment's control database (COPY and LISTEN need the driver itself)."""

from __future__ import annotations

from typing import Any

import psycopg

from dms.deployment import Deployment


def connect(deployment: Deployment, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    """A new psycopg connection to the control database, after checking its schema version.

    Autocommit by default: every `conn.transaction()` of the EFD and QC code is then a real transaction
    that commits on exit (in an open transaction it would only be a savepoint).
    """
    with deployment.connect():
        pass  # raises SchemaVersionError / DeploymentError with a clear message
    return psycopg.connect(conninfo(deployment), autocommit=autocommit)


def conninfo(deployment: Deployment) -> str:
    """The libpq URI of the control database (starts the embedded server if needed)."""
    url = deployment.control_url().set(drivername="postgresql")
    return url.render_as_string(hide_password=False)
