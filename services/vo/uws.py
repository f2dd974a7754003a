"""UWS 1.1 asynchronous jobs, stored in ``dms.job`` so they survive a restart of the server.

A :class:`JobStore` owns the jobs of one service: it creates them (PENDING), queues them on a small thread
pool (QUEUED -> EXECUTING -> COMPLETED / ERROR / ABORTED), aborts them by setting the cancel event their
query watches, deletes them with their result file, and destroys them after their destruction time. Jobs
found QUEUED or EXECUTING when a server starts (it stopped while they ran) are queued again, after the
PostgreSQL backends still running their queries (tagged ``application_name = dms-job-<id>``) are terminated,
so that a job never runs twice side by side.

Jobs are owned by the user who created them: every operation takes the caller (a
:class:`dms.services.auth.User`, or None when anonymous) and a job owned by someone else is "no such job"
(404, which does not reveal that it exists). Anonymous jobs have no owner: whoever has their unguessable
URL may use them, and they are never listed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from dms.appname import tagged
from dms.deployment import Deployment
from dms.services.auth import User
from dms.services.dbstate import database_unreachable
from dms.services.vo.errors import QueryCancelled, QueryError, ServiceError, without_server_paths
from dms.services.vo.uws_leases import REAP_SECONDS, Leases, end_dead_jobs, unleased_jobs
from dms.services.workspace.viewer import Viewer, acting_as, viewer_of_user

log = logging.getLogger(__name__)

ACTIVE = ("QUEUED", "EXECUTING")
FINAL = ("COMPLETED", "ERROR", "ABORTED")
DEFAULT_DESTRUCTION = timedelta(days=7)
DEFAULT_DURATION = 600  # seconds
MAX_DURATION = 3600
MAX_DESTRUCTION = timedelta(days=365)
MAX_WAIT = 120.0
LOST_DATABASE = "the database connection was lost while the job ran; submit the job again"
WATCH_SECONDS = 0.5  # how often a server checks whether its running jobs were ended by another server

# (parameters, cancel, seconds) -> (the result document's pieces, MIME type, rows)
Runner = Callable[[dict[str, str], threading.Event, float], tuple[Iterable[bytes], str, int]]
"""Runs a job from its parameters with a cancel event and a time limit: (result bytes, MIME type, rows)."""

Forget = Callable[[dict[str, str]], None]
"""Removes what a job's parameters point at (stored uploads) when the job is deleted or destroyed."""


def job_tag(job_id: str) -> str:
    """The application_name of the database connections running a job's query."""
    return f"dms-job-{job_id}"[:63]


@dataclass
class Job:
    job_id: str
    phase: str
    run_id: str | None
    owner_id: str | None
    parameters: dict[str, str]
    creation_time: datetime
    start_time: datetime | None
    end_time: datetime | None
    destruction_time: datetime | None
    execution_duration: int
    error_summary: str | None
    error_type: str | None
    result_url: str | None
    result_format: str | None
    row_count: int | None


def _now() -> datetime:
    # dms.job stores UTC as timestamp without time zone, to a tenth of a second.
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def recover_jobs(deployment: Deployment, service: str) -> int:
    """Queue again the jobs of `service` a previous server left QUEUED or EXECUTING; returns how many.

    The backends of jobs that were EXECUTING (their server was killed) are terminated first, waiting for
    each to end, so that the job is not run a second time beside its first run. Call it once per start,
    before any server process takes jobs (:meth:`JobStore.pick_up` then runs them).
    """
    with deployment.engine().begin() as conn:
        running = (
            conn.execute(
                sa.text("SELECT job_id FROM dms.job WHERE service = :s AND phase = 'EXECUTING'"),
                {"s": service},
            )
            .scalars()
            .all()
        )
        if running:
            terminated = conn.execute(
                sa.text(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) "
                    "FROM pg_stat_activity WHERE application_name = ANY(:tags) "
                    "AND pid <> pg_backend_pid()"
                ),
                {"tags": [job_tag(j) for j in running]},
            ).scalar_one()
            if terminated:
                log.warning("terminated %d database backends of jobs left running", terminated)
        ids = (
            conn.execute(
                sa.text(
                    "UPDATE dms.job SET phase = 'QUEUED', start_time = NULL WHERE service = :s AND phase "
                    "IN ('QUEUED', 'EXECUTING') RETURNING job_id"
                ),
                {"s": service},
            )
            .scalars()
            .all()
        )
    return len(ids)


