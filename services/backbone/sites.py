"""Data Backbone sites: named stores (Summit, Base, Archive, Satellite by default) recorded in `dms.site`.

Each site's files live under its root (`file://` URIs; by default DATA_DIR/backbone/<site>). Raw data
lands at the primary site (the summit) and is replicated to the others by policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import sqlalchemy as sa

from dms.services.backbone.errors import SiteError

DEFAULT_SITES: tuple[tuple[str, str, str], ...] = (
    ("summit", "summit", "Summit: where the camera writes; raw data lands here first"),
    ("base", "base", "Base: the first copy off the mountain"),
    ("archive", "archive", "Archive: the permanent archive (US Data Facility)"),
    ("satellite", "satellite", "Satellite: a partner data facility holding a subset"),
)
PRIMARY_SITE = "summit"


@dataclass(frozen=True)
class Site:
    name: str
    role: str
    root: Path


def ensure_default_sites(conn: sa.Connection, data_dir: Path) -> None:
    """Register the default sites with roots under DATA_DIR/backbone (existing sites are kept)."""
    for name, role, description in DEFAULT_SITES:
        conn.execute(
            sa.text(
                "INSERT INTO dms.site (name, role, root_uri, description) VALUES (:n, :r, :u, :d) "
                "ON CONFLICT (name) DO NOTHING"
            ),
            {"n": name, "r": role, "u": (data_dir / "backbone" / name).as_uri(), "d": description},
        )


def add_site(conn: sa.Connection, name: str, role: str, root: Path, description: str | None = None) -> Site:
    conn.execute(
        sa.text("INSERT INTO dms.site (name, role, root_uri, description) VALUES (:n, :r, :u, :d)"),
        {"n": name, "r": role, "u": root.resolve().as_uri(), "d": description},
    )
    return Site(name, role, root.resolve())


def sites(conn: sa.Connection) -> dict[str, Site]:
    rows = conn.execute(sa.text("SELECT name, role, root_uri FROM dms.site ORDER BY name"))
    return {row.name: Site(row.name, row.role, _root_path(row.name, row.root_uri)) for row in rows}


def site(conn: sa.Connection, name: str) -> Site:
    known = sites(conn)
    if name not in known:
        raise SiteError(f"unknown site {name!r}; registered sites: {', '.join(known) or 'none'}")
    return known[name]


def _root_path(name: str, uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme not in ("file", ""):
        raise SiteError(f"site {name!r} has root {uri}: only file:// roots are supported by this DMS")
    return Path(unquote(parsed.path))
