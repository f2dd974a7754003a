"""`dms load`: files into a partitioned (or replicated) catalog table on the shards.

A load reads the files, checks them against the table's columns, computes `_healpix_29`, assigns chunks
(and overlap copies for director tables), writes each shard's part, and then, in one control-database
transaction, registers chunks, replicas, files and row counts and marks the load committed. Queries only
see committed loads, so a load is all-or-nothing as they see it. The checksum of the inputs makes a
repeated load a no-op; a crashed load is resumed (its finished Parquet files are kept) by running it again.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from tqdm import tqdm

from dms.deployment import Deployment
from dms.loaders.catalog_commit import commit_load as _commit
from dms.loaders.catalog_commit import replica_offset
from dms.loaders.catalog_define import check_same_definition
from dms.loaders.catalog_drop import load_lock_key, remove_table, shards_holding
from dms.loaders.catalog_errors import LoadError
from dms.loaders.catalog_regions import representation_columns
from dms.loaders.catalog_stream import (
    SPOOL_MEMORY_BYTES,
    ChunkSpool,
    IndexSpool,
    LoadSource,
    PositionSpool,
    RowSource,
)
from dms.loaders.orphans import (
    DEFAULT_ORPHANS,
    check_policy,
    director_index,
    place_children,
    refuse_placed_orphans,
)
from dms.loaders.partition import ChunkLayout, SkyCounts, finest_chunk_order, healpix_29, nuniq, overlap_rows
from dms.loaders.readers import file_checksum
from dms.schema.catalog import (
    CatalogError,
    CatalogTable,
    Column,
    column_type_name,
    find_table,
    get_table,
    qualified_name,
    register_table,
)
from dms.schema.catalog import chunks as registered_chunks
from dms.shards import REPLICATED_CHUNK, ChunkFile, ShardBackend

log = logging.getLogger(__name__)


@dataclass
class TableOptions:
    """How `dms load --create` defines a new table from a file's columns."""

    role: str = "director"
    ra: str | None = None
    dec: str | None = None
    id: str | None = None
    director: str | None = None
    director_key: str | None = None
    director2: str | None = None  # a match table's second director (its first is `director`)
    director_key2: str | None = None
    chunk_order: int = 1
    max_chunk_rows: int | None = 1_000_000
    overlap_arcsec: float = 60.0
    storage: str | None = None
    like: str | None = None
    replicas: int = 1
    description: str | None = None
    units: dict[str, str] = field(default_factory=dict)
    ucds: dict[str, str] = field(default_factory=dict)
    regions: list[str] = field(default_factory=list)  # STC-S text columns stored with their representation


@dataclass
class LoadResult:
    table: str
    load_id: int | None
    rows: int
    overlap_rows: int = 0
    chunks: int = 0
    skipped: bool = False
    seconds: float = 0.0
    orphans: int = 0  # child rows without a director row, placed by position or skipped
    orphan_policy: str = DEFAULT_ORPHANS


def load_files(
    deployment: Deployment,
    name: str,
    paths: list[Path],
    *,
    create: TableOptions | None = None,
    progress: bool = True,
    orphans: str = DEFAULT_ORPHANS,
) -> LoadResult:
    """Load files into a catalog table (creating it from the first file's columns when `create` is given).

    A load that fails changes nothing queries see; when it registered the table (`create`), the table is
    removed again (registry rows, chunk files, shard tables), so a corrected `--create` starts afresh.
    `orphans` says what happens to child rows without a director row (see `dms.loaders.orphans`)."""
    started = time.perf_counter()
    name = qualified_name(name)
    check_policy(orphans)
    engine = deployment.engine()
    with engine.connect() as lock_conn:
        lock_conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _lock_key(name)})
        created: CatalogTable | None = None
        foreign: frozenset[str] = frozenset()
        bar = None
        try:
            source = LoadSource(paths)
            table, is_new = _ensure_table(deployment, name, source.schema.empty_table(), create)
            if is_new:  # whatever a shard held under this name before is not this table's: it stays
                created, foreign = table, frozenset(shards_holding(deployment, table))
            bar = tqdm(
                total=source.rows, desc=f"load {name}", unit="rows", unit_scale=True, disable=not progress
            )
            result = _load_into(deployment, table, source, bar, orphans)
            result.seconds = time.perf_counter() - started
            return result
        except Exception:  # (an interrupted --create resumes instead, when run again)
            if created is not None:  # a failed --create leaves no table behind
                _remove_created(deployment, created, foreign)
            raise
        finally:
            lock_conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _lock_key(name)})
            lock_conn.commit()
            if bar is not None:
                bar.close()


