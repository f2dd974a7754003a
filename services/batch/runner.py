"""The batch runner: claims tasks from PostgreSQL in batches, runs them on a Dask cluster, records outcomes.

One runner drives one Dask cluster (a LocalCluster by default, or a scheduler address). Its workers' threads
are its slots; quotas per priority class apply to them. Claims go highest class first, oldest first; a
class's reserved workers are never taken by another class, so its tasks start as soon as they are queued
(within the poll interval) even while lower classes saturate the cluster.

The runner renews the leases of the tasks it runs; if it dies, another runner (or the same one restarted
with the same name) gives them back after the lease, and finished tasks are never redone. Dask's own
rescheduling is turned off (allowed-failures 0) so that a worker that dies mid-task is an attempt the
batch service counts, retries with backoff, and records.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dask
import psycopg
from distributed import Client, Future, LocalCluster

from dms.services.batch import store
from dms.services.batch.classes import PRIORITY_CLASSES, Quota, allowance, rank
from dms.services.batch.execute import execute

log = logging.getLogger(__name__)


def default_runner_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class RunnerSettings:
    """How a runner claims and retries."""

    name: str = field(default_factory=default_runner_name)
    batch_size: int = 2000  # tasks claimed per query
    poll_seconds: float = 0.05  # how long to wait for outcomes before looking for new tasks
    lease_seconds: float = 60.0  # a claim lapses unless renewed within this
    backoff_seconds: float = 2.0  # first retry delay; doubled per attempt
    backoff_max: float = 600.0
    slots: int | None = None  # workers to use (default: the cluster's threads)
    prefetch: int = 100  # tasks handed to Dask per slot ahead of time, while no quota holds a class back
    task_modules: tuple[str, ...] = ()  # modules the workers import to register tasks


def open_cluster(
    scheduler: str | None = None, *, workers: int = 2, threads: int = 1, processes: bool = True
) -> Client:
    """A Dask client: to `scheduler` if given, else to a new LocalCluster of `workers` x `threads`."""
    dask.config.set({"distributed.scheduler.allowed-failures": 0})
    if scheduler:
        return Client(scheduler)
    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=threads, processes=processes, dashboard_address=None
    )
    return Client(cluster)


class BatchRunner:
    """Claims, submits and records batch tasks; `run` returns when asked (or when idle)."""

    def __init__(self, conninfo: str, client: Client, settings: RunnerSettings | None = None) -> None:
        self.conninfo = conninfo
        self.client = client
        self.settings = settings or RunnerSettings()
        self.inflight: dict[str, tuple[store.Claimed, Future]] = {}
        self.running: Counter[str] = Counter()
        self.totals: Counter[str] = Counter()
        self._done: queue.SimpleQueue[Future] = queue.SimpleQueue()

    @property
    def slots(self) -> int:
        if self.settings.slots is not None:
            return self.settings.slots
        return max(1, sum(self.client.nthreads().values()))

    def run(
        self,
        *,
        until_idle: bool = True,
        job_ids: Sequence[int] | None = None,
        stop: threading.Event | None = None,
        timeout: float | None = None,
    ) -> dict[str, int]:
        """Run tasks until idle (no queued or running task, of `job_ids` if given), `stop` is set, or
        `timeout` seconds pass. Returns counts of done, retried, failed and ignored outcomes."""
        s = self.settings
        deadline = None if timeout is None else time.monotonic() + timeout
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            store.reap(conn, runner=s.name)  # a restart under the same name takes its tasks back at once
            store.reap(conn)
            quotas = store.quotas(conn)
            next_upkeep = time.monotonic() + s.lease_seconds / 3
            slots = self.slots
            while True:
                if stop is not None and stop.is_set():
                    break
                if deadline is not None and time.monotonic() > deadline:
                    break
                if time.monotonic() >= next_upkeep:
                    self._upkeep(conn)
                    quotas = store.quotas(conn)
                    slots = self.slots
                    next_upkeep = time.monotonic() + s.lease_seconds / 3
                claimed = self._claim(conn, slots, quotas)
                finished = self._collect(wait=s.poll_seconds if not claimed else 0.0)
                if finished:
                    self._record(conn, finished)
                elif until_idle and not self.inflight and not claimed and not store.any_work(conn, job_ids):
                    break
            self._abandon(conn)
        return dict(self.totals)

    # ---- steps ---------------------------------------------------------------------------------------

    def _claim(self, conn: psycopg.Connection, slots: int, quotas: dict[str, Quota]) -> int:
        """Claim what each class may start, highest first. Tasks are handed to Dask ahead of free threads
        (`prefetch` per slot; tasks of lower classes do not count against a higher one, whose tasks Dask
        runs first by priority) unless a quota applies: a class
        with a maximum, or while another class's reserved workers are unused, gets no more than the free
        threads, so the maximum and the reservation hold exactly."""
        s = self.settings
        total = 0
        for cls in PRIORITY_CLASSES:
            running = dict(self.running)
            strict = quotas.get(cls, Quota()).maximum is not None or any(
                quotas.get(other, Quota()).reserved > running.get(other, 0)
                for other in PRIORITY_CLASSES
                if other != cls
            )
            if strict:
                n = allowance(cls, slots, running, quotas)
            else:
                # tasks of lower classes handed to Dask ahead do not hold a higher class back: it is
                # claimed now and runs before them (Dask priority)
                ahead = {c: k for c, k in running.items() if rank(c) <= rank(cls)}
                n = allowance(cls, slots * max(1, s.prefetch), ahead, quotas)
            n = min(n, s.batch_size)
            if n <= 0:
                continue
            claimed = store.claim(conn, s.name, cls, n, lease_seconds=s.lease_seconds)
            if claimed:
                self._submit(claimed)
                total += len(claimed)
        return total

    def _submit(self, claimed: list[store.Claimed]) -> None:
        keys = [f"batch-{c.task_id}-{c.attempt}" for c in claimed]
        futures = self.client.map(
            execute,
            [c.spec() for c in claimed],
            modules=self.settings.task_modules,
            key=keys,
            pure=False,
            priority=len(PRIORITY_CLASSES) - rank(claimed[0].priority_class),
        )
        for task, key, future in zip(claimed, keys, futures, strict=True):
            self.inflight[key] = (task, future)
            self.running[task.priority_class] += 1
            future.add_done_callback(self._done.put)

    def _collect(self, wait: float) -> list[Future]:
        finished: list[Future] = []
        try:
            finished.append(self._done.get(timeout=wait) if wait > 0 else self._done.get_nowait())
        except queue.Empty:
            return finished
        while len(finished) < 10_000:
            try:
                finished.append(self._done.get_nowait())
            except queue.Empty:
                break
        return finished

    def _record(self, conn: psycopg.Connection, finished: list[Future]) -> None:
        outcomes = []
        for future in finished:
            entry = self.inflight.pop(str(future.key), None)
            if entry is None:
                continue
            task, _ = entry
            self.running[task.priority_class] -= 1
            if future.status == "cancelled":
                continue
            if future.status == "finished":
                res: dict[str, Any] = future.result()
                outcomes.append(
                    store.Outcome(
                        task.task_id,
                        task.attempt,
                        ok=bool(res["ok"]),
                        outputs=res["outputs"],
                        error=res["error"],
                        log=res["log"],
                        seconds=res["seconds"],
                        worker=f"{self.settings.name} {res['worker']}",
                        config_hash=res["config_hash"],
                        started=res.get("started"),
                    )
                )
            else:
                exc = future.exception()
                outcomes.append(
                    store.Outcome(
                        task.task_id,
                        task.attempt,
                        ok=False,
                        error=f"the Dask worker running it failed: {type(exc).__name__}: {exc}",
                        worker=self.settings.name,
                    )
                )
            future.release()
        if outcomes:
            counts = store.finish(
                conn,
                outcomes,
                backoff_seconds=self.settings.backoff_seconds,
                backoff_max=self.settings.backoff_max,
            )
            self.totals.update(counts)

    def _upkeep(self, conn: psycopg.Connection) -> None:
        """Renew our leases, stop tasks cancelled meanwhile, give back tasks of dead runners."""
        by_id = {task.task_id: key for key, (task, _) in self.inflight.items()}
        for task_id in store.renew(conn, self.settings.name, list(by_id), self.settings.lease_seconds):
            key = by_id[task_id]
            task, future = self.inflight.pop(key)
            self.running[task.priority_class] -= 1
            future.cancel()
        store.reap(conn)

    def _abandon(self, conn: psycopg.Connection) -> None:
        """On a stop with tasks still running: cancel them and give them back for another runner."""
        if not self.inflight:
            return
        for _, future in self.inflight.values():
            future.cancel()
        self.inflight.clear()
        self.running.clear()
        store.reap(conn, runner=self.settings.name, refund=True)
