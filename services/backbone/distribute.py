"""Bulk distribution: deliver data products to partner sites that subscribed to them, incrementally.

A subscription (`dms.distribution_subscription`) names a destination directory (standing in for a
partner's transfer endpoint), the dataset types and runs whose files it receives, and the control
database tables it receives as Parquet. Each run delivers only what is new or changed since the last
(`dms.distribution_item` remembers each item's checksum), writes files atomically (temporary name, then
rename), and rewrites the destination's `manifest.json`: every delivered file with its SHA-256 and size.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from dms.services.backbone import checksums
from dms.services.backbone.client import Backbone
from dms.services.backbone.errors import BackboneError

MANIFEST = "manifest.json"
_TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Subscription:
    name: str
    destination: Path
    dataset_types: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)


def subscribe(conn: sa.Connection, sub: Subscription) -> None:
    """Register a partner's subscription (tables are checked to exist)."""
    for table in sub.tables:
        _check_table(conn, table)
    exists = conn.execute(
        sa.text("SELECT 1 FROM dms.distribution_subscription WHERE name = :n"), {"n": sub.name}
    )
    if exists.first():
        raise BackboneError(f"a subscription named {sub.name!r} already exists")
    conn.execute(
        sa.text(
            "INSERT INTO dms.distribution_subscription (name, destination, dataset_types, runs, tables) "
            "VALUES (:n, :d, CAST(:t AS jsonb), CAST(:r AS jsonb), CAST(:x AS jsonb))"
        ),
        {
            "n": sub.name,
            "d": str(sub.destination.resolve()),
            "t": json.dumps(sub.dataset_types),
            "r": json.dumps(sub.runs),
            "x": json.dumps(sub.tables),
        },
    )


def _check_table(conn: sa.Connection, table: str) -> None:
    schema, _, name = table.partition(".")
    found = (
        _TABLE_NAME.match(table)
        and conn.execute(
            sa.text("SELECT 1 FROM information_schema.tables WHERE table_schema = :s AND table_name = :t"),
            {"s": schema, "t": name},
        ).first()
    )
    if not found:
        raise BackboneError(
            f"unknown table {table!r}: give SCHEMA.TABLE of the control database, e.g. cdb_lsstcam.exposure"
        )


@dataclass
class Delivery:
    subscription: str
    delivered: list[str] = field(default_factory=list)  # items
    unchanged: int = 0
    bytes_delivered: int = 0


def distribute(backbone: Backbone, name: str | None = None) -> list[Delivery]:
    """Deliver what is new to every active subscription (or only `name`)."""
    with backbone.begin() as conn:
        rows = (
            conn.execute(
                sa.text(
                    "SELECT * FROM dms.distribution_subscription WHERE active "
                    "AND (CAST(:n AS text) IS NULL OR name = :n) "
                    "ORDER BY name"
                ),
                {"n": name},
            )
            .mappings()
            .all()
        )
    if name is not None and not rows:
        raise BackboneError(f"no active subscription named {name!r} (see `dms distribute list`)")
    return [_deliver(backbone, row) for row in rows]


def _deliver(backbone: Backbone, sub: Any) -> Delivery:
    delivery = Delivery(sub["name"])
    destination = Path(sub["destination"])
    destination.mkdir(parents=True, exist_ok=True)
    with backbone.begin() as conn:
        delivered: dict[str, str] = dict(
            conn.execute(
                sa.text("SELECT item, checksum FROM dms.distribution_item WHERE subscription = :s"),
                {"s": sub["name"]},
            ).all()
        )
        datasets = _datasets(conn, sub)
    for row in datasets:
        item = f"dataset:{row.id}"
        if item in delivered:  # datasets never change: once delivered is enough
            delivery.unchanged += 1
            continue
        data = backbone.store(row.site).absolute(row.path).read_bytes()
        if checksums.of_bytes(data, row.checksum_algorithm) != row.checksum:
            raise BackboneError(f"dataset {row.id} at {row.site} is corrupted; run `dms backbone verify`")
        target = f"datasets/{row.dataset_type}/{row.run}/{Path(row.path).name.split('-', 1)[1]}"
        sha256 = hashlib.sha256(data).hexdigest()
        _record(backbone, delivery, sub["name"], item, destination, target, data, sha256)
    for table in sub["tables"]:
        data = _table_parquet(backbone, table)
        checksum = hashlib.sha256(data).hexdigest()
        if delivered.get(f"table:{table}") == checksum:
            delivery.unchanged += 1
            continue
        _record(
            backbone,
            delivery,
            sub["name"],
            f"table:{table}",
            destination,
            f"tables/{table}.parquet",
            data,
            checksum,
        )
    _write_manifest(backbone, sub["name"], destination)
    return delivery