def _load_into(
    deployment: Deployment, table: CatalogTable, source: LoadSource, bar: tqdm, orphans: str
) -> LoadResult:
    """Check the columns and the checksum before reading any row: a repeated load stops here, having
    only hashed the files' bytes."""
    source.check_columns(table)
    checksum = file_checksum(source.paths, json.dumps([table.name, table.role], sort_keys=True))
    load_id, state = _begin_load(deployment, table, checksum, source.paths)
    if state == "committed":
        return LoadResult(table.name, load_id, 0, skipped=True)
    _discard_stale_loads(deployment, table, keep=load_id)
    try:
        return _load(deployment, table, load_id, source, bar, orphans)
    except Exception:
        _discard_load(deployment, table, load_id)
        raise


def _lock_key(name: str) -> int:
    return load_lock_key(name)


def _remove_created(deployment: Deployment, table: CatalogTable, foreign: frozenset[str]) -> None:
    """Undo the registration (and whatever was stored) of a table whose `--create` load failed; the shards
    in `foreign` held a table of that name before, which is left alone (the load's rows are already gone)."""
    try:
        remove_table(deployment, table, spare=foreign)
    except Exception as exc:  # the load's own error matters more
        log.warning("could not remove table %s after its failed --create: %s", table.name, exc)


def _ensure_table(
    deployment: Deployment, name: str, data: pa.Table, create: TableOptions | None
) -> tuple[CatalogTable, bool]:
    """The table, and whether this call registered it. `--create` of an existing table is accepted only
    with the options it was created with (a resumed or repeated load), never silently with other ones."""
    with deployment.connect() as conn:
        existing = find_table(conn, name)
        if existing is not None:
            if create is not None:
                wanted = _define_table(deployment, conn, name, data, create)
                check_same_definition(existing, wanted, create)
            return existing, False
        if create is None:
            raise CatalogError(
                f"no catalog table {name!r}: create it with `dms load --create {name} FILE ...`"
            )
        table = _define_table(deployment, conn, name, data, create)
        register_table(conn, table)
        conn.commit()
        return get_table(conn, name), True


