"""In-process peers of the catalog benchmark: scipy's k-d tree (crossmatch and self-join on unit vectors,
the usual astronomer's answer without a database) and pyarrow's Parquet writer (the speed of the format,
which DMS's ingest into DuckDB/Parquet shards is measured against)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from catalog_data import Dataset
from catalog_peers import Peer


def unit_vectors(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    ra_r, dec_r = np.radians(ra), np.radians(dec)
    return np.column_stack([np.cos(dec_r) * np.cos(ra_r), np.cos(dec_r) * np.sin(ra_r), np.sin(dec_r)])


def chord(radius_deg: float) -> float:
    """The straight-line distance between unit vectors `radius_deg` apart on the sphere."""
    return 2.0 * math.sin(math.radians(radius_deg) / 2.0)


class ScipyPeer(Peer):
    """scipy.spatial.cKDTree over the rows in memory (read from the same Parquet files; building the trees is
    part of each join's time, as a script would)."""

    name = "scipy"

    def ingest(self, data: Dataset) -> dict[str, float]:
        started = time.perf_counter()
        self.obj = pq.read_table(data.obj, columns=["id", "ra", "dec"])
        seconds = time.perf_counter() - started
        self.match = pq.read_table(data.match, columns=["id", "ra", "dec"])
        return {"read_s": seconds}  # reading a file is not an ingest peer: no rate is reported

    def _points(self, table: Any) -> np.ndarray:
        return unit_vectors(table["ra"].to_numpy(), table["dec"].to_numpy())

    def crossmatch(self, radius_deg: float, timeout: float) -> int:
        from scipy.spatial import cKDTree

        obj, match = cKDTree(self._points(self.obj)), cKDTree(self._points(self.match))
        pairs = match.query_ball_tree(obj, chord(radius_deg))
        return int(sum(len(p) for p in pairs))

    def self_join(self, radius_deg: float, timeout: float) -> int:
        from scipy.spatial import cKDTree

        tree = cKDTree(self._points(self.obj))
        return 2 * len(tree.query_pairs(chord(radius_deg), output_type="ndarray"))


class ArrowWritePeer(Peer):
    """pyarrow writing the catalog's rows as one Parquet file (the ingest target's reference)."""

    name = "pyarrow"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def ingest(self, data: Dataset) -> dict[str, float]:
        rows = pq.read_table(data.obj)  # reading is not timed: DMS's figure is its whole load
        self.directory.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        pq.write_table(rows, self.directory / "obj.parquet", compression="lz4")
        seconds = time.perf_counter() - started
        return {"ingest_s": seconds, "ingest_rows_s": data.obj_rows / seconds}
