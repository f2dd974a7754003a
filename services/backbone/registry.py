"""The Data Backbone registry in the control database (the Butler's tables in schema `dms`).

Datasets are identified as the Butler identifies raws: a UUID5 of dataset type, run and data ID, so
registering the same dataset twice finds the first. Registration takes a transaction-scoped advisory lock
on that id, so two archivers racing on one dataset register it once.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from dms.services.backbone.errors import DataIdError, DatasetConflictError
from dms.services.backbone.formats import Format
from dms.services.backbone.store import StoredFile

DATASET_NAMESPACE = uuid.UUID("5b7c0f3e-5d1a-4c8e-9a40-2f6f3d8b1c01")


@dataclass(frozen=True)
class DatasetRef:
    """A registered dataset and, when known, its file at one site."""

    id: uuid.UUID
    dataset_type: str
    run: str
    data_id: dict[str, Any]
    site: str | None = None
    path: str | None = None
    size_bytes: int | None = None
    checksum: str | None = None
    file_format: str | None = None
    checksum_algorithm: str | None = None


def canonical_data_id(data_id: dict[str, Any]) -> str:
    return json.dumps(data_id, sort_keys=True, separators=(",", ":"))


def dataset_id(dataset_type: str, run: str, data_id: dict[str, Any]) -> uuid.UUID:
    """The deterministic id of a dataset (same type, run and data ID -> same id)."""
    return uuid.uuid5(DATASET_NAMESPACE, f"{dataset_type}|{run}|{canonical_data_id(data_id)}")


def ensure_dataset_type(
    conn: sa.Connection, name: str, dimensions: list[str], storage_class: str, *, is_calibration: bool = False
) -> list[str]:
    """Register a dataset type (no-op if it exists); returns its registered dimensions."""
    conn.execute(
        sa.text(
            "INSERT INTO dms.dataset_type (name, storage_class, dimensions, is_calibration) "
            "VALUES (:n, :s, CAST(:d AS jsonb), :c) ON CONFLICT (name) DO NOTHING"
        ),
        {"n": name, "s": storage_class, "d": json.dumps(dimensions), "c": is_calibration},
    )
    return dataset_type_dimensions(conn, name)


def dataset_type_dimensions(conn: sa.Connection, name: str) -> list[str]:
    dims = conn.execute(
        sa.text("SELECT dimensions FROM dms.dataset_type WHERE name = :n"), {"n": name}
    ).scalar_one_or_none()
    if dims is None:
        known = conn.execute(sa.text("SELECT name FROM dms.dataset_type ORDER BY name")).scalars().all()
        raise DataIdError(
            f"unknown dataset type {name!r}; registered types: {', '.join(known) or 'none'} "
            "(`dms backbone put --dimensions ...` registers a new one)"
        )
    return list(dims)


def check_data_id(dimensions: list[str], data_id: dict[str, Any], dataset_type: str) -> None:
    if set(data_id) != set(dimensions):
        raise DataIdError(
            f"data ID {canonical_data_id(data_id)} does not fit dataset type {dataset_type!r}, whose "
            f"dimensions are {', '.join(dimensions)}"
        )


def ensure_run(conn: sa.Connection, run: str, doc: str | None = None) -> None:
    conn.execute(
        sa.text(
            "INSERT INTO dms.collection (name, type, doc) VALUES (:n, 'RUN', :d) "
            "ON CONFLICT (name) DO NOTHING"
        ),
        {"n": run, "d": doc},
    )
    kind = conn.execute(sa.text("SELECT type FROM dms.collection WHERE name = :n"), {"n": run}).scalar_one()
    if kind != "RUN":
        raise DataIdError(
            f"collection {run!r} is a {kind} collection, not a RUN: datasets are written to runs"
        )


def register_file(
    conn: sa.Connection,
    *,
    dataset_type: str,
    run: str,
    data_id: dict[str, Any],
    stored: StoredFile,
    fmt: Format,
    site: str,
    label: str,
    rehash: Callable[[str], str] | None = None,
) -> tuple[DatasetRef, bool]:
    """Register `stored` as the dataset (type, run, data ID) at `site`, inside the caller's transaction.

    Returns (ref, created). The same bytes again return the existing dataset (created False); different
    bytes under the same data ID raise DatasetConflictError and change nothing. `rehash(algorithm)`
    checksums the new file with the existing record's algorithm when the two differ.
    """
    ident = dataset_id(dataset_type, run, data_id)
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": str(ident)})
    existing = conn.execute(
        sa.text(
            "SELECT r.checksum, r.checksum_algorithm, r.path FROM dms.dataset d "
            "LEFT JOIN dms.datastore_record r "
            "ON r.dataset_id = d.id AND r.site = :site WHERE d.id = :id"
        ),
        {"id": ident, "site": site},
    ).first()
    ref = DatasetRef(
        ident,
        dataset_type,
        run,
        data_id,
        site,
        stored.path,
        stored.size_bytes,
        stored.checksum,
        fmt.name,
        stored.algorithm,
    )
    if existing is not None:
        ours = stored.checksum
        if existing.checksum_algorithm not in (None, stored.algorithm) and rehash is not None:
            ours = rehash(existing.checksum_algorithm)
        if existing.checksum == ours:
            return dataclasses.replace(
                ref,
                path=existing.path,
                checksum=existing.checksum,
                checksum_algorithm=existing.checksum_algorithm,
            ), False
        raise DatasetConflictError(
            f"{label}: {dataset_type} {canonical_data_id(data_id)} is already archived in {run} with "
            f"different contents ({existing.checksum_algorithm} {existing.checksum} there, {ours} here); "
            "nothing was "
            "overwritten"
        )
    conn.execute(
        sa.text(
            "INSERT INTO dms.dataset (id, dataset_type, run, data_id) VALUES (:id, :t, :r, CAST(:d AS jsonb))"
        ),
        {"id": ident, "t": dataset_type, "r": run, "d": canonical_data_id(data_id)},
    )
    insert_record(conn, ident, site, stored, fmt)
    return ref, True


def insert_record(conn: sa.Connection, ident: uuid.UUID, site: str, stored: StoredFile, fmt: Format) -> None:
    conn.execute(
        sa.text(
            "INSERT INTO dms.datastore_record (dataset_id, site, path, size_bytes, checksum, "
            "checksum_algorithm, formatter, file_format, verified_at) "
            "VALUES (:id, :site, :path, :size, :sum, :alg, :fmtr, :fmt, now())"
        ),
        {
            "id": ident,
            "site": site,
            "path": stored.path,
            "size": stored.size_bytes,
            "sum": stored.checksum,
            "alg": stored.algorithm,
            "fmtr": fmt.formatter,
            "fmt": fmt.name,
        },
    )


_REF_COLUMNS = (
    "d.id, d.dataset_type, d.run, d.data_id, r.site, r.path, r.size_bytes, r.checksum, r.file_format, "
    "r.checksum_algorithm"
)


def _ref(row: Any) -> DatasetRef:
    return DatasetRef(
        row.id if isinstance(row.id, uuid.UUID) else uuid.UUID(str(row.id)),
        row.dataset_type,
        row.run,
        dict(row.data_id),
        row.site,
        row.path,
        row.size_bytes,
        row.checksum,
        row.file_format,
        row.checksum_algorithm,
    )


def resolve_collections(conn: sa.Connection, collections: list[str]) -> list[tuple[str, str]]:
    """The search path: each collection as (name, RUN or TAGGED), chains expanded in order."""
    result: list[tuple[str, str]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        kind = conn.execute(
            sa.text("SELECT type FROM dms.collection WHERE name = :n"), {"n": name}
        ).scalar_one_or_none()
        if kind is None:
            raise DataIdError(f"unknown collection {name!r}")
        if kind == "CHAINED":
            children = conn.execute(
                sa.text("SELECT child FROM dms.collection_chain WHERE parent = :n ORDER BY position"),
                {"n": name},
            ).scalars()
            for child in list(children):
                visit(child)
        else:
            result.append((name, kind))

    for name in collections:
        visit(name)
    return result


def find(
    conn: sa.Connection, dataset_type: str, data_id: dict[str, Any], collections: list[str] | None, site: str
) -> DatasetRef | None:
    """The first dataset of this type and data ID along the collection search path (every run if None)."""
    if collections is None:
        collections = list(
            conn.execute(
                sa.text("SELECT name FROM dms.collection WHERE type = 'RUN' ORDER BY created_at, name")
            )
            .scalars()
            .all()
        )
    for name, kind in resolve_collections(conn, collections):
        member = (
            "d.run = :c"
            if kind == "RUN"
            else ("d.id IN (SELECT dataset_id FROM dms.tagged_dataset WHERE collection = :c)")
        )
        row = conn.execute(
            sa.text(
                f"SELECT {_REF_COLUMNS} FROM dms.dataset d LEFT JOIN dms.datastore_record r "
                f"ON r.dataset_id = d.id AND r.site = :site "
                f"WHERE {member} AND d.dataset_type = :t AND d.data_id = CAST(:d AS jsonb)"
            ),
            {"c": name, "t": dataset_type, "d": canonical_data_id(data_id), "site": site},
        ).first()
        if row is not None:
            return _ref(row)
    return None


def list_datasets(
    conn: sa.Connection,
    *,
    site: str,
    dataset_type: str | None = None,
    run: str | None = None,
    where: dict[str, Any] | None = None,
    limit: int | None = None,
) -> list[DatasetRef]:
    """Datasets matching a type, a run and a partial data ID (every given key must match)."""
    clauses = ["TRUE"]
    params: dict[str, Any] = {"site": site}
    if dataset_type:
        clauses.append("d.dataset_type = :t")
        params["t"] = dataset_type
    if run:
        clauses.append("d.run = :r")
        params["r"] = run
    if where:
        clauses.append("d.data_id @> CAST(:w AS jsonb)")
        params["w"] = canonical_data_id(where)
    sql = (
        f"SELECT {_REF_COLUMNS} FROM dms.dataset d LEFT JOIN dms.datastore_record r "
        f"ON r.dataset_id = d.id AND r.site = :site WHERE {' AND '.join(clauses)} "
        "ORDER BY d.ingest_date, d.id"
    )
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return [_ref(row) for row in conn.execute(sa.text(sql), params)]