def _define_table(
    deployment: Deployment, conn: sa.Connection, name: str, data: pa.Table, options: TableOptions
) -> CatalogTable:
    columns = []
    for column_field in data.schema:
        try:
            datatype = column_type_name(column_field.type)
        except CatalogError as exc:
            raise LoadError(f"column {column_field.name!r}: {exc}") from None
        columns.append(Column(column_field.name, datatype, **_described(column_field, options)))
    by_lower = {c.name.lower(): c.name for c in columns}
    _check_described(options, set(by_lower.values()))
    columns += _region_representation(columns, options.regions)

    def pick(option: str | None, what: str, required: bool) -> str | None:
        if option is None:
            if required:
                raise LoadError(f"a {options.role} table needs --{what} naming a column of the file")
            return None
        if option.lower() not in by_lower:
            raise LoadError(
                f"--{what} {option!r} is not a column of the file; it has {sorted(by_lower.values())}"
            )
        return by_lower[option.lower()]

    if options.role not in ("director", "child", "replicated", "match"):
        raise LoadError(f"role {options.role!r} is not one of director, child, replicated, match")
    director = options.role == "director"
    child = options.role == "child"
    if options.role == "match":
        from dms.loaders.match import define_match

        return define_match(conn, name, tuple(columns), options, pick)
    storage = options.storage or deployment.shards()[0].kind
    if storage not in {s.kind for s in deployment.shards()}:
        raise LoadError(f"no {storage} shard in this deployment; add one with `dms shard add`")
    director_table = None
    chunk_order: int | None = options.chunk_order if options.role != "replicated" else None
    max_rows = options.max_chunk_rows if director else None
    if child:
        if options.director is None:
            raise LoadError("a child table needs --director naming its director table")
        parent = get_table(conn, qualified_name(options.director))
        if parent.role != "director":
            raise LoadError(f"{parent.name} is a {parent.role} table, not a director")
        director_table, chunk_order, storage = parent.name, parent.chunk_order, parent.storage_kind
    like_table = None
    if options.like is not None:
        like = get_table(conn, qualified_name(options.like))
        if not like.partitioned:
            raise LoadError(f"--like {options.like!r}: {like.name} is replicated and has no chunk layout")
        chunk_order, max_rows = like.chunk_order, None  # the layout is copied at the first load
        like_table = like.name
    shard_count = sum(1 for s in deployment.shards() if s.kind == storage)
    replicas = options.replicas
    if child:
        replicas = parent.replicas
    if not 1 <= replicas <= max(1, shard_count):
        raise LoadError(
            f"--replicas {replicas} needs as many {storage} shards; this deployment has {shard_count}"
        )
    return CatalogTable(
        name=name,
        role=options.role,
        replicas=replicas if options.role != "replicated" else 1,
        columns=tuple(columns),
        storage_kind=storage,
        chunk_order=chunk_order,
        max_chunk_rows=max_rows,
        overlap_arcsec=options.overlap_arcsec if director else 0.0,
        id_column=pick(options.id, "id", director),
        ra_column=pick(options.ra, "ra", director),
        dec_column=pick(options.dec, "dec", director),
        director_table=director_table,
        director_key_column=pick(options.director_key, "director-key", child),
        description=options.description,
        like_table=like_table,
    )


def _region_representation(columns: list[Column], wanted: list[str]) -> list[Column]:
    """The representation columns of the --region columns (dms.loaders.catalog_regions), after checking
    that each names a text column of the file whose representation names are free."""
    by_lower = {c.name.lower(): c for c in columns}
    added: list[Column] = []
    for name in dict.fromkeys(wanted):
        column = by_lower.get(name.lower())
        if column is None:
            raise LoadError(
                f"--region {name!r} is not a column of the file; it has {sorted(c.name for c in columns)}"
            )
        if column.datatype != "string":
            raise LoadError(
                f"--region {column.name!r} is a {column.datatype} column; a region column holds STC-S text "
                "(e.g. 'Polygon ICRS 10 20 11 20 11 21')"
            )
        for companion in representation_columns(column):
            if companion.name.lower() in by_lower:
                raise LoadError(
                    f"--region {column.name!r}: the file already has a column {companion.name!r}, the name "
                    "the load gives the region's representation; rename that column"
                )
            added.append(companion)
    return added


def _described(column_field: pa.Field, options: TableOptions) -> dict[str, str | None]:
    """A new column's unit and UCD: --unit / --ucd, else what the file says (FITS TUNIT/TUCD, VOTable
    unit/ucd, Parquet field metadata ``unit``/``ucd``)."""
    metadata = column_field.metadata or {}
    unit = options.units.get(column_field.name) or metadata.get(b"unit", b"").decode() or None
    ucd = options.ucds.get(column_field.name) or metadata.get(b"ucd", b"").decode() or None
    return {"unit": unit, "ucd": ucd}


def _check_described(options: TableOptions, columns: set[str]) -> None:
    for option, values in (("--unit", options.units), ("--ucd", options.ucds)):
        unknown = sorted(set(values) - columns)
        if unknown:
            raise LoadError(f"{option} names {unknown}, not columns of the file; it has {sorted(columns)}")
    if not options.units:
        return
    from astropy import units  # (imported only when there are units to check: it takes a second)

    for name, unit in options.units.items():
        try:
            units.Unit(unit, format="vounit", parse_strict="raise")
        except ValueError as exc:
            raise LoadError(f"--unit {name}={unit}: not a VOUnit ({exc})") from None


