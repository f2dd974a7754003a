"""UWS 1.1 asynchronous jobs, stored in ``dms.job`` so they survive a restart of the server.

A :class:`JobStore` owns the jobs of one service: it creates them (PENDING), queues them on a small thread
pool (QUEUED -> EXECUTING -> COMPLETED / ERROR / ABORTED), aborts them by setting the cancel event their
query watches, deletes them with their result file, and destroys them after their destruction time. Jobs
found QUEUED or EXECUTING when a server starts (it stopped while they ran) are queued again.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from dms.deployment import Deployment
from dms.services.vo.errors import QueryCancelled, QueryError, ServiceError, without_server_paths

log = logging.getLogger(__name__)

ACTIVE = ("QUEUED", "EXECUTING")
FINAL = ("COMPLETED", "ERROR", "ABORTED")
DEFAULT_DESTRUCTION = timedelta(days=7)
DEFAULT_DURATION = 600  # seconds
MAX_DURATION = 3600

Runner = Callable[[dict[str, str], threading.Event, float], tuple[bytes, str, int]]
"""Runs a job from its parameters with a cancel event and a time limit: (result bytes, MIME type, rows)."""


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


class JobStore:
    def __init__(self, deployment: Deployment, service: str, runner: Runner, *, workers: int = 4) -> None:
        self.deployment = deployment
        self.service = service
        self.runner = runner
        self.results_dir = deployment.data_dir / "vo" / "results"
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"uws-{service}")
        self._cancels: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    # ---- lifecycle ------------------------------------------------------------------------------------

    def resume(self) -> int:
        """Queue again the jobs a previous server left QUEUED or EXECUTING; returns how many."""
        with self.deployment.engine().begin() as conn:
            ids = (
                conn.execute(
                    sa.text(
                        "UPDATE dms.job SET phase = 'QUEUED', start_time = NULL WHERE service = :s AND phase "
                        "IN ('QUEUED', 'EXECUTING') RETURNING job_id"
                    ),
                    {"s": self.service},
                )
                .scalars()
                .all()
            )
        for job_id in ids:
            self._submit(job_id)
        return len(ids)

    def shutdown(self) -> None:
        for event in list(self._cancels.values()):
            event.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    # ---- UWS operations -------------------------------------------------------------------------------

    def create(self, parameters: dict[str, str], run_id: str | None = None) -> Job:
        self.destroy_expired()
        job_id = secrets.token_hex(16)
        now = _now()
        with self.deployment.engine().begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO dms.job (job_id, service, phase, run_id, lang, query, parameters, "
                    "creation_time, "
                    "destruction_time, execution_duration) VALUES (:id, :service, 'PENDING', :run_id, :lang, "
                    ":query, CAST(:parameters AS jsonb), :now, :destruction, :duration)"
                ),
                {
                    "id": job_id,
                    "service": self.service,
                    "run_id": run_id,
                    "lang": (parameters.get("LANG") or "")[:16] or None,
                    "query": parameters.get("QUERY"),
                    "parameters": json.dumps(parameters),
                    "now": now,
                    "destruction": now + DEFAULT_DESTRUCTION,
                    "duration": DEFAULT_DURATION,
                },
            )
        job = self.get(job_id)
        assert job is not None
        return job

    def get(self, job_id: str) -> Job | None:
        with self.deployment.engine().connect() as conn:
            row = conn.execute(
                sa.text(
                    "SELECT job_id, phase, run_id, owner_id, parameters, creation_time, start_time, "
                    "end_time, "
                    "destruction_time, execution_duration, error_summary, error_type, result_url, "
                    "result_format, "
                    "row_count FROM dms.job WHERE job_id = :id AND service = :s"
                ),
                {"id": job_id, "s": self.service},
            ).first()
        return Job(*row) if row is not None else None

    def require(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job is None:
            raise ServiceError(f"no job {job_id!r}", status=404)
        return job

    def list(
        self, phases: list[str] | None = None, after: datetime | None = None, last: int | None = None
    ) -> list[Job]:
        self.destroy_expired()
        query = "SELECT job_id FROM dms.job WHERE service = :s AND phase <> 'ARCHIVED'"
        args: dict[str, Any] = {"s": self.service}
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
        return [j for j in (self.get(i) for i in ids) if j is not None]

    def run(self, job_id: str) -> None:
        job = self.require(job_id)
        if job.phase != "PENDING":
            return  # UWS: RUN on a job that already ran is ignored
        if self._set_phase(job_id, "QUEUED", only_from=("PENDING",)):
            self._submit(job_id)

    def abort(self, job_id: str) -> None:
        job = self.require(job_id)
        if job.phase in FINAL:
            return
        with self._lock:
            event = self._cancels.get(job_id)
        if event is not None:
            event.set()
        self._set_phase(job_id, "ABORTED", only_from=("PENDING", "QUEUED", "EXECUTING"), end=True)

    def delete(self, job_id: str) -> None:
        job = self.require(job_id)
        self.abort(job_id)
        with self.deployment.engine().begin() as conn:
            conn.execute(sa.text("DELETE FROM dms.job WHERE job_id = :id"), {"id": job_id})
        if job.result_url:
            Path(job.result_url).unlink(missing_ok=True)

    def set_destruction(self, job_id: str, when: datetime) -> None:
        self.require(job_id)
        self._update(job_id, destruction_time=when.replace(tzinfo=None, microsecond=0))

    def set_duration(self, job_id: str, seconds: int) -> None:
        job = self.require(job_id)
        if job.phase != "PENDING":
            raise ServiceError(
                "the execution duration can be changed only while the job is PENDING", status=409
            )
        self._update(job_id, execution_duration=max(0, min(seconds, MAX_DURATION)))

    def set_parameters(self, job_id: str, updates: dict[str, str]) -> None:
        job = self.require(job_id)
        if job.phase != "PENDING":
            raise ServiceError("parameters can be changed only while the job is PENDING", status=409)
        parameters = {**job.parameters, **updates}
        with self.deployment.engine().begin() as conn:
            conn.execute(
                sa.text("UPDATE dms.job SET parameters = CAST(:p AS jsonb), query = :q WHERE job_id = :id"),
                {"p": json.dumps(parameters), "q": parameters.get("QUERY"), "id": job_id},
            )

    def wait(self, job_id: str, timeout: float, phase: str | None = None) -> Job:
        """UWS WAIT: return when the phase leaves `phase` (default: its current, if active) or at timeout."""
        job = self.require(job_id)
        start = phase or job.phase
        if start not in ("PENDING", *ACTIVE):
            return job
        deadline = time.monotonic() + max(0.0, min(timeout, 120.0))
        while time.monotonic() < deadline and job.phase == start:
            time.sleep(0.05)
            job = self.require(job_id)
        return job

    def destroy_expired(self) -> None:
        with self.deployment.engine().begin() as conn:
            rows = conn.execute(
                sa.text(
                    "DELETE FROM dms.job WHERE service = :s AND destruction_time < :now RETURNING job_id, "
                    "result_url, phase"
                ),
                {"s": self.service, "now": _now()},
            ).all()
        for job_id, result, _phase in rows:
            with self._lock:
                event = self._cancels.get(job_id)
            if event is not None:
                event.set()
            if result:
                Path(result).unlink(missing_ok=True)

    # ---- execution ------------------------------------------------------------------------------------

    def _submit(self, job_id: str) -> None:
        with self._lock:
            self._cancels[job_id] = threading.Event()
        self._pool.submit(self._execute, job_id)

    def _execute(self, job_id: str) -> None:
        with self._lock:
            cancel = self._cancels[job_id]
        try:
            if not self._set_phase(job_id, "EXECUTING", only_from=("QUEUED",), start=True):
                return
            job = self.require(job_id)
            limit = float(job.execution_duration or MAX_DURATION)
            content, mime, rows = self.runner(job.parameters, cancel, limit)
            path = self.results_dir / f"{job_id}.result"
            path.write_bytes(content)
            if not self._finish(
                job_id, "COMPLETED", result_url=str(path), result_format=mime, row_count=rows
            ):
                path.unlink(missing_ok=True)
        except QueryCancelled:
            self._finish(job_id, "ABORTED")
        except (QueryError, ServiceError) as exc:
            message = without_server_paths(str(exc), self.deployment.data_dir)
            self._finish(job_id, "ERROR", error_summary=message, error_type="fatal")
        except Exception as exc:  # a bug must still leave the job in a final phase
            log.exception("job %s failed", job_id)
            self._finish(
                job_id, "ERROR", error_summary=f"internal error: {type(exc).__name__}", error_type="transient"
            )
        finally:
            with self._lock:
                self._cancels.pop(job_id, None)

    def _finish(self, job_id: str, phase: str, **values: Any) -> bool:
        """Move an EXECUTING job to a final phase (not one that was aborted or deleted meanwhile)."""
        sets = ", ".join(f"{k} = :{k}" for k in values)
        with self.deployment.engine().begin() as conn:
            result = conn.execute(
                sa.text(
                    f"UPDATE dms.job SET phase = :phase, end_time = :now{', ' + sets if sets else ''} "
                    "WHERE job_id = :id AND phase = 'EXECUTING'"
                ),
                {"phase": phase, "now": _now(), "id": job_id, **values},
            )
        return result.rowcount == 1

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
