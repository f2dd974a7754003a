"""Replication between sites: policies in the database say which datasets each site holds; tasks copy them.

`plan` turns the active policies into `dms.replication_task` rows (one per dataset and site still lacking
a copy). `replicate` works through the pending tasks, highest priority first: each is claimed with a row
lock (FOR UPDATE SKIP LOCKED, so several replicators share the work), copied from a site holding a copy,
checked against the recorded checksum, and recorded (datastore_record + task done) in the same
transaction. A copy that fails is retried up to `max_attempts` times; a replicator killed mid-copy leaves
its task pending and at most a temporary file, so running it again resumes where it stopped.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from tqdm import tqdm

from dms.services.backbone import registry
from dms.services.backbone.client import Backbone
from dms.services.backbone.errors import BackboneError, ChecksumMismatchError, SiteError
from dms.services.backbone.formats import format_named
from dms.services.backbone.store import StoredFile

log = logging.getLogger(__name__)

_DID_PREFIX = "ivo://dms/backbone?id="


@dataclass(frozen=True)
class Policy:
    name: str
    site: str
    dataset_type: str | None = None
    collection_pattern: str | None = None
    cone: tuple[float, float, float] | None = None  # ra, dec, radius (degrees)
    priority: int = 0


def add_policy(conn: sa.Connection, policy: Policy) -> None:
    """Define a replication policy (names are unique)."""
    known = set(conn.execute(sa.text("SELECT name FROM dms.site")).scalars())
    if policy.site not in known:
        raise SiteError(
            f"policy {policy.name!r}: unknown site {policy.site!r}; sites: {', '.join(sorted(known))}"
        )
    ra, dec, radius = policy.cone or (None, None, None)
    try:
        with conn.begin_nested():
            conn.execute(
                sa.text(
                    "INSERT INTO dms.replication_policy (name, site, dataset_type, collection_pattern, "
                    "region_ra, region_dec, region_radius, priority) "
                    "VALUES (:n, :s, :t, :c, :ra, :dec, :r, :p)"
                ),
                {
                    "n": policy.name,
                    "s": policy.site,
                    "t": policy.dataset_type,
                    "c": policy.collection_pattern,
                    "ra": ra,
                    "dec": dec,
                    "r": radius,
                    "p": policy.priority,
                },
            )
    except sa.exc.IntegrityError as exc:
        raise BackboneError(
            f"cannot add policy {policy.name!r}: {str(exc.orig).splitlines()[0]} (names are unique; a "
            "dataset type must be registered; a cone needs -90 <= dec <= 90 and 0 < radius <= 180)"
        ) from exc


def plan(conn: sa.Connection) -> int:
    """Create the tasks the active policies ask for; returns how many new tasks there are."""
    result = conn.execute(
        sa.text(
            f"""
            INSERT INTO dms.replication_task (dataset_id, site, priority)
            SELECT d.id, p.site, max(p.priority)
            FROM dms.replication_policy p
            JOIN dms.dataset d ON (p.dataset_type IS NULL OR d.dataset_type = p.dataset_type)
                AND (p.collection_pattern IS NULL OR d.run LIKE p.collection_pattern)
            LEFT JOIN ivoa."ObsCore" o ON p.region_ra IS NOT NULL
                AND o.obs_publisher_did = '{_DID_PREFIX}' || d.id::text
            WHERE p.active
              AND (p.region_ra IS NULL
                   OR scisql_angSep(o.s_ra, o.s_dec, p.region_ra, p.region_dec) <= p.region_radius)
              AND NOT EXISTS (SELECT 1 FROM dms.datastore_record r
                              WHERE r.dataset_id = d.id AND r.site = p.site)
            GROUP BY d.id, p.site
            ON CONFLICT (dataset_id, site) DO UPDATE SET priority = GREATEST(
                dms.replication_task.priority, EXCLUDED.priority)
            WHERE dms.replication_task.state = 'pending'
            RETURNING (xmax = 0) AS inserted
            """
        )
    )
    return sum(1 for row in result if row.inserted)


@dataclass
class ReplicationReport:
    copied: int = 0
    bytes_copied: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (dataset, site, why)
    retried: int = 0


def replicate(
    backbone: Backbone,
    *,
    site: str | None = None,
    max_attempts: int = 3,
    retry_delay: float = 0.5,
    limit: int | None = None,
    progress: bool = False,
) -> ReplicationReport:
    """Plan, then copy every pending task (to `site` only, if given). Safe to interrupt and rerun."""
    report = ReplicationReport()
    with backbone.begin() as conn:
        plan(conn)
        total = pending_count(conn, site)
    with tqdm(total=total, desc="replicate", unit="file", disable=not progress) as bar:
        for attempt in range(max_attempts):
            progressed = _pass(backbone, site, max_attempts, report, bar, limit)
            if limit is not None and report.copied >= limit:
                break
            with backbone.begin() as conn:
                if not pending_count(conn, site):
                    break
            if not progressed and attempt + 1 < max_attempts:
                report.retried += 1
                time.sleep(retry_delay * (attempt + 1))
    return report


def _pass(
    backbone: Backbone,
    site: str | None,
    max_attempts: int,
    report: ReplicationReport,
    bar: Any,
    limit: int | None,
) -> bool:
    """One sweep over the pending tasks; each task is attempted at most once per sweep."""
    tried: set[tuple[uuid.UUID, str]] = set()
    progressed = False
    while limit is None or report.copied < limit:
        outcome = _copy_next(backbone, site, tried)
        if outcome is None:
            return progressed
        key, error, size = outcome
        tried.add(key)
        if error is None:
            progressed = True
            report.copied += 1
            report.bytes_copied += size
            bar.update(1)
            continue
        with backbone.begin() as conn:
            state = conn.execute(
                sa.text(
                    "UPDATE dms.replication_task SET attempts = attempts + 1, last_error = :e, "
                    "updated_at = now(), "
                    "state = CASE WHEN attempts + 1 >= :m THEN 'failed' ELSE 'pending' END "
                    "WHERE dataset_id = :d AND site = :s RETURNING state"
                ),
                {"e": error[:2000], "m": max_attempts, "d": key[0], "s": key[1]},
            ).scalar_one()
        log.warning("replicating %s to %s failed (%s): %s", key[0], key[1], state, error)
        if state == "failed":
            report.failed.append((str(key[0]), key[1], error))
    return progressed


def _copy_next(
    backbone: Backbone, site: str | None, tried: set[tuple[uuid.UUID, str]]
) -> tuple[tuple[uuid.UUID, str], str | None, int] | None:
    """Claim, copy and record the next pending task; None when none is left to try in this sweep."""
    skip = [f"{d}|{s}" for d, s in tried]
    with backbone.begin() as conn:
        task = conn.execute(
            sa.text(
                "SELECT dataset_id, site FROM dms.replication_task WHERE state = 'pending' "
                "AND (CAST(:site AS text) IS NULL OR site = :site) "
                "AND NOT (dataset_id::text || '|' || site = ANY(CAST(:skip AS text[]))) "
                "ORDER BY priority DESC, queued_at, dataset_id LIMIT 1 FOR UPDATE SKIP LOCKED"
            ),
            {"site": site, "skip": skip},
        ).first()
        if task is None:
            return None
        key = (task.dataset_id, task.site)
        try:
            stored = _copy(backbone, conn, task.dataset_id, task.site)
        except (BackboneError, OSError) as exc:
            return key, str(exc), 0
        conn.execute(
            sa.text(
                "UPDATE dms.replication_task SET state = 'done', attempts = attempts + 1, last_error = NULL, "
                "updated_at = now() WHERE dataset_id = :d AND site = :s"
            ),
            {"d": task.dataset_id, "s": task.site},
        )
        return key, None, stored.size_bytes


def _copy(backbone: Backbone, conn: sa.Connection, dataset_id: uuid.UUID, dest: str) -> StoredFile:
    """Copy a dataset's file to `dest` from the first site with a good copy, and record it there."""
    sources = conn.execute(
        sa.text(
            "SELECT r.site, r.path, r.size_bytes, r.checksum, r.checksum_algorithm, r.file_format "
            "FROM dms.datastore_record r "
            "JOIN dms.site s ON s.name = r.site WHERE r.dataset_id = :d AND r.site <> :dest "
            "ORDER BY CASE s.role WHEN 'summit' THEN 1 WHEN 'base' THEN 2 WHEN 'archive' THEN 3 ELSE 4 END"
        ),
        {"d": dataset_id, "dest": dest},
    ).all()
    if not sources:
        raise BackboneError(f"dataset {dataset_id}: no site holds a copy to replicate from")
    problems = []
    target = backbone.store(dest)
    for source in sources:
        try:
            stored = backbone.store(source.site).copy_to(source.path, target, source.checksum_algorithm)
        except (BackboneError, OSError) as exc:
            problems.append(f"from {source.site}: {exc}")
            continue
        if stored.checksum != source.checksum or stored.size_bytes != source.size_bytes:
            backbone.discard_if_unreferenced(stored.path, dest)
            problems.append(f"from {source.site}: {ChecksumMismatchError.__name__} (source copy corrupted)")
            continue
        registry.insert_record(conn, dataset_id, dest, stored, format_named(source.file_format))
        return stored
    raise BackboneError(f"dataset {dataset_id} to {dest}: " + "; ".join(problems))


def pending_count(conn: sa.Connection, site: str | None = None) -> int:
    return int(
        conn.execute(
            sa.text(
                "SELECT count(*) FROM dms.replication_task WHERE state = 'pending' "
                "AND (CAST(:s AS text) IS NULL OR site = :s)"
            ),
            {"s": site},
        ).scalar_one()
    )


def status(conn: sa.Connection) -> list[tuple[str, str, int, int]]:
    """Per site and state: (site, state, tasks, bytes)."""
    rows = conn.execute(
        sa.text(
            "SELECT t.site, t.state, count(*) AS n, coalesce(sum(src.size_bytes), 0) AS bytes "
            "FROM dms.replication_task t LEFT JOIN LATERAL (SELECT size_bytes FROM dms.datastore_record r "
            "WHERE r.dataset_id = t.dataset_id LIMIT 1) src ON TRUE GROUP BY t.site, t.state ORDER BY 1, 2"
        )
    )
    return [(r.site, r.state, int(r.n), int(r.bytes)) for r in rows]
