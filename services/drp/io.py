"""Where a release's intermediate products live (the release's work directory in the deployment) and how
they are written: whole files renamed into place, so a task killed mid-write leaves nothing half-written
and its retry simply writes again."""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from astropy.io import fits

from dms.deployment import Deployment


def work_dir(data_dir: Path | str, release: str) -> Path:
    return Path(data_dir) / "drp" / release


def write_fits(hdus: fits.HDUList, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    hdus.writeto(tmp, overwrite=True)
    tmp.replace(path)
    return str(path)


def write_parquet(frame: pd.DataFrame, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    return str(path)


def checksum(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@contextlib.contextmanager
def deployment_at(data_dir: str) -> Iterator[Deployment]:
    """The deployment a task works in (tasks get its data directory as an argument)."""
    deployment = Deployment.open(Path(data_dir))
    try:
        yield deployment
    finally:
        deployment.dispose()


def json_safe(value: Any) -> Any:
    """A task's output with non-finite numbers as null (PostgreSQL's JSON has no NaN) and numpy scalars
    as Python ones."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def calibration_collections(backbone: Any, instrument: str, exposure: int) -> list[str] | None:
    """Where a raw's master calibrations are looked for: its own night's calibration RUN first (the
    simulator's `INSTRUMENT/calib/simDAYOBS`; Rubin's exposure id is day_obs * 100000 + seq_num), then every
    RUN as usual; None (every RUN, oldest first) when the night has no RUN of its own. Without this, two
    nights' masters of one detector resolve to the older night's."""
    import sqlalchemy as sa

    night = f"{instrument}/calib/sim{int(exposure) // 100_000}"
    with backbone.begin() as conn:
        runs = list(
            conn.execute(
                sa.text("SELECT name FROM dms.collection WHERE type = 'RUN' ORDER BY created_at, name")
            ).scalars()
        )
    return [night, *(r for r in runs if r != night)] if night in runs else None
