"""Users and bearer tokens of the HTTP services, and the check every request passes through.

A token is a 256-bit random secret printed once by `dms users token`; the control database keeps only its
SHA-256 (enough for a secret of that entropy: nobody can search the space), its scopes (the services it may
be used for) and its expiry. Every HTTP service installs :func:`middleware`, a Starlette
``AuthenticationMiddleware`` whose backend reads ``Authorization: Bearer TOKEN``: a valid token makes
``request.user`` a :class:`User`; a missing header leaves the request anonymous (where the deployment allows
anonymous access, ``DeploymentConfig.anonymous_access``); an unknown, expired or revoked token, or one
without the scope of the service asked, is answered 401/403 with a ``WWW-Authenticate`` challenge before any
handler runs. Handlers ask :func:`authenticate` who is calling and :func:`require_scope` for a finer check.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from starlette.authentication import AuthCredentials, AuthenticationBackend, AuthenticationError, BaseUser
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response

from dms.errors import DMSError

SCOPES = (
    "tap",
    "scs",
    "sia",
    "datalink",
    "gateway",
    "minibroker",
    "alerts",
    "workspace",
    "ocs",
    "unreleased",
)
"""The services a token may be used for (a token's scopes are a subset), plus `unreleased`: on a QA or
Commissioning instance, the token also sees unreleased data."""
DEFAULT_SCOPES = tuple(s for s in SCOPES if s != "unreleased")
"""The scopes of a token issued without --scope: every service, released data only."""

TOKEN_PREFIX = "dms_"
USER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.@-]{0,63}$")
REALM = "DMS"
NEEDS_TOKEN = "this service needs a token: send Authorization: Bearer TOKEN (ask the operators for one)"
PUBLIC_SUFFIXES = ("/availability", "/capabilities")

Renderer = Callable[[str, int], Response]
"""Builds the error document of a service (e.g. a DALI VOTable) from a message and an HTTP status."""


class AuthError(DMSError):
    """A request's credentials are refused: 401 (missing, unknown, expired, revoked) or 403 (scope)."""

    def __init__(self, message: str, status: int = 401, *, error: str | None = "invalid_token") -> None:
        super().__init__(message)
        self.status = status
        self.error = error

    def challenge(self) -> str:
        """The WWW-Authenticate header value (RFC 6750)."""
        parts = [f'Bearer realm="{REALM}"']
        if self.error:
            description = str(self).replace('"', "'")
            parts.append(f'error="{self.error}", error_description="{description}"')
        return ", ".join(parts)


class _Refused(AuthenticationError):
    """Carries an AuthError (or a database failure) through Starlette's middleware to the error handler."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass(frozen=True)
class User(BaseUser):
    """An authenticated caller: the user name (UWS ownerId), the token used and its scopes."""

    name: str
    token_id: str
    scopes: frozenset[str]

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.name

    @property
    def identity(self) -> str:
        return self.name


TOKEN_CACHE_SECONDS = 2.0
"""How long a validated token is trusted without asking the database again: a token revoked by another
process (`dms users revoke` beside a running `dms serve`) stops working within this time; in the revoking
process at once. This keeps authentication well under 0.5 ms per request (benchmarks/auth.py)."""
_token_cache: dict[str, tuple[float, float | None, User]] = {}
_cache_lock = threading.Lock()


def _cached(token: str) -> User | None:
    """The user of a token validated less than TOKEN_CACHE_SECONDS ago (and not expired since)."""
    key = hash_token(token)
    with _cache_lock:
        found = _token_cache.get(key)
    if found is None:
        return None
    checked, expires, user = found
    if time.monotonic() - checked > TOKEN_CACHE_SECONDS or (expires is not None and time.time() >= expires):
        with _cache_lock:
            _token_cache.pop(key, None)
        return None
    return user


def _remember(token: str, user: User, expires_at: datetime | None) -> None:
    with _cache_lock:
        if len(_token_cache) > 10_000:
            _token_cache.clear()
        expires = expires_at.timestamp() if expires_at is not None else None
        _token_cache[hash_token(token)] = (time.monotonic(), expires, user)


def forget_tokens() -> None:
    """Drop every cached token validation (after a revocation in this process)."""
    with _cache_lock:
        _token_cache.clear()


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def authenticate(request: HTTPConnection) -> User | None:
    """The user a request authenticated as, or None for an anonymous request (after the middleware ran)."""
    user = request.scope.get("user")
    return user if isinstance(user, User) else None


def require_scope(request: HTTPConnection, scope: str) -> User | None:
    """The caller, if allowed to use `scope`: anonymous callers pass only where anonymous access is on."""
    user = authenticate(request)
    if user is None:
        settings: TokenBackend | None = request.scope.get("dms.auth")
        if settings is not None and not settings.allow_anonymous:
            raise AuthError(NEEDS_TOKEN, error=None)
        return None
    if scope not in user.scopes:
        raise AuthError(
            f"the token may be used for {', '.join(sorted(user.scopes))}, not {scope}",
            403,
            error="insufficient_scope",
        )
    return user


class TokenBackend(AuthenticationBackend):
    """Looks bearer tokens up in dms.access_token; a request's scope is `service`, or else the first
    segment of its path (/tap/... needs scope tap)."""

    def __init__(
        self,
        engine: Callable[[], sa.Engine],
        *,
        allow_anonymous: bool,
        public_paths: Sequence[str] = (),
        service: str | None = None,
    ) -> None:
        self.engine = engine
        self.allow_anonymous = allow_anonymous
        self.public_paths = tuple(public_paths)
        self.service = service

    def is_public(self, path: str) -> bool:
        """Landing pages and VOSI availability/capabilities answer without a token (clients probe them)."""
        return path in self.public_paths or path.endswith(PUBLIC_SUFFIXES)

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        conn.scope["dms.auth"] = self
        path = conn.url.path
        header = conn.headers.get("authorization")
        try:
            session = conn.cookies.get(SESSION_COOKIE)
            if not header and session:
                user = await run_in_threadpool(self.lookup_session, session)
            elif not header:
                if not self.allow_anonymous and not self.is_public(path):
                    raise AuthError(NEEDS_TOKEN, error=None)
                return None
            else:
                scheme, _, token = header.strip().partition(" ")
                if scheme.lower() != "bearer" or not token.strip():
                    raise AuthError(
                        "the Authorization header must be 'Bearer TOKEN'", error="invalid_request"
                    )
                cached = _cached(token.strip())
                if cached is None:
                    cached = await run_in_threadpool(self.lookup, token.strip())
                user = cached
            scope = self.service or path.strip("/").split("/", 1)[0]
            if scope in SCOPES and scope not in user.scopes:
                raise AuthError(
                    f"the token may be used for {', '.join(sorted(user.scopes))}, not {scope}",
                    403,
                    error="insufficient_scope",
                )
        except (AuthError, sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise _Refused(exc) from exc
        return AuthCredentials(sorted(user.scopes)), user

    def lookup(self, token: str) -> User:
        """The user of a token, or AuthError saying why it is not valid (unknown, revoked, expired)."""
        with self.engine().connect() as conn:
            row = conn.execute(
                sa.text(
                    "SELECT token_id, user_name, scopes, revoked_at IS NOT NULL, "
                    "expires_at IS NOT NULL AND expires_at <= now(), expires_at FROM dms.access_token "
                    "WHERE token_hash = :hash"
                ),
                {"hash": hash_token(token)},
            ).first()
        if row is None:
            raise AuthError("the token is not known to this service")
        token_id, name, scopes, revoked, expired, expires_at = row
        if revoked:
            raise AuthError(f"the token {token_id} was revoked")
        if expired:
            raise AuthError(f"the token {token_id} has expired; ask for a new one (dms users token)")
        user = User(name, token_id, frozenset(scopes.split()))
        _remember(token, user, expires_at)
        return user

    def lookup_session(self, session: str) -> User:
        """The user of a portal session cookie: its token must still be valid (scopes and expiry apply)."""
        cached = _cached(SESSION_KEY + session)
        if cached is not None:
            return cached
        with self.engine().connect() as conn:
            token_id = conn.execute(
                sa.text(
                    "SELECT token_id FROM dms.web_session WHERE session_hash = :hash AND expires_at > now()"
                ),
                {"hash": hash_token(session)},
            ).scalar()
            if token_id is None:
                raise AuthError("the session has ended; log in again")
            row = conn.execute(
                sa.text(
                    "SELECT user_name, scopes, expires_at FROM dms.access_token WHERE token_id = :id "
                    "AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())"
                ),
                {"id": token_id},
            ).first()
        if row is None:
            raise AuthError("the token of this session was revoked or has expired; log in again")
        user = User(row[0], token_id, frozenset(row[1].split()))
        _remember(SESSION_KEY + session, user, row[2])
        return user


SESSION_COOKIE = "dms_session"
SESSION_KEY = "session:"  # cache key prefix of session cookies (beside tokens)
SESSION_HOURS = 12


def start_session(conn: sa.Connection, user: User) -> str:
    """A new portal session for a user who logged in with a token: the cookie value (only its hash is
    kept); it ends after SESSION_HOURS, at logout, or with its token."""
    session = secrets.token_urlsafe(32)
    conn.execute(
        sa.text(
            "INSERT INTO dms.web_session (session_hash, token_id, expires_at) VALUES (:hash, :id, "
            "now() + make_interval(hours => :hours))"
        ),
        {"hash": hash_token(session), "id": user.token_id, "hours": SESSION_HOURS},
    )
    return session


def end_session(conn: sa.Connection, session: str) -> None:
    conn.execute(sa.text("DELETE FROM dms.web_session WHERE session_hash = :h"), {"h": hash_token(session)})
    forget_tokens()


def middleware(
    engine: Callable[[], sa.Engine],
    render: Renderer,
    *,
    allow_anonymous: bool,
    public_paths: Sequence[str] = (),
    service: str | None = None,
) -> Middleware:
    """The authentication middleware of an HTTP service on the control database `engine()`; `render`
    writes the service's error document (a refused token: 401/403; an unreachable database: 503)."""
    from dms.services.dbstate import DATABASE_DOWN, database_unreachable

    def on_error(conn: HTTPConnection, exc: AuthenticationError) -> Response:
        cause = exc.cause if isinstance(exc, _Refused) else AuthError(str(exc))
        if isinstance(cause, AuthError):
            if conn.url.path.startswith("/api/"):  # the portal's JSON API answers in JSON
                response: Response = JSONResponse({"error": str(cause)}, cause.status)
            else:
                response = render(str(cause), cause.status)
            response.headers["WWW-Authenticate"] = cause.challenge()
            return response
        if database_unreachable(cause):
            return render(DATABASE_DOWN, 503)
        raise cause

    backend = TokenBackend(
        engine, allow_anonymous=allow_anonymous, public_paths=public_paths, service=service
    )
    return Middleware(AuthenticationMiddleware, backend=backend, on_error=on_error)


# ---- managing users and tokens (dms users) ----------------------------------------------------------------


def add_user(conn: sa.Connection, name: str) -> None:
    if not USER_NAME.match(name):
        raise DMSError(
            f"user name {name!r} is invalid: start with a letter; letters, digits, '_', '.', '@', '-'; "
            "at most 64 characters"
        )
    if conn.execute(sa.text("SELECT 1 FROM dms.user_account WHERE name = :n"), {"n": name}).first():
        raise DMSError(f"user {name!r} already exists")
    conn.execute(sa.text("INSERT INTO dms.user_account (name) VALUES (:n)"), {"n": name})


def list_users(conn: sa.Connection) -> list[dict[str, Any]]:
    """Every user with their tokens (id, scopes, expiry, whether revoked), tokens never shown."""
    users = conn.execute(sa.text("SELECT name, created_at FROM dms.user_account ORDER BY name")).all()
    tokens = conn.execute(
        sa.text(
            "SELECT user_name, token_id, scopes, created_at, expires_at, revoked_at FROM dms.access_token "
            "ORDER BY created_at"
        )
    ).all()
    return [
        {
            "name": name,
            "created_at": created,
            "tokens": [
                {"token_id": t[1], "scopes": t[2], "created_at": t[3], "expires_at": t[4], "revoked_at": t[5]}
                for t in tokens
                if t[0] == name
            ],
        }
        for name, created in users
    ]


def issue_token(
    conn: sa.Connection, name: str, scopes: Sequence[str] = DEFAULT_SCOPES, expires: datetime | None = None
) -> tuple[str, str]:
    """A new token for user `name`: (token id, token). The token is returned once and never stored."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise DMSError(f"unknown scope {', '.join(unknown) or '(none)'}; valid: {', '.join(SCOPES)}")
    if not conn.execute(sa.text("SELECT 1 FROM dms.user_account WHERE name = :n"), {"n": name}).first():
        raise DMSError(f"no user {name!r}; add one with `dms users add {name}`")
    token_id, token = secrets.token_hex(6), TOKEN_PREFIX + secrets.token_urlsafe(32)
    conn.execute(
        sa.text(
            "INSERT INTO dms.access_token (token_id, user_name, token_hash, scopes, expires_at) "
            "VALUES (:id, :name, :hash, :scopes, :expires)"
        ),
        {
            "id": token_id,
            "name": name,
            "hash": hash_token(token),
            "scopes": " ".join(s for s in SCOPES if s in scopes),
            "expires": expires,
        },
    )
    return token_id, token


def revoke(conn: sa.Connection, token_or_user: str) -> int:
    """Revoke one token (by id) or every token of a user (by name); returns how many were revoked."""
    found = conn.execute(
        sa.text(
            "SELECT 1 FROM dms.access_token WHERE token_id = :v UNION ALL "
            "SELECT 1 FROM dms.user_account WHERE name = :v"
        ),
        {"v": token_or_user},
    ).first()
    if found is None:
        raise DMSError(f"no token id or user named {token_or_user!r} (see `dms users list`)")
    result = conn.execute(
        sa.text(
            "UPDATE dms.access_token SET revoked_at = now() WHERE revoked_at IS NULL "
            "AND (token_id = :v OR user_name = :v)"
        ),
        {"v": token_or_user},
    )
    forget_tokens()
    return int(result.rowcount)