def _begin_load(
    deployment: Deployment, table: CatalogTable, checksum: str, paths: list[Path]
) -> tuple[int, str]:
    with deployment.connect() as conn:
        row = conn.execute(
            sa.text("SELECT load_id, state FROM dms.catalog_load WHERE table_name = :t AND checksum = :c"),
            {"t": table.name, "c": checksum},
        ).first()
        if row is not None:
            if row.state == "running":
                log.info("resuming load %s of %s", row.load_id, table.name)
            return int(row.load_id), str(row.state)
        load_id = conn.execute(
            sa.text(
                "INSERT INTO dms.catalog_load (table_name, checksum, sources, state, started_at) "
                "VALUES (:t, :c, :s, 'running', now()) RETURNING load_id"
            ),
            {"t": table.name, "c": checksum, "s": "\n".join(str(p) for p in paths)},
        ).scalar_one()
        conn.commit()
        return int(load_id), "running"


def _discard_stale_loads(deployment: Deployment, table: CatalogTable, *, keep: int) -> None:
    """Remove the loads of the table that are still 'running' although this process holds the table's load
    lock: their process died (a kill, a lost machine), and their rows must not stay on the shards."""
    with deployment.connect() as conn:
        stale = conn.execute(
            sa.text(
                "SELECT load_id FROM dms.catalog_load WHERE table_name = :t AND state = 'running' "
                "AND load_id <> :k ORDER BY load_id"
            ),
            {"t": table.name, "k": keep},
        ).scalars()
        stale_ids = [int(i) for i in stale]
    for load_id in stale_ids:
        log.warning("removing the rows of load %s of %s, which never committed", load_id, table.name)
        _discard_load(deployment, table, load_id)


def _discard_load(deployment: Deployment, table: CatalogTable, load_id: int) -> None:
    """Delete what an uncommitted load wrote on the shards, then its registry row (in that order: a row left
    behind by a failure here is found stale by the next load, whereas shard rows without a load row would
    never be found). A committed load is never touched."""
    try:
        with deployment.connect() as conn:
            state = conn.execute(
                sa.text("SELECT state FROM dms.catalog_load WHERE load_id = :l"), {"l": load_id}
            ).scalar_one_or_none()
        if state != "running":
            return
        failures = []
        for store in _stores(deployment, table):
            try:
                store.discard_load(table, load_id)
            except Exception as exc:  # clean the other shards all the same
                failures.append(f"shard {store.name}: {str(exc).splitlines()[0]}")
            finally:
                store.close()
        if failures:
            raise LoadError("; ".join(failures))
        _index_path(deployment, table, load_id).unlink(missing_ok=True)
        with deployment.connect() as conn:
            conn.execute(
                sa.text("DELETE FROM dms.catalog_load WHERE load_id = :l AND state = 'running'"),
                {"l": load_id},
            )
            conn.commit()
    except Exception as exc:  # the load's own error matters more; the next load retries the clean-up
        log.warning("could not remove the rows of failed load %s of %s: %s", load_id, table.name, exc)


