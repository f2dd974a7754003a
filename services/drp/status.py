"""`dms drp status`: the releases the DRP made, from the batch jobs and the catalog registry."""

from __future__ import annotations

from typing import Any

import psycopg
import sqlalchemy as sa

from dms.deployment import Deployment
from dms.services.batch import store
from dms.services.drp.production import conninfo
from dms.services.drp.release import table_names


def releases(deployment: Deployment, release: str | None = None) -> list[dict[str, Any]]:
    """Per release: its jobs (state, task counts, failures) and each table's committed rows."""
    with psycopg.connect(conninfo(deployment), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT name, job_id FROM dms.batch_job WHERE production = 'drp' ORDER BY job_id"
        ).fetchall()
        by_release: dict[str, list[dict[str, Any]]] = {}
        for name, job_id in rows:
            name = str(name).removeprefix("drp-")
            if release is not None and name != release:
                continue
            status = store.job_status(conn, int(job_id), tasks=10_000)
            errors = [f"{t['label']}: {t['error']}" for t in status["task_list"] if t["state"] == "failed"]
            by_release.setdefault(name, []).append(
                {"job_id": int(job_id), "state": status["state"], "tasks": status["tasks"], "errors": errors}
            )
    result = []
    with deployment.connect() as conn:
        for name, jobs in by_release.items():
            counts = {}
            for table in table_names(name).values():
                counts[table] = conn.execute(
                    sa.text("SELECT row_count FROM dms.catalog_table WHERE name = :t"), {"t": table}
                ).scalar_one_or_none()
            result.append({"release": name, "jobs": jobs, "rows": counts})
    return result
