"""Telling "the database cannot be reached" apart from every other failure, for a 503 instead of a 500."""

from __future__ import annotations

import psycopg
import sqlalchemy as sa

from dms.errors import DeploymentError

DATABASE_DOWN = (
    "the database cannot be reached (it may be stopped or restarting); try again later, "
    "and tell the operators if it lasts"
)


def database_unreachable(exc: BaseException | None) -> bool:
    """Whether `exc` (or an exception it was raised from) is a lost or refused database connection.

    A cancelled statement (timeout, user abort) is an OperationalError too in the DB-API, but not an outage.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, sa.exc.DBAPIError):
            if exc.connection_invalidated:
                return True
            if exc.orig is not None and database_unreachable(exc.orig):
                return True
        if isinstance(exc, psycopg.errors.QueryCanceled):
            return False
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError | DeploymentError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