def _datasets(conn: sa.Connection, sub: Any) -> list[Any]:
    if not sub["dataset_types"]:
        return []
    return list(
        conn.execute(
            sa.text(
                """
        SELECT DISTINCT ON (d.id) d.id, d.dataset_type, d.run, r.site, r.path, r.checksum,
               r.checksum_algorithm
        FROM dms.dataset d JOIN dms.datastore_record r ON r.dataset_id = d.id
        JOIN dms.site s ON s.name = r.site
        WHERE d.dataset_type = ANY(CAST(:types AS text[]))
          AND (cardinality(CAST(:runs AS text[])) = 0 OR d.run = ANY(CAST(:runs AS text[])))
        ORDER BY d.id, CASE s.role WHEN 'archive' THEN 0 ELSE 1 END
        """
            ),
            {"types": list(sub["dataset_types"]), "runs": list(sub["runs"])},
        )
    )


def _table_parquet(backbone: Backbone, table: str) -> bytes:
    """A control database table as Parquet, rows in a fixed order so unchanged tables give equal bytes."""
    schema, _, name = table.partition(".")
    with backbone.begin() as conn:
        _check_table(conn, table)
        result = conn.execute(sa.text(f'SELECT * FROM "{schema}"."{name}"'))
        columns = list(result.keys())
        rows = sorted(result.all(), key=lambda r: tuple(str(v) for v in r))
    arrays = {c: pa.array([_plain(r[i]) for r in rows]) for i, c in enumerate(columns)}
    buffer = io.BytesIO()
    pq.write_table(pa.table(arrays), buffer)
    return buffer.getvalue()


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, uuid.UUID | dict | list) else value


def _record(
    backbone: Backbone,
    delivery: Delivery,
    sub: str,
    item: str,
    destination: Path,
    target: str,
    data: bytes,
    checksum: str,
) -> None:
    path = destination / target
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    with backbone.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO dms.distribution_item (subscription, item, path, checksum, size_bytes) "
                "VALUES (:s, :i, :p, :c, :n) ON CONFLICT (subscription, item) DO UPDATE "
                "SET path = EXCLUDED.path, "
                "checksum = EXCLUDED.checksum, size_bytes = EXCLUDED.size_bytes, delivered_at = now()"
            ),
            {"s": sub, "i": item, "p": target, "c": checksum, "n": len(data)},
        )
    delivery.delivered.append(item)
    delivery.bytes_delivered += len(data)


def _write_manifest(backbone: Backbone, sub: str, destination: Path) -> None:
    with backbone.begin() as conn:
        items = conn.execute(
            sa.text(
                "SELECT item, path, checksum, size_bytes, delivered_at FROM dms.distribution_item "
                "WHERE subscription = :s ORDER BY path"
            ),
            {"s": sub},
        ).all()
    manifest = {
        "subscription": sub,
        "written_at": datetime.now(UTC).isoformat(),
        "files": [
            {
                "item": i.item,
                "path": i.path,
                "sha256": i.checksum,
                "size_bytes": i.size_bytes,
                "delivered_at": i.delivered_at.isoformat(),
            }
            for i in items
        ],
    }
    tmp = destination / f".{MANIFEST}.part"
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, destination / MANIFEST)