def _load(
    deployment: Deployment, table: CatalogTable, load_id: int, source: LoadSource, bar: tqdm, orphans: str
) -> LoadResult:
    """Stream the rows: each batch is partitioned (chunk ids computed column-wise) and gathered by chunk per
    shard; then the index is written (a director's merged with its earlier loads'), the shards store their
    chunks (one at a time each, the shards at the same time) and the load commits."""
    stores = _stores(deployment, table)
    spool_root = deployment.data_dir / "catalog" / "_spool"
    spool_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=spool_root, prefix=f"load{load_id}-") as spool_dir:
        positions = PositionSpool(Path(spool_dir) / "_positions")
        with deployment.connect() as conn:
            layout, index_files = _layout_and_index(deployment, conn, table, source, positions)
        placer = _Placer(deployment, table, layout, index_files, orphans)
        known = iter(positions)
        budget = SPOOL_MEMORY_BYTES // len(stores)
        spools = [ChunkSpool(Path(spool_dir) / s.name, table.partitioned, budget) for s in stores]
        index = IndexSpool(Path(spool_dir) / "_index", unique=table.role == "director")
        rows = overlap = orphan_count = 0
        for batch in source.batches(table):
            h29 = next(known, None)
            if h29 is not None and len(h29) != batch.num_rows:  # the passes' batches differ: compute afresh
                known, h29 = iter(()), None
            placed = placer.place(batch, h29)
            rows, orphan_count = rows + placed.row_count, orphan_count + placed.orphans
            overlap += int(pc.sum(placed.rows["_overlap"]).as_py() or 0) if table.partitioned else 0
            _route(table, placed.rows, spools)
            index.add(placed.index)
            bar.update(batch.num_rows)
        index_path, merged = _write_index(deployment, table, load_id, index)
        files = _write_shards(table, load_id, stores, spools)
    _commit(deployment, table, load_id, files, index_path, rows, supersedes=merged)
    _remove_superseded_indexes(deployment, table, keep=merged)
    chunk_count = len({(f.chunk_order, f.chunk_id) for fs in files.values() for f in fs})
    return LoadResult(
        table.name, load_id, rows, overlap, chunk_count, orphans=orphan_count, orphan_policy=orphans
    )


def _write_index(
    deployment: Deployment, table: CatalogTable, load_id: int, index: IndexSpool
) -> tuple[str | None, list[str]]:
    """The load's director index file (relative path, or None when it adds no index rows) and the index
    files it replaces. A director's new ids are merged with its committed index into one file, so a
    lookup stays one row group per id however many loads the table has, and an id already loaded is
    refused here, before any row reaches a shard. (A child's index of orphans stays one file per load.)"""
    earlier: list[str] = []
    if table.role == "director":
        with deployment.connect() as conn:
            earlier = _committed_index_paths(conn, table.name)
    path = _index_path(deployment, table, load_id)
    merge_with = [deployment.data_dir / p for p in earlier]
    if not index.write(path, table.id_column or "id", merge_with, table.name):
        return None, []
    return str(_index_relative(table, load_id)), earlier


def _committed_index_paths(conn: sa.Connection, table: str) -> list[str]:
    paths = conn.execute(
        sa.text(
            "SELECT index_path FROM dms.catalog_load WHERE table_name = :t AND state = 'committed' "
            "AND index_path IS NOT NULL ORDER BY load_id"
        ),
        {"t": table},
    ).scalars()
    return [str(p) for p in paths]


def _remove_superseded_indexes(deployment: Deployment, table: CatalogTable, keep: list[str]) -> None:
    """Delete the index files no committed load names any more, except those this load replaced (`keep`):
    a query that took its registry snapshot just before the commit may still open them. The table's load
    lock is held, so no other load is writing an index here."""
    directory = _index_path(deployment, table, 0).parent
    with deployment.connect() as conn:
        named = set(_committed_index_paths(conn, table.name))
    spared = {deployment.data_dir / p for p in named | set(keep)}
    for path in directory.glob("load*.parquet"):
        if path not in spared:
            path.unlink(missing_ok=True)


