"""The PostgreSQL `application_name` of the connections a piece of work opens, set per thread of work.

A UWS job runs its query under `dms-job-<id>` so that a server restarted after a crash (kill -9) can find
the backends of the jobs it was running and terminate them before running those jobs again. Code that opens
a PostgreSQL connection for a user query passes ``application_name=application_name()``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

DEFAULT = "dms"
_CURRENT: ContextVar[str] = ContextVar("dms_application_name", default=DEFAULT)


def application_name() -> str:
    """The name for connections opened now (at most 63 bytes, PostgreSQL's limit)."""
    return _CURRENT.get()[:63]


@contextmanager
def tagged(name: str) -> Iterator[None]:
    """Connections opened inside the block (in this thread or task) carry `name`."""
    token = _CURRENT.set(name)
    try:
        yield
    finally:
        _CURRENT.reset(token)