class JobStore:
    def __init__(
        self,
        deployment: Deployment,
        service: str,
        runner: Runner,
        *,
        workers: int = 4,
        forget: Forget | None = None,
    ) -> None:
        self.deployment = deployment
        self.service = service
        self.runner = runner
        self.forget = forget
        self._closing = threading.Event()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self.results_dir = deployment.data_dir / "vo" / "results"
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"uws-{service}")
        self._cancels: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self._leases = Leases(deployment)
        self._reaper: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------------------

    def resume(self) -> int:
        """Recover the jobs a previous server left QUEUED or EXECUTING (see :func:`recover_jobs`) and run
        them here; returns how many were queued."""
        recover_jobs(self.deployment, self.service)
        return self.pick_up()

    def pick_up(self) -> int:
        """Queue here every QUEUED job of this service; returns how many.

        Safe beside other server processes doing the same: a job runs only where it moves from QUEUED to
        EXECUTING, which one UPDATE decides.
        """
        with self.deployment.engine().connect() as conn:
            ids = (
                conn.execute(
                    sa.text("SELECT job_id FROM dms.job WHERE service = :s AND phase = 'QUEUED'"),
                    {"s": self.service},
                )
                .scalars()
                .all()
            )
        for job_id in ids:
            self._submit(job_id)
        with self._lock:
            if self._reaper is None:  # from now on, the jobs of a process that died end in ERROR here
                self._reaper = threading.Thread(
                    target=self._reap_dead, name=f"uws-{self.service}-reap", daemon=True
                )
                self._reaper.start()
        return len(ids)

    def shutdown(self) -> None:
        self._closing.set()
        for thread in (self._watcher, self._reaper):
            if thread is not None:
                thread.join(timeout=5)
        for event in list(self._cancels.values()):
            event.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._leases.close()

    # ---- UWS operations -------------------------------------------------------------------------------

    def create(self, parameters: dict[str, str], run_id: str | None = None, owner: User | None = None) -> Job:
        self.destroy_expired()
        job_id = secrets.token_hex(16)
        now = _now()
        with self.deployment.engine().begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO dms.job (job_id, service, owner_id, phase, run_id, lang, query, parameters, "
                    "creation_time, destruction_time, execution_duration) VALUES (:id, :service, :owner, "
                    "'PENDING', :run_id, :lang, :query, CAST(:parameters AS jsonb), :now, :destruction, "
                    ":duration)"
                ),
                {
                    "id": job_id,
                    "service": self.service,
                    "owner": owner.name if owner is not None else None,
                    "run_id": run_id,
                    "lang": (parameters.get("LANG") or "")[:16] or None,
                    "query": parameters.get("QUERY"),
                    "parameters": json.dumps(parameters),
                    "now": now,
                    "destruction": now + DEFAULT_DESTRUCTION,
                    "duration": DEFAULT_DURATION,
                },
            )
        job = self.get(job_id, owner)
        assert job is not None
        return job

    def get(self, job_id: str, owner: User | None) -> Job | None:
        """The job, if `owner` may see it: its own jobs, and anonymous jobs to whoever knows their id."""
        return self._load(job_id, "AND (owner_id IS NULL OR owner_id = :owner)", owner)

    def _load(self, job_id: str, condition: str, owner: User | None) -> Job | None:
        with self.deployment.engine().connect() as conn:
            row = conn.execute(
                sa.text(
                    "SELECT job_id, phase, run_id, owner_id, parameters, creation_time, start_time, "
                    "end_time, destruction_time, execution_duration, error_summary, error_type, result_url, "
                    f"result_format, row_count FROM dms.job WHERE job_id = :id AND service = :s {condition}"
                ),
                {"id": job_id, "s": self.service, "owner": owner.name if owner is not None else None},
            ).first()
        return Job(*row) if row is not None else None

    def require(self, job_id: str, owner: User | None) -> Job:
        job = self.get(job_id, owner)
        if job is None:
            raise ServiceError(f"no job {job_id!r}", status=404)
        return job

    def list(
        self,
        owner: User | None,
        phases: list[str] | None = None,
        after: datetime | None = None,
        last: int | None = None,
    ) -> list[Job]:
        """The owner's jobs, newest first; anonymous callers have no job list (their jobs stay unlisted)."""
        self.destroy_expired()
        if owner is None:
            return []
        query = "SELECT job_id FROM dms.job WHERE service = :s AND owner_id = :owner AND phase <> 'ARCHIVED'"
        args: dict[str, Any] = {"s": self.service, "owner": owner.name}
        if phases:
            query += " AND phase = ANY(:phases)"
            args["phases"] = phases
        if after is not None:
            query += " AND creation_time > :after"
            args["after"] = after
        query += " ORDER BY creation_time DESC"
        if last is not None:
            query += " LIMIT :last"
            args["last"] = last
        with self.deployment.engine().connect() as conn:
            ids = conn.execute(sa.text(query), args).scalars().all()
        return [j for j in (self.get(i, owner) for i in ids) if j is not None]

    def run(self, job_id: str, owner: User | None) -> None:
        job = self.require(job_id, owner)
        if job.phase != "PENDING":
            return  # UWS: RUN on a job that already ran is ignored
        if self._set_phase(job_id, "QUEUED", only_from=("PENDING",)):
            self._notify(job_id)
            self._submit(job_id)

    def abort(self, job_id: str, owner: User | None) -> None:
        job = self.require(job_id, owner)
        if job.phase in FINAL:
            return
        with self._lock:
            event = self._cancels.get(job_id)
        if event is not None:
            event.set()
        self._set_phase(job_id, "ABORTED", only_from=("PENDING", "QUEUED", "EXECUTING"), end=True)
        self._notify(job_id)

    def delete(self, job_id: str, owner: User | None) -> None:
        job = self.require(job_id, owner)
        self.abort(job_id, owner)
        with self.deployment.engine().begin() as conn:
            conn.execute(sa.text("DELETE FROM dms.job WHERE job_id = :id"), {"id": job_id})
        self._remove_files(job.result_url, job.parameters)
        self._notify(job_id)

    def set_destruction(self, job_id: str, when: datetime, owner: User | None) -> datetime:
        """Set the destruction time, kept between now and a year ahead (a past time destroys nothing
        at once: DELETE does that); returns the time set."""
        self.require(job_id, owner)
        if when.tzinfo is not None:
            when = when.astimezone(UTC).replace(tzinfo=None)
        now = _now()
        when = max(now, min(when.replace(microsecond=0), now + MAX_DESTRUCTION))
        self._update(job_id, destruction_time=when)
        return when

    def set_duration(self, job_id: str, seconds: int, owner: User | None) -> None:
        job = self.require(job_id, owner)
        if job.phase != "PENDING":
            raise ServiceError(
                "the execution duration can be changed only while the job is PENDING", status=409
            )
        self._update(job_id, execution_duration=max(0, min(seconds, MAX_DURATION)))

    def set_parameters(self, job_id: str, updates: dict[str, str], owner: User | None) -> None:
        job = self.require(job_id, owner)
        if job.phase != "PENDING":
            raise ServiceError("parameters can be changed only while the job is PENDING", status=409)
        parameters = {**job.parameters, **updates}
        with self.deployment.engine().begin() as conn:
            conn.execute(
                sa.text("UPDATE dms.job SET parameters = CAST(:p AS jsonb), query = :q WHERE job_id = :id"),
                {"p": json.dumps(parameters), "q": parameters.get("QUERY"), "id": job_id},
            )

    async def wait(self, job_id: str, timeout: float, phase: str | None, owner: User | None) -> Job:
        """UWS WAIT: return when the phase leaves `phase` (default: its current, if active) or at timeout.

        Waits on an asyncio event set by this server's phase changes (re-reading at least every second, for
        changes made by another server), so a long-poll holds no thread.
        """
        from starlette.concurrency import run_in_threadpool

        job = await run_in_threadpool(self.require, job_id, owner)
        start = phase or job.phase
        if start not in ("PENDING", *ACTIVE):
            return job
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, min(timeout, MAX_WAIT))
        event = asyncio.Event()
        waiter = (loop, event)
        with self._lock:
            self._waiters.setdefault(job_id, set()).add(waiter)
        try:
            while job.phase == start and loop.time() < deadline:
                event.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(1.0, max(0.0, deadline - loop.time())))
                found = await run_in_threadpool(self.get, job_id, owner)
                if found is None:
                    raise ServiceError(f"no job {job_id!r}", status=404)
                job = found
        finally:
            with self._lock:
                waiters = self._waiters.get(job_id, set())
                waiters.discard(waiter)
                if not waiters:
                    self._waiters.pop(job_id, None)
        return job

    def _notify(self, job_id: str) -> None:
        """Wake the long-polls of a job (called from any thread after its phase changed)."""
        with self._lock:
            waiters = list(self._waiters.get(job_id, ()))
        for loop, event in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)

    def _remove_files(self, result_url: str | None, parameters: dict[str, str]) -> None:
        if result_url:
            Path(result_url).unlink(missing_ok=True)
        if self.forget is not None:
            try:
                self.forget(parameters)
            except OSError:
                log.warning("could not remove the stored files of a job", exc_info=True)

    def destroy_expired(self) -> None:
        with self.deployment.engine().begin() as conn:
            rows = conn.execute(
                sa.text(
                    "DELETE FROM dms.job WHERE service = :s AND destruction_time < :now RETURNING job_id, "
                    "result_url, parameters"
                ),
                {"s": self.service, "now": _now()},
            ).all()
        for job_id, result, parameters in rows:
            with self._lock:
                event = self._cancels.get(job_id)
            if event is not None:
                event.set()
            self._remove_files(result, parameters)
            self._notify(job_id)

    # ---- execution ------------------------------------------------------------------------------------

    def _submit(self, job_id: str) -> None:
        with self._lock:
            if job_id in self._cancels:
                return  # already queued or running in this process
            self._cancels[job_id] = threading.Event()
            if self._watcher is None:
                self._watcher = threading.Thread(
                    target=self._watch_ended, name=f"uws-{self.service}-watch", daemon=True
                )
                self._watcher.start()
        try:
            self._leases.take(job_id)  # released when the run ends, or by PostgreSQL if this process dies
        except Exception as exc:  # the database is away: the job fails when it starts
            log.warning("cannot take the lease of job %s: %s", job_id, exc)
        self._pool.submit(self._execute, job_id)

    def _reap_dead(self) -> None:
        """End in ERROR the active jobs that no server process holds (see :mod:`uws_leases`)."""
        suspects: set[str] = set()
        while not self._closing.wait(REAP_SECONDS):
            try:
                with self._lock:
                    mine = set(self._cancels)
                unleased = unleased_jobs(self.deployment, self.service) - mine
                dead = unleased & suspects
                suspects = unleased - dead
                if dead:
                    for job_id in end_dead_jobs(self.deployment, dead):
                        log.warning("job %s was left by a server process that stopped: ERROR", job_id)
                        self._notify(job_id)
            except Exception as exc:  # the database is away: look again later
                log.debug("cannot look for the jobs of stopped server processes: %s", exc)

    def _watch_ended(self) -> None:
        """Cancel the local runs of jobs that left QUEUED/EXECUTING elsewhere: aborted, deleted or destroyed
        through another server process (in this one, :meth:`abort` sets the event at once)."""
        while not self._closing.wait(WATCH_SECONDS):
            with self._lock:
                ids = list(self._cancels)
            if not ids:
                continue
            try:
                with self.deployment.engine().connect() as conn:
                    active = set(
                        conn.execute(
                            sa.text(
                                "SELECT job_id FROM dms.job WHERE job_id = ANY(:ids) "
                                "AND phase IN ('QUEUED', 'EXECUTING')"
                            ),
                            {"ids": ids},
                        ).scalars()
                    )
            except Exception as exc:  # the database is away: look again later
                log.debug("cannot check the phases of running jobs: %s", exc)
                continue
            with self._lock:
                ended = [self._cancels[i] for i in ids if i not in active and i in self._cancels]
            for event in ended:
                event.set()

    def _execute(self, job_id: str) -> None:
        with self._lock:
            cancel = self._cancels[job_id]
        try:
            if not self._set_phase(job_id, "EXECUTING", only_from=("QUEUED",), start=True):
                return
            self._notify(job_id)
            job = self._get_any(job_id)
            limit = float(job.execution_duration or MAX_DURATION)
            with tagged(job_tag(job_id)), acting_as(self._viewer(job.owner_id)):
                content, mime, rows = self.runner(job.parameters, cancel, limit)
            path = self.results_dir / f"{job_id}.result"
            try:
                with path.open("wb") as sink:  # piece by piece: a large result is never whole in memory
                    for piece in content:
                        sink.write(piece)
            except BaseException:  # a result that failed part-way is no result: the job ends in ERROR
                path.unlink(missing_ok=True)
                raise
            if not self._finish(
                job_id, "COMPLETED", result_url=str(path), result_format=mime, row_count=rows
            ):
                path.unlink(missing_ok=True)
        except QueryCancelled:
            self._finish(job_id, "ABORTED")
        except Exception as exc:
            if database_unreachable(exc):
                log.warning("job %s lost the database: %s", job_id, exc)
                self._finish(job_id, "ERROR", error_summary=LOST_DATABASE, error_type="transient")
            elif isinstance(exc, QueryError | ServiceError):
                message = without_server_paths(str(exc), self.deployment.data_dir)
                self._finish(job_id, "ERROR", error_summary=message, error_type="fatal")
            else:  # a bug must still leave the job in a final phase
                log.exception("job %s failed", job_id)
                summary = f"internal error: {type(exc).__name__}"
                self._finish(job_id, "ERROR", error_summary=summary, error_type="transient")
        finally:
            with self._lock:
                self._cancels.pop(job_id, None)
            with contextlib.suppress(Exception):  # a lost connection holds no lease any more
                self._leases.release(job_id)
            self._notify(job_id)

    def _viewer(self, owner: str | None) -> Viewer:
        """A job runs for its owner, with the rights the owner holds when it starts."""
        with self.deployment.engine().connect() as conn:
            return viewer_of_user(conn, owner, self.deployment.config)

    def _get_any(self, job_id: str) -> Job:
        job = self._load(job_id, "", None)
        if job is None:
            raise ServiceError(f"no job {job_id!r}", status=404)
        return job

    def _finish(self, job_id: str, phase: str, **values: Any) -> bool:
        """Move an active job to a final phase (not one that was aborted or deleted meanwhile).

        If the database cannot be reached, retry until it can (or the server stops): a job must not stay
        EXECUTING because the database went away while it ran.
        """
        sets = "".join(f", {k} = :{k}" for k in values)
        delay = 0.2
        while True:
            try:
                with self.deployment.engine().begin() as conn:
                    result = conn.execute(
                        sa.text(
                            f"UPDATE dms.job SET phase = :phase, end_time = :now{sets} "
                            "WHERE job_id = :id AND phase IN ('QUEUED', 'EXECUTING')"
                        ),
                        {"phase": phase, "now": _now(), "id": job_id, **values},
                    )
                return result.rowcount == 1
            except Exception as exc:
                if not database_unreachable(exc) or self._closing.wait(delay):
                    raise
                delay = min(delay * 2, 5.0)

    def _set_phase(
        self, job_id: str, phase: str, *, only_from: tuple[str, ...], start: bool = False, end: bool = False
    ) -> bool:
        extra = (", start_time = :now" if start else "") + (", end_time = :now" if end else "")
        with self.deployment.engine().begin() as conn:
            result = conn.execute(
                sa.text(
                    f"UPDATE dms.job SET phase = :phase{extra} WHERE job_id = :id AND phase = ANY(:from_)"
                ),
                {"phase": phase, "now": _now(), "id": job_id, "from_": list(only_from)},
            )
        return result.rowcount == 1

    def _update(self, job_id: str, **values: Any) -> None:
        sets = ", ".join(f"{k} = :{k}" for k in values)
        with self.deployment.engine().begin() as conn:
            conn.execute(sa.text(f"UPDATE dms.job SET {sets} WHERE job_id = :id"), {"id": job_id, **values})