def _write_shards(
    table: CatalogTable, load_id: int, stores: list[ShardBackend], spools: list[ChunkSpool]
) -> dict[str, list[ChunkFile]]:
    """Each shard's chunks stored, the shards at the same time: each writes through its own connection or
    files, so one shard's COPY and index builds overlap another's, and the Python side (Parquet encoding,
    binary COPY buffers) mostly runs without the GIL."""

    def write(store: ShardBackend, spool: ChunkSpool) -> list[ChunkFile]:
        try:
            chunks = spool.chunks() if spool.rows else iter([(*REPLICATED_CHUNK, _empty_rows(table))])
            return store.write_chunks(table, load_id, chunks)
        finally:
            store.close()

    jobs = [
        (store, spool)
        for store, spool in zip(stores, spools, strict=True)
        if not (table.partitioned and spool.rows == 0)
    ]
    if len(jobs) <= 1:
        return {store.name: write(store, spool) for store, spool in jobs}
    with ThreadPoolExecutor(len(jobs), thread_name_prefix="dms-load-shard") as pool:
        futures = {store.name: pool.submit(write, store, spool) for store, spool in jobs}
        return {name: future.result() for name, future in futures.items()}


def _route(table: CatalogTable, rows: pa.Table, spools: list[ChunkSpool]) -> None:
    """Each shard's copies of the rows: a partitioned table's chunks go to their primary shard and the
    replicas after it (see replica_offset); a replicated table's rows go to every shard. The rows are put
    in chunk and `_healpix_29` order once (one `take`), and each chunk's slice is handed to the shards that
    hold it (a chunk from one batch needs no sorting again)."""
    if not table.partitioned:
        for spool in spools:
            spool.add(-1, rows)
        return
    chunk = rows["_chunk"].to_numpy()
    order = np.lexsort((rows["_healpix_29"].to_numpy(), chunk))  # a chunk's rows as its shards store them
    rows, chunk = rows.take(pa.array(order)), chunk[order]
    starts = np.flatnonzero(np.r_[True, chunk[1:] != chunk[:-1]])
    ends = np.r_[starts[1:], len(chunk)]
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        piece = rows.slice(start, end - start)
        for shard_index, spool in enumerate(spools):
            if replica_offset(int(chunk[start]), shard_index, len(spools)) < table.replicas:
                spool.add(int(chunk[start]), piece)


def _empty_rows(table: CatalogTable) -> pa.Table:
    """No rows of a replicated table (a load of empty files still creates the table on every shard)."""
    return pa.schema([pa.field(c.name, c.arrow_type) for c in table.columns]).empty_table()


def _layout_and_index(
    deployment: Deployment,
    conn: sa.Connection,
    table: CatalogTable,
    source: RowSource,
    positions: PositionSpool,
) -> tuple[ChunkLayout | None, list[Path]]:
    """The chunk layout the load places rows in (a first director load counts its positions first, reading
    only its position columns, and keeps them in `positions`) and the director index files a child load
    places its rows by."""
    if not table.partitioned:
        return None, []
    assert table.chunk_order is not None
    origin = table.like_table or table.director_table or table.name
    existing = registered_chunks(conn, origin) or registered_chunks(conn, table.name)
    layout = ChunkLayout.from_chunks(table.chunk_order, existing)
    if not existing and table.role == "director":
        assert table.ra_column is not None and table.dec_column is not None
        counts = SkyCounts(finest_chunk_order(table.overlap_arcsec))
        for batch in source.batches(table, columns=[table.ra_column, table.dec_column]):
            h29 = _positions(table, batch)
            counts.add(h29)
            positions.add(h29)
        layout = counts.layout(table.chunk_order, table.max_chunk_rows, table.overlap_arcsec)
    index_files: list[Path] = []
    if table.role == "child":
        assert table.director_table is not None
        index_files = committed_index_files(deployment, conn, table.director_table)
    return layout, index_files


def _positions(table: CatalogTable, batch: pa.Table) -> np.ndarray:
    return healpix_29(
        batch[table.ra_column].to_numpy(zero_copy_only=False),
        batch[table.dec_column].to_numpy(zero_copy_only=False),
    )


def committed_index_files(deployment: Deployment, conn: sa.Connection, table: str) -> list[Path]:
    return [deployment.data_dir / p for p in _committed_index_paths(conn, table)]


@dataclass
class Partitioned:
    """A batch's rows as the shards store them, the director index rows it adds and what was counted."""

    rows: pa.Table
    index: pa.Table | None
    row_count: int  # the table's rows (not overlap copies; skipped orphans excluded)
    orphans: int = 0  # child rows without a director row (placed by position or skipped)


