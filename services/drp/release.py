"""The release: the DRP's products loaded into the partitioned catalog as `<release>.Object`, `.Source`,
`.ForcedSource`, `.Visit` and `.CcdVisit` (dp1.yaml's shapes), all visible at once (`drp.load_release`),
and what other productions need to know of a release (`release_info`: table names and the truth)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field
from scipy.spatial import cKDTree

from dms.deployment import Deployment
from dms.loaders.catalog import TableOptions
from dms.loaders.catalog_release import TablePart, load_release
from dms.services.drp import io
from dms.services.drp.errors import DrpError
from dms.services.drp.schema import RELEASE_TABLES, conform
from dms.tasks import Task, TaskConfig, register_task

RELEASE_NAME = r"^[a-z][a-z0-9_]{0,40}$"


def check_release_name(release: str) -> str:
    if not re.fullmatch(RELEASE_NAME, release):
        raise DrpError(
            f"release name {release!r}: lower-case letters, digits and '_', starting with a letter "
            "(it becomes the catalog schema of the release's tables)"
        )
    return release


def table_names(release: str) -> dict[str, str]:
    """The catalog tables of a release, by dp1.yaml table name."""
    return {name: f"{check_release_name(release)}.{name}" for name in RELEASE_TABLES}


def level2_tables(release: str) -> Any:
    """The release's tables as Level 2 QC reads them (`dms.services.qc.level2.ReleaseTables`)."""
    from dms.services.qc.level2 import ReleaseTables

    names = table_names(release)
    return ReleaseTables(
        object=names["Object"],
        source=names["Source"],
        forced_source=names["ForcedSource"],
        visit=names["Visit"],
        ccd_visit=names["CcdVisit"],
    )


def release_info(deployment: Deployment, release: str) -> dict[str, Any]:
    """What Level 2 QC needs of a release: its table names, the simulator's truth table (None for real
    data), its work directory and the batch jobs that made it."""
    manifest = io.work_dir(deployment.data_dir, release) / "release.json"
    info: dict[str, Any] = json.loads(manifest.read_text()) if manifest.exists() else {}
    return {
        "release": release,
        "tables": table_names(release),
        "truth": info.get("truth"),
        "work_dir": str(manifest.parent),
        "jobs": info.get("jobs", []),
        "region": info.get("region"),
    }


def write_manifest(deployment: Deployment, release: str, **values: Any) -> None:
    path = io.work_dir(deployment.data_dir, release) / "release.json"
    current = json.loads(path.read_text()) if path.exists() else {}
    jobs = sorted(set(current.get("jobs", [])) | set(values.pop("jobs", [])))
    current.update(values, jobs=jobs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(current, indent=2, default=str))
    tmp.replace(path)


class LoadReleaseConfig(TaskConfig):
    association_radius_arcsec: float = Field(
        default=1.0, gt=0, le=10, description="A Source is associated with the nearest Object this close."
    )
    chunk_order: int = Field(default=5, ge=0, le=12, description="HEALPix order of the Object chunks.")
    overlap_arcsec: float = Field(default=30.0, ge=0, le=600, description="Object overlap margin, arcsec.")


@register_task
class LoadReleaseTask(Task[LoadReleaseConfig, dict[str, int]]):
    """Every product of the release loaded into the partitioned catalog in one commit."""

    name = "drp.load_release"
    ConfigClass = LoadReleaseConfig

    def run(
        self,
        data_dir: str,
        release: str,
        tag: str,
        visits: list[dict[str, Any]],
        objects: list[dict[str, Any]],
        forced: list[dict[str, Any]],
        kept_objects: list[dict[str, Any]] | None = None,
        kept_forced: list[dict[str, Any]] | None = None,
    ) -> dict[str, int]:
        names = table_names(release)
        with self.timed("assemble"):
            obj = _concat([o["path"] for o in objects + (kept_objects or [])])
            if obj.empty:
                raise DrpError(f"release {release}: no Object was detected; nothing to load")
            src = _concat([v["sources"] for v in visits])
            src["objectId"] = associate(obj, src, self.config.association_radius_arcsec)
            fsrc = _concat([f["path"] for f in forced + (kept_forced or [])])
            visit_rows = pd.DataFrame([v["visit_row"] for v in visits])
            ccd_rows = pd.DataFrame([c["row"] for v in visits for c in v["ccds"]])
        parts = [
            TablePart(
                names["Object"],
                conform("Object", obj),
                TableOptions(
                    role="director",
                    ra="coord_ra",
                    dec="coord_dec",
                    id="objectId",
                    chunk_order=self.config.chunk_order,
                    overlap_arcsec=self.config.overlap_arcsec,
                    description=f"Objects of data release {release} (dp1.yaml columns)",
                ),
            ),
            TablePart(
                names["Source"],
                conform("Source", src),
                TableOptions(
                    role="child",
                    director=names["Object"],
                    director_key="objectId",
                    ra="ra",
                    dec="dec",
                    description=f"single-visit Sources of data release {release}",
                ),
            ),
            TablePart(
                names["ForcedSource"],
                conform("ForcedSource", fsrc),
                TableOptions(
                    role="child",
                    director=names["Object"],
                    director_key="objectId",
                    ra="coord_ra",
                    dec="coord_dec",
                    description=f"forced photometry of the Objects of data release {release} on every visit",
                ),
            ),
            TablePart(
                names["Visit"],
                conform("Visit", visit_rows),
                TableOptions(role="replicated", description=f"visits of data release {release}"),
            ),
            TablePart(
                names["CcdVisit"],
                conform("CcdVisit", ccd_rows),
                TableOptions(role="replicated", description=f"detector-visits of data release {release}"),
            ),
        ]
        with io.deployment_at(data_dir) as deployment, self.timed("load"):
            results = load_release(deployment, parts, tag=tag)
        return {r.table.split(".")[-1]: r.rows for r in results}


def _concat(paths: list[str]) -> pd.DataFrame:
    frames = [pd.read_parquet(p) for p in paths if Path(p).exists()]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _unit_vectors(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    r, d = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)], axis=1)


def associate(objects: pd.DataFrame, sources: pd.DataFrame, radius_arcsec: float) -> pd.Series:
    """The objectId of the nearest Object within the radius of each Source (null when none is)."""
    if sources.empty:
        return pd.Series([], dtype="Int64")
    tree = cKDTree(_unit_vectors(objects["coord_ra"].to_numpy(), objects["coord_dec"].to_numpy()))
    chord = 2 * np.sin(np.radians(radius_arcsec / 3600.0) / 2)
    distance, index = tree.query(_unit_vectors(sources["ra"].to_numpy(), sources["dec"].to_numpy()), k=1)
    ids = objects["objectId"].to_numpy(np.int64)
    found = distance <= chord
    values = pd.Series(ids[np.clip(index, 0, len(ids) - 1)], dtype="Int64", index=sources.index)
    return values.mask(~found)
