"""Which server process holds each active UWS job, so that the jobs of a process that died end in ERROR.

A `dms serve --workers N` worker killed (SIGKILL, the OOM killer) leaves its QUEUED and EXECUTING jobs
behind while the other workers, and the worker uvicorn starts in its place, serve on: a restart's recovery
(:func:`dms.services.vo.uws.recover_jobs`) never comes. So every :class:`JobStore` holds, on one database
connection of its own, a shared advisory lock (a *lease*: class :data:`LEASE_CLASS`, key
``hashtext(job_id)``) on each job it has queued or runs. PostgreSQL releases a session's locks when its
connection ends, with the process. Every process looks every :data:`REAP_SECONDS` for active jobs without a
lease; one found so twice in a row (a job just queued takes its lease a moment after its phase changed) ends
in ERROR with :data:`DEAD_SERVER`, after the backends still running its query are terminated.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any

import psycopg
import sqlalchemy as sa

from dms.deployment import Deployment

log = logging.getLogger(__name__)

LEASE_CLASS = 0x444D534A  # "DMSJ": the first key of every job lease (advisory locks of two int4 keys)
REAP_SECONDS = 5.0
DEAD_SERVER = "the server process running the job stopped (it was killed or crashed); submit the job again"
LEASES_APPLICATION = "dms-uws-leases"

_LEASED = """EXISTS (SELECT 1 FROM pg_locks AS l WHERE l.locktype = 'advisory' AND l.granted
    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND l.classid = CAST(:lease_class AS oid) AND l.objid = CAST(hashtext(j.job_id) AS oid)
    AND l.objsubid = 2)"""


class Leases:
    """The leases of one process, on one connection (opened on first use, again if it was lost)."""

    def __init__(self, deployment: Deployment) -> None:
        self._conninfo = deployment.control_url().set(drivername="postgresql").render_as_string(False)
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    def take(self, job_id: str) -> None:
        with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(
                    self._conninfo, autocommit=True, application_name=LEASES_APPLICATION
                )
            self._conn.execute("SELECT pg_advisory_lock_shared(%s, hashtext(%s))", (LEASE_CLASS, job_id))

    def release(self, job_id: str) -> None:
        with self._lock:
            if self._conn is not None and not self._conn.closed:
                self._conn.execute(
                    "SELECT pg_advisory_unlock_shared(%s, hashtext(%s))", (LEASE_CLASS, job_id)
                )

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()


def unleased_jobs(deployment: Deployment, service: str) -> set[str]:
    """The QUEUED or EXECUTING jobs of `service` that no server process holds a lease on."""
    with deployment.engine().connect() as conn:
        return set(
            conn.execute(
                sa.text(
                    "SELECT job_id FROM dms.job AS j WHERE service = :s AND phase IN ('QUEUED', 'EXECUTING') "
                    "AND NOT " + _LEASED
                ),
                {"s": service, "lease_class": LEASE_CLASS},
            ).scalars()
        )


def end_dead_jobs(deployment: Deployment, job_ids: set[str]) -> list[str]:
    """Terminate the backends of `job_ids` still running, then end in ERROR those still without a lease;
    returns the jobs ended."""
    from dms.services.vo.uws import job_tag

    with deployment.engine().begin() as conn:
        conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                "WHERE application_name = ANY(:tags) AND pid <> pg_backend_pid()"
            ),
            {"tags": [job_tag(j) for j in job_ids]},
        )
        return list(
            conn.execute(
                sa.text(
                    "UPDATE dms.job AS j SET phase = 'ERROR', end_time = :now, error_summary = :message, "
                    "error_type = 'transient' WHERE job_id = ANY(:ids) AND phase IN ('QUEUED', 'EXECUTING') "
                    "AND NOT " + _LEASED + " RETURNING job_id"
                ),
                {
                    "ids": sorted(job_ids),
                    "message": DEAD_SERVER,
                    "now": datetime.now(UTC).replace(tzinfo=None, microsecond=0),
                    "lease_class": LEASE_CLASS,
                },
            ).scalars()
        )
