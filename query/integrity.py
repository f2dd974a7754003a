"""Chunk files are checked against the checksum their load recorded before a query's answer depends on them.

Each Parquet chunk file's SHA-256 is recorded in `dms.chunk_file.checksum` when the load writes it. The query
engine hashes a file the first time it reads it in a process and remembers the outcome by path, size and
modification and change times (any write to the file, even one that restores its mtime, sets its change
time, so the file is hashed again); `dms catalog verify`
hashes every file. A damaged or missing chunk is read from a replica when there is an intact one, and is
otherwise an error naming the chunk and the file: never an answer computed from changed bytes.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass

from dms.query.errors import QueryError
from dms.query.registry import Snapshot
from dms.schema.catalog import CatalogTable

ALGORITHM = "sha256"
_BLOCK = 1 << 20


class ChunkDamaged(QueryError):
    """A chunk's file is missing or does not match its recorded checksum, and no intact replica exists."""


def file_checksum(path: str | os.PathLike[str]) -> str:
    """`sha256:<hex digest>` of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(_BLOCK):
            digest.update(block)
    return f"{ALGORITHM}:{digest.hexdigest()}"


@dataclass(frozen=True)
class _Seen:
    size: int
    mtime_ns: int
    ctime_ns: int
    expected: str
    problem: str | None


_seen: dict[str, _Seen] = {}
_seen_lock = threading.Lock()


def file_problem(path: str, expected: str | None, *, full: bool = False) -> str | None:
    """What is wrong with a chunk file (None when it is intact): "missing", or a checksum mismatch. A file
    without a recorded checksum (loaded before checksums were kept) is only checked to exist. Unless `full`,
    the outcome for an unchanged file (same size and modification time) is remembered for the process."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return "the file is missing"
    except OSError as exc:
        return f"the file cannot be read ({exc.strerror})"
    if expected is None:
        return None
    if not full:
        with _seen_lock:
            seen = _seen.get(path)
        if seen is not None and (seen.size, seen.mtime_ns, seen.ctime_ns, seen.expected) == (
            status.st_size,
            status.st_mtime_ns,
            status.st_ctime_ns,
            expected,
        ):
            return seen.problem
    try:
        actual = file_checksum(path)
    except OSError as exc:
        return f"the file cannot be read ({exc.strerror})"
    problem = None if actual == expected else f"its checksum is {actual}, not {expected} as recorded at load"
    with _seen_lock:
        _seen[path] = _Seen(status.st_size, status.st_mtime_ns, status.st_ctime_ns, expected, problem)
    return problem


ChunkKey = tuple[int, int]


def damaged_files(
    snapshot: Snapshot, tables: list[CatalogTable], roots: dict[str, str], shard: str, chunk: ChunkKey | None
) -> list[str]:
    """What is wrong with the files a query of `tables` reads on `shard` for `chunk` (the chunk's files of
    the partitioned tables, the shard's copy of the replicated ones), one line per bad file."""
    problems = []
    for table in tables:
        data = snapshot.chunks[table.name]
        if table.partitioned:
            paths = data.files.get((shard, *chunk), []) if chunk is not None else []
        else:
            paths = data.replicated_files.get(shard, [])
        for path in paths:
            problem = file_problem(f"{roots[shard]}/{path}", data.checksums.get((shard, path)))
            if problem is not None:
                problems.append(f"{table.name} file {path} on shard {shard}: {problem}")
    return problems


def reroute_damaged(
    snapshot: Snapshot,
    tables: list[CatalogTable],
    roots: dict[str, str],
    chunk_sets: dict[str, list[ChunkKey]],
    replicas: dict[ChunkKey, list[str]],
) -> tuple[dict[str, list[ChunkKey]], list[str]]:
    """The chunks to read on each shard, with every chunk whose files are damaged there moved to a replica
    whose files are intact, and notes saying so; a chunk with no intact copy is a `ChunkDamaged` error."""
    result: dict[str, list[ChunkKey]] = {}
    notes = []
    for shard, chunks in chunk_sets.items():
        for chunk in chunks:
            problems = damaged_files(snapshot, tables, roots, shard, chunk)
            target = shard
            if problems:
                target = next(
                    (
                        other
                        for other in replicas.get(chunk, [])
                        if other != shard
                        and other in roots
                        and not damaged_files(snapshot, tables, roots, other, chunk)
                    ),
                    "",
                )
                if not target:
                    raise ChunkDamaged(
                        f"chunk {chunk[0]}/{chunk[1]} cannot be read: {'; '.join(problems)}; it has no "
                        "intact replica (`dms catalog verify` lists every damaged file)"
                    )
                notes.append(f"damaged: chunk {chunk[0]}/{chunk[1]} read from {target} ({problems[0]})")
            result.setdefault(target, []).append(chunk)
    return result, notes


def check_files_exist(snapshot: Snapshot, table: CatalogTable, roots: dict[str, str]) -> None:
    """Every chunk of a DuckDB-stored table has a copy whose files exist (a stat per file: what an answer
    from the registry's row counts rests on)."""
    data = snapshot.chunks[table.name]
    copies: dict[ChunkKey | None, dict[str, list[str]]] = {}
    for (shard, order, pixel), paths in data.files.items():
        copies.setdefault((order, pixel), {})[shard] = paths
    for shard, paths in data.replicated_files.items():
        copies.setdefault(None, {})[shard] = paths
    for chunk, by_shard in copies.items():
        missing = [
            f"file {path} on shard {shard}"
            for shard, paths in by_shard.items()
            for path in paths
            if shard not in roots or not os.path.exists(f"{roots[shard]}/{path}")
        ]
        intact = any(
            shard in roots and all(os.path.exists(f"{roots[shard]}/{p}") for p in paths)
            for shard, paths in by_shard.items()
        )
        if not intact:
            where = "its replicated data" if chunk is None else f"chunk {chunk[0]}/{chunk[1]}"
            raise ChunkDamaged(
                f"{table.name} cannot be counted: {where} has no copy whose files all exist "
                f"(missing: {', '.join(missing)})"
            )
