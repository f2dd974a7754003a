"""`dms backbone verify`: read back every stored file and compare it with its datastore record.

Reports corrupted files (size or SHA-256 differ), missing files, orphans (objects no record names: a
write whose registration never committed) and temporary files of writers still running or killed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import sqlalchemy as sa
from tqdm import tqdm

from dms.services.backbone.client import Backbone


@dataclass
class VerifyReport:
    """What `verify` found at each site."""

    checked: int = 0
    ok: int = 0
    corrupt: list[tuple[str, str, str]] = field(default_factory=list)  # (site, path, why)
    missing: list[tuple[str, str]] = field(default_factory=list)
    orphans: list[tuple[str, str]] = field(default_factory=list)
    removed_temp: int = 0
    removed_orphans: int = 0

    @property
    def healthy(self) -> bool:
        return not self.corrupt and not self.missing


def verify(
    backbone: Backbone,
    site: str | None = None,
    *,
    clean: bool = False,
    orphan_age: float = 3600.0,
    progress: bool = False,
) -> VerifyReport:
    """Check every file at `site` (default: every site).

    With `clean`, remove orphans older than `orphan_age` seconds (younger ones may belong to a
    registration still in progress) and temporary files of writers that are gone."""
    report = VerifyReport()
    with backbone.begin() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT dataset_id, site, path, size_bytes, checksum, checksum_algorithm "
                "FROM dms.datastore_record "
                "WHERE (CAST(:s AS text) IS NULL OR site = :s) ORDER BY site, path"
            ),
            {"s": site},
        ).all()
        names = (
            [site]
            if site
            else list(conn.execute(sa.text("SELECT name FROM dms.site ORDER BY name")).scalars())
        )
    verified = []
    for row in tqdm(rows, desc="verify", unit="file", disable=not progress):
        report.checked += 1
        store = backbone.store(row.site)
        try:
            size, checksum = store.checksum(row.path, row.checksum_algorithm)
        except FileNotFoundError:
            report.missing.append((row.site, row.path))
            continue
        if size != row.size_bytes:
            report.corrupt.append((row.site, row.path, f"size {size} bytes, recorded {row.size_bytes}"))
        elif checksum != row.checksum:
            report.corrupt.append(
                (row.site, row.path, f"{row.checksum_algorithm} differs from the recorded checksum")
            )
        else:
            report.ok += 1
            verified.append((row.dataset_id, row.site))
    with backbone.begin() as conn:
        for dataset_id, name in verified:
            conn.execute(
                sa.text(
                    "UPDATE dms.datastore_record SET verified_at = now() WHERE dataset_id = :d AND site = :s"
                ),
                {"d": dataset_id, "s": name},
            )
    recorded = {(row.site, row.path) for row in rows}
    for name in names:
        store = backbone.store(name)
        for path in store.iter_objects():
            if (name, path) not in recorded:
                report.orphans.append((name, path))
                if clean and time.time() - store.absolute(path).stat().st_mtime >= orphan_age:
                    store.remove(path)
                    report.removed_orphans += 1
        if clean:
            report.removed_temp += len(store.clean_stale_temp())
    return report
