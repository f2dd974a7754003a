"""Who a query runs for: the viewer, carried in a context variable from the request (or job) to the executor.

A :class:`Viewer` is a user name (None: anonymous) and whether unreleased data are shown to them, which holds
on a QA or Commissioning instance for a token with the ``unreleased`` scope, never on the DAC. The services
set it per request (:class:`ViewerMiddleware`, after the token check), UWS jobs per job (the owner's current
rights, :func:`viewer_of_user`), and `dms query --user` for the command line. A query without a viewer runs
as an anonymous caller of the instance: released, public data only.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from starlette.types import ASGIApp, Receive, Scope, Send

from dms.config import DeploymentConfig
from dms.services.auth import User

INSTANCES = ("dac", "qa", "commissioning")
UNRELEASED_SCOPE = "unreleased"


@dataclass(frozen=True)
class Viewer:
    """The caller a query runs for: their name (None: anonymous) and whether they see unreleased data."""

    name: str | None = None
    unreleased: bool = False

    @property
    def key(self) -> tuple[str | None, bool]:
        return (self.name, self.unreleased)


ANONYMOUS = Viewer()
_current: contextvars.ContextVar[Viewer] = contextvars.ContextVar("dms_viewer", default=ANONYMOUS)


def current_viewer() -> Viewer:
    """The viewer of the running request, job or command (anonymous when none was set)."""
    return _current.get()


@contextlib.contextmanager
def acting_as(viewer: Viewer) -> Iterator[Viewer]:
    """Run the body for `viewer` (restored afterwards)."""
    token = _current.set(viewer)
    try:
        yield viewer
    finally:
        _current.reset(token)


def sees_unreleased(config: DeploymentConfig, scopes: frozenset[str] | set[str]) -> bool:
    """Unreleased data are for QA and Commissioning instances, and there for tokens with the scope."""
    return config.instance != "dac" and UNRELEASED_SCOPE in scopes


def viewer_of(user: User | None, config: DeploymentConfig) -> Viewer:
    """The viewer of an authenticated request (or the anonymous viewer)."""
    if user is None:
        return ANONYMOUS
    return Viewer(user.name, sees_unreleased(config, user.scopes))


def viewer_of_user(conn: sa.Connection, name: str | None, config: DeploymentConfig) -> Viewer:
    """The viewer of a user outside a request (a UWS job, `dms query --user`): unreleased data if the
    instance shows them and the user holds a valid token with the scope now."""
    if name is None:
        return ANONYMOUS
    scopes = conn.execute(
        sa.text(
            "SELECT scopes FROM dms.access_token WHERE user_name = :n AND revoked_at IS NULL "
            "AND (expires_at IS NULL OR expires_at > now())"
        ),
        {"n": name},
    ).scalars()
    held = {scope for value in scopes for scope in value.split()}
    return Viewer(name, sees_unreleased(config, held))


class ViewerMiddleware:
    """Sets the viewer of each request from the user the authentication middleware found."""

    def __init__(self, app: ASGIApp, config: DeploymentConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        user: Any = scope.get("user")
        with acting_as(viewer_of(user if isinstance(user, User) else None, self.config)):
            await self.app(scope, receive, send)
