"""Typed configuration of a deployment, stored as `deployment.yaml` in its data directory.

The file holds what cannot be discovered: whether the control database is embedded or external, and where
the catalog shards live. `DMS_DATA_DIR` chooses the data directory and `DMS_DATABASE_URL` overrides the
control database URL at run time.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

import platformdirs
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from dms.errors import ConfigError

CONFIG_FILE = "deployment.yaml"
ENV_DATA_DIR = "DMS_DATA_DIR"
ENV_DATABASE_URL = "DMS_DATABASE_URL"

ShardName = Annotated[
    str,
    Field(
        pattern=r"^[a-z][a-z0-9_]{0,62}$",
        description="Shard name: lower-case letters, digits and '_', starting with a letter.",
    ),
]


class ShardConfig(BaseModel):
    """Where one catalog shard lives."""

    model_config = ConfigDict(extra="forbid")

    name: ShardName
    kind: Literal["postgres", "duckdb"] = Field(
        description="Storage engine: 'postgres' for narrow, updated tables; "
        "'duckdb' for wide tables (DuckDB/Parquet)."
    )
    url: str | None = Field(default=None, description="PostgreSQL URL of a 'postgres' shard.")
    path: str | None = Field(
        default=None,
        description="DuckDB database file of a 'duckdb' shard; relative paths are inside the data directory.",
    )

    @model_validator(mode="after")
    def _location_matches_kind(self) -> ShardConfig:
        if self.kind == "postgres":
            if not self.url or self.path:
                raise ValueError(f"shard {self.name!r}: a 'postgres' shard needs url (and no path)")
            parse_postgres_url(self.url, what=f"shard {self.name!r} url")
        elif not self.path or self.url:
            raise ValueError(f"shard {self.name!r}: a 'duckdb' shard needs path (and no url)")
        return self


class DeploymentConfig(BaseModel):
    """The contents of `deployment.yaml`."""

    model_config = ConfigDict(extra="forbid")

    format: Literal[1] = Field(default=1, description="Version of this file's layout.")
    mode: Literal["embedded", "external"] = Field(
        description="'embedded': a PostgreSQL server run by DMS inside the data directory; "
        "'external': an existing PostgreSQL server named by database_url or DMS_DATABASE_URL."
    )
    database_url: str | None = Field(
        default=None, description="Control database URL of an external deployment (DMS_DATABASE_URL wins)."
    )
    database_name: str = Field(
        default="dms",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$",
        description="Control database name (embedded).",
    )
    shards: list[ShardConfig] = Field(default_factory=list, description="Catalog shards, in placement order.")
    anonymous_access: bool = Field(
        default=True,
        description="Whether the HTTP services answer requests without a token (public data, anonymous "
        "UWS jobs reachable only by their URL); false: every request needs Authorization: Bearer TOKEN.",
    )
    created_at: datetime = Field(
        default_factory=lambda: datetime.now(UTC), description="When `dms init` ran."
    )
    instance: Literal["dac", "qa", "commissioning"] = Field(
        default="dac",
        description="Which Science Platform instance this deployment is: 'dac' shows released data only; "
        "'qa' and 'commissioning' also show unreleased and intermediate products to tokens with the "
        "'unreleased' scope.",
    )
    workspace_max_bytes: int = Field(
        default=1 << 30, ge=0, description="Default quota of a personal workspace, in bytes on disk."
    )
    workspace_max_rows: int = Field(
        default=10_000_000, ge=0, description="Default quota of a personal workspace, in rows."
    )
    vo_upload_allow: list[str] = Field(
        default_factory=list,
        description="Hosts, addresses or CIDR networks that TAP uploads by URL may read although they are "
        "private, loopback or link-local (by default only public addresses are fetched).",
    )

    @model_validator(mode="after")
    def _check(self) -> DeploymentConfig:
        if self.mode == "external" and self.database_url is None and not os.environ.get(ENV_DATABASE_URL):
            raise ValueError(f"an external deployment needs database_url or {ENV_DATABASE_URL}")
        if self.database_url is not None:
            parse_postgres_url(self.database_url, what="database_url")
        names = [s.name for s in self.shards]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"shard names must be unique; repeated: {', '.join(duplicates)}")
        return self

    def shard(self, name: str) -> ShardConfig:
        """The shard called `name`, or a ConfigError listing the known ones."""
        for shard in self.shards:
            if shard.name == name:
                return shard
        known = ", ".join(s.name for s in self.shards) or "none"
        raise ConfigError(f"no shard named {name!r}; known shards: {known}")


def default_data_dir() -> Path:
    """`DMS_DATA_DIR` if set, else the per-user data directory (e.g. ~/.local/share/dms)."""
    env = os.environ.get(ENV_DATA_DIR)
    return Path(env).expanduser() if env else Path(platformdirs.user_data_dir("dms"))


def parse_postgres_url(url: str, *, what: str = ENV_DATABASE_URL) -> URL:
    """Parse a PostgreSQL URL and return it with the psycopg 3 driver, or raise ConfigError saying why."""
    shown = mask_password(url)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(
            f"{what} {shown!r} is not a database URL; expected postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
        ) from exc
    if parsed.get_backend_name() != "postgresql":
        raise ConfigError(
            f"{what} {shown!r} names a {parsed.get_backend_name()!r} database; DMS needs PostgreSQL "
            "(postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE)"
        )
    if not parsed.database:
        raise ConfigError(f"{what} {shown!r} names no database; add /DATABASE at the end")
    return parsed.set(drivername="postgresql+psycopg")


def mask_password(url: str) -> str:
    """The URL with any password replaced by '***', for messages and logs."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def load_config(path: Path) -> DeploymentConfig:
    """Read and validate a deployment.yaml; errors name the file and each invalid field."""
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} should hold a mapping of settings, found {type(raw).__name__}")
    try:
        return DeploymentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path} is invalid:\n{_describe(exc)}") from exc


def save_config(config: DeploymentConfig, path: Path) -> None:
    """Write deployment.yaml atomically, readable by its owner only (it may hold a database password)."""
    data = config.model_dump(mode="json", exclude_none=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(path)


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "(file)"
        lines.append(f"  {where}: {error['msg']}")
    return "\n".join(lines)


def validate_shard(**fields: object) -> ShardConfig:
    """Build a ShardConfig from user input, raising ConfigError with every problem listed."""
    try:
        return ShardConfig.model_validate(fields)
    except ValidationError as exc:
        raise ConfigError(f"invalid shard:\n{_describe(exc)}") from exc
