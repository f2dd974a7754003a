"""The director index on disk: object id -> chunk, looked up without loading the index.

Each load of a director table writes its index as one Parquet file sorted by id in row groups of
`INDEX_ROW_GROUP_ROWS` ids (`dms.loaders.catalog_stream.IndexSpool`); a child table's index of orphans is
written the same way. Only the files' row-group statistics (the first and last id of each group: a few bytes
per 8192 objects, about 5 MB at 10^9 objects) are held in memory; a lookup binary-searches them for the
groups whose id range holds a wanted id, and reads only those groups' `id` and `chunk` columns.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq

from dms.errors import DMSError

_NO_MIN, _NO_MAX = np.iinfo(np.int64).min, np.iinfo(np.int64).max


class DirectorIndexError(DMSError):
    """A director index file that cannot be read."""


@dataclass
class _Groups:
    """The row groups of every index file, sorted by their first id."""

    file: np.ndarray
    group: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


class DirectorIndex:
    """Lookups in the index files of one table (each sorted by id; one id may sit in several files only for
    a child's index of orphans, whose keys repeat)."""

    def __init__(self, files: list[str]) -> None:
        self._paths = files
        try:
            self._files = [pq.ParquetFile(f) for f in files]
        except (OSError, ValueError) as exc:
            raise DirectorIndexError(f"cannot read the director index: {str(exc).splitlines()[0]}") from exc
        self._lock = threading.Lock()
        self.groups_read = 0  # row groups read by lookups so far (what a lookup costs)
        self._groups = self._statistics()

    def _statistics(self) -> _Groups:
        file, group, lo, hi = [], [], [], []
        for i, parquet in enumerate(self._files):
            metadata = parquet.metadata
            column = parquet.schema_arrow.get_field_index("id")
            if column < 0:
                raise DirectorIndexError(f"director index file {self._paths[i]} has no id column")
            for g in range(metadata.num_row_groups):
                stats = metadata.row_group(g).column(column).statistics
                known = stats is not None and stats.has_min_max
                file.append(i)
                group.append(g)
                lo.append(int(stats.min) if known else _NO_MIN)  # no statistics: the group is always read
                hi.append(int(stats.max) if known else _NO_MAX)
        order = np.argsort(np.asarray(lo, np.int64), kind="stable")
        return _Groups(
            np.asarray(file, np.int64)[order],
            np.asarray(group, np.int64)[order],
            np.asarray(lo, np.int64)[order],
            np.asarray(hi, np.int64)[order],
        )

    def __len__(self) -> int:
        return sum(f.metadata.num_rows for f in self._files)

    def chunks_of(self, ids: list[int] | np.ndarray) -> set[int]:
        """The chunks (NUNIQ) holding any of the ids: every entry of each id that is in the index."""
        wanted = np.unique(np.asarray(ids, np.int64))
        if len(wanted) == 0 or len(self._groups.lo) == 0:
            return set()
        groups = self._groups
        # a group is read when some wanted id lies within its [first, last] id
        hit = np.searchsorted(wanted, groups.lo, "left") < np.searchsorted(wanted, groups.hi, "right")
        found: set[int] = set()
        for i in np.unique(groups.file[hit]).tolist():
            selected = sorted(groups.group[hit & (groups.file == i)].tolist())
            with self._lock:
                # in this thread: a lookup reads a group or two, less than handing them to arrow's pool
                part = self._files[i].read_row_groups(selected, columns=["id", "chunk"], use_threads=False)
                self.groups_read += len(selected)
            index_ids = part["id"].to_numpy()
            chunk = part["chunk"].to_numpy()
            first = np.searchsorted(index_ids, wanted, "left")
            last = np.searchsorted(index_ids, wanted, "right")
            for lo, hi in zip(first[first < last].tolist(), last[first < last].tolist(), strict=True):
                found.update(int(c) for c in chunk[lo:hi])
        return found