class _Placer:
    """Partitions a load's batches: `_healpix_29`, chunk and overlap columns, and the index rows."""

    def __init__(
        self,
        deployment: Deployment,
        table: CatalogTable,
        layout: ChunkLayout | None,
        index_files: list[Path],
        orphans: str,
    ) -> None:
        self.deployment, self.table, self.layout, self.orphans = deployment, table, layout, orphans
        self.director_index = director_index(table, index_files) if table.role == "child" else None

    def place(self, data: pa.Table, known_h29: np.ndarray | None = None) -> Partitioned:
        """A batch partitioned; `known_h29`: its positions if the layout pass computed them already."""
        table, layout = self.table, self.layout
        if layout is None:
            return Partitioned(data, None, data.num_rows)
        if table.role == "match":
            from dms.loaders.match import match_rows

            rows, _, match_index = match_rows(self.deployment, table, data)
            return Partitioned(rows, match_index, data.num_rows)
        index = None
        orphan_count = 0
        if table.role == "child":
            assert self.director_index is not None
            placement = place_children(table, data, self.director_index, layout, self.orphans)
            data, h29, chunk = placement.rows, placement.healpix_29, placement.chunk
            index, orphan_count = placement.orphan_index, placement.orphans
        else:
            h29 = known_h29 if known_h29 is not None else _positions(table, data)
            orders, pixels = layout.assign(h29)
            chunk = nuniq(orders, pixels)
        rows = data.append_column("_healpix_29", pa.array(h29)).append_column("_chunk", pa.array(chunk))
        rows = rows.append_column("_overlap", pa.array(np.zeros(len(h29), bool)))
        if table.role == "director":
            assert table.id_column is not None
            with self.deployment.connect() as conn:
                refuse_placed_orphans(self.deployment, conn, table, data[table.id_column])
            index = _director_index(table, data, h29, chunk)
            if table.overlap_arcsec > 0:
                rows = _with_overlap(table, rows, h29, chunk, layout)
        return Partitioned(rows, index, data.num_rows, orphan_count)


def _director_index(table: CatalogTable, data: pa.Table, h29: np.ndarray, chunk: np.ndarray) -> pa.Table:
    """A batch's director index rows (sorted and checked for duplicates when the load's index is written)."""
    assert table.id_column is not None
    ids = data[table.id_column]
    if ids.null_count:
        raise LoadError(f"{ids.null_count} rows have no {table.id_column}; a director's id is required")
    return pa.table({"id": ids.cast(pa.int64()), "chunk": chunk, "healpix_29": h29})


def _with_overlap(
    table: CatalogTable, rows: pa.Table, h29: np.ndarray, chunk: np.ndarray, layout: ChunkLayout
) -> pa.Table:
    idx, o_orders, o_pixels = overlap_rows(h29, chunk, layout, table.overlap_arcsec)
    extra = rows.take(pa.array(idx)).set_column(
        rows.schema.get_field_index("_chunk"), "_chunk", pa.array(nuniq(o_orders, o_pixels))
    )
    extra = extra.set_column(
        rows.schema.get_field_index("_overlap"), "_overlap", pa.array(np.ones(len(idx), bool))
    )
    return pa.concat_tables([rows, extra])


def _stores(deployment: Deployment, table: CatalogTable) -> list[ShardBackend]:
    stores = [s for s in deployment.shards() if s.kind == table.storage_kind]
    if not stores:
        raise LoadError(f"no {table.storage_kind} shard in this deployment for {table.name}")
    return sorted(stores, key=lambda s: s.name)


def _index_path(deployment: Deployment, table: CatalogTable, load_id: int) -> Path:
    return deployment.data_dir / _index_relative(table, load_id)


def _index_relative(table: CatalogTable, load_id: int) -> Path:
    return Path("catalog") / "_index" / table.storage_schema / table.storage_table / f"load{load_id}.parquet"
