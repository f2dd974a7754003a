"""The embedded PostgreSQL 16 server (with pgvector) that lives inside a deployment's data directory.

It comes from the PyPI package `pgserver`: nothing is installed system-wide. The server listens on a Unix
socket only, so deployments in different directories run side by side without port clashes. It keeps running
after the command that started it exits, so consecutive `dms` commands reuse it; `dms stop` stops it.
"""

from __future__ import annotations

import logging
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

from dms.errors import DeploymentError

log = logging.getLogger(__name__)

PGDATA_DIR = "postgres"

# pgserver asks platformdirs for a runtime directory at import; without XDG_RUNTIME_DIR (containers, CI)
# platformdirs warns and falls back to /tmp/runtime-UID, which is what we want anyway.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")


@dataclass(frozen=True)
class EmbeddedServer:
    """A pgserver-managed PostgreSQL whose data directory is `pgdata`."""

    pgdata: Path

    def is_initialized(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    def is_running(self) -> bool:
        """True if a postmaster for this data directory is alive (never starts one)."""
        from pgserver.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.pgdata)
        return info is not None and info.is_running()

    def start(self) -> str:
        """Start the server, or reuse the running one, and return the libpq URI of its `postgres` database."""
        import pgserver

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        if not self.is_running():
            # pgserver caches one handle per data directory and process; after a stop that handle is stale.
            pgserver.PostgresServer._instances.pop(self.pgdata.expanduser().resolve(), None)
        try:
            server = pgserver.get_server(self.pgdata, cleanup_mode=None)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError, AssertionError) as exc:
            log_file = self.pgdata / "log"
            tail = log_file.read_text()[-2000:] if log_file.exists() else "(no server log)"
            raise DeploymentError(
                f"could not start the embedded PostgreSQL in {self.pgdata}: {exc}\nserver log:\n{tail}"
            ) from exc
        uri: str = server.get_uri()
        return uri

    def uri(self, database: str) -> str:
        """The libpq URI of `database` on the running server (starting it if needed)."""
        base = self.start()
        # pgserver URIs look like postgresql://postgres:@/postgres?host=/socket/dir
        head, _, query = base.partition("?")
        return f"{head.rsplit('/', 1)[0]}/{database}?{query}"

    def stop(self) -> bool:
        """Stop the server if it runs; return whether it was running."""
        if not self.is_running():
            return False
        from pgserver._commands import pg_ctl  # type: ignore[attr-defined]  # generated at import

        user = "pgserver" if _running_as_root() else None
        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=user)
        except subprocess.CalledProcessError as exc:
            raise DeploymentError(f"could not stop the embedded PostgreSQL in {self.pgdata}: {exc}") from exc
        log.info("stopped the embedded PostgreSQL in %s", self.pgdata)
        return True


def _running_as_root() -> bool:
    import os

    return hasattr(os, "geteuid") and os.geteuid() == 0
