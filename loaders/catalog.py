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
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa
from tqdm import tqdm

from dms.deployment import Deployment
from dms.loaders.catalog_commit import commit_load as _commit
from dms.loaders.catalog_commit import replica_offset
from dms.loaders.catalog_define import check_same_definition
from dms.loaders.catalog_drop import load_lock_key, remove_table, shards_holding
from dms.loaders.catalog_errors import LoadError
from dms.loaders.orphans import DEFAULT_ORPHANS, check_policy, place_children, refuse_placed_orphans
from dms.loaders.partition import ChunkLayout, adaptive_layout, healpix_29, nuniq, overlap_rows
from dms.loaders.readers import file_checksum, read_catalog_file
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
from dms.shards import ChunkFile, ShardBackend

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
    bar = tqdm(total=4 + len(paths), desc=f"load {name}", unit="step", disable=not progress, leave=False)
    engine = deployment.engine()
    with engine.connect() as lock_conn:
        lock_conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _lock_key(name)})
        created: CatalogTable | None = None
        foreign: frozenset[str] = frozenset()
        try:
            data = _read_all(paths, bar)
            table, is_new = _ensure_table(deployment, name, data, create)
            if is_new:  # whatever a shard held under this name before is not this table's: it stays
                created, foreign = table, frozenset(shards_holding(deployment, table))
            result = _load_into(deployment, table, paths, data, bar, orphans)
            result.seconds = time.perf_counter() - started
            return result
        except Exception:  # (an interrupted --create resumes instead, when run again)
            if created is not None:  # a failed --create leaves no table behind
                _remove_created(deployment, created, foreign)
            raise
        finally:
            lock_conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _lock_key(name)})
            lock_conn.commit()
            bar.close()


def _load_into(
    deployment: Deployment, table: CatalogTable, paths: list[Path], data: pa.Table, bar: tqdm, orphans: str
) -> LoadResult:
    data = _conform(table, data)
    checksum = file_checksum(paths, json.dumps([table.name, table.role], sort_keys=True))
    load_id, state = _begin_load(deployment, table, checksum, paths)
    if state == "committed":
        return LoadResult(table.name, load_id, 0, skipped=True)
    _discard_stale_loads(deployment, table, keep=load_id)
    try:
        return _load(deployment, table, load_id, data, bar, orphans)
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


def _read_all(paths: list[Path], bar: tqdm) -> pa.Table:
    if not paths:
        raise LoadError("no files to load")
    tables = []
    for path in paths:
        tables.append(read_catalog_file(path))
        bar.update()
    first = tables[0]
    for path, table in zip(paths[1:], tables[1:], strict=True):
        if [n.lower() for n in table.column_names] != [n.lower() for n in first.column_names]:
            raise LoadError(
                f"{path} has columns {table.column_names}, unlike {paths[0]} ({first.column_names})"
            )
    return pa.concat_tables(
        [t.rename_columns(first.column_names) for t in tables], promote_options="permissive"
    )


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


def _described(column_field: pa.Field, options: TableOptions) -> dict[str, str | None]:
    """A new column's unit and UCD: --unit / --ucd, else what the file says (FITS TUNIT/TUCD, VOTable
    unit/ucd, Parquet field metadata ``unit``/``ucd``)."""
    metadata = column_field.metadata or {}
    unit = options.units.get(column_field.name) or metadata.get(b"unit", b"").decode() or None
    ucd = options.ucds.get(column_field.name) or metadata.get(b"ucd", b"").decode() or None
    return {"unit": unit, "ucd": ucd}


def _check_described(options: TableOptions, columns: set[str]) -> None:
    from astropy import units

    for option, values in (("--unit", options.units), ("--ucd", options.ucds)):
        unknown = sorted(set(values) - columns)
        if unknown:
            raise LoadError(f"{option} names {unknown}, not columns of the file; it has {sorted(columns)}")
    for name, unit in options.units.items():
        try:
            units.Unit(unit, format="vounit", parse_strict="raise")
        except ValueError as exc:
            raise LoadError(f"--unit {name}={unit}: not a VOUnit ({exc})") from None


def _conform(table: CatalogTable, data: pa.Table) -> pa.Table:
    """The file's columns in the table's order and types, or an error naming what does not fit."""
    by_lower = {n.lower(): n for n in data.column_names}
    wanted = {c.name.lower() for c in table.columns}
    extra = sorted(n for n in data.column_names if n.lower() not in wanted)
    missing = sorted(c.name for c in table.columns if c.name.lower() not in by_lower)
    if extra or missing:
        raise LoadError(
            f"the file's columns do not match table {table.name}: "
            + "; ".join(
                p
                for p in (
                    f"unknown columns {extra}" if extra else "",
                    f"missing columns {missing}" if missing else "",
                )
                if p
            )
        )
    arrays = []
    for column in table.columns:
        values = data[by_lower[column.name.lower()]]
        try:
            arrays.append(values.cast(column.arrow_type, safe=True))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise LoadError(
                f"column {column.name!r} of type {values.type} cannot be stored as {column.datatype}: "
                f"{str(exc).splitlines()[0]}"
            ) from None
    return pa.Table.from_arrays(arrays, names=[c.name for c in table.columns])


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
    deployment: Deployment, table: CatalogTable, load_id: int, data: pa.Table, bar: tqdm, orphans: str
) -> LoadResult:
    with deployment.connect() as conn:
        layout, index_files = _layout_and_index(deployment, conn, table, data)
        if table.role == "director":
            assert table.id_column is not None
            refuse_placed_orphans(deployment, conn, table, data[table.id_column])
    placed = _partition(deployment, table, data, layout, index_files, orphans)
    rows, index = placed.rows, placed.index
    bar.update()
    shards = _stores(deployment, table)
    chunk = rows["_chunk"].to_numpy() if table.partitioned else np.zeros(0, np.int64)
    files: dict[str, list[ChunkFile]] = {}
    for shard_index, store in enumerate(shards):  # replicated tables: every shard gets every row
        part = rows
        if table.partitioned and len(shards) > 1:
            part = rows.filter(pa.array(replica_offset(chunk, shard_index, len(shards)) < table.replicas))
        if table.partitioned and part.num_rows == 0:
            continue
        files[store.name] = store.write_load(table, load_id, part)
        store.close()
    bar.update()
    index_path = _write_index(deployment, table, load_id, index) if index is not None else None
    _commit(deployment, table, load_id, files, index_path, placed.row_count)
    bar.update()
    overlap = int(pc.sum(rows["_overlap"]).as_py() or 0) if table.partitioned else 0
    chunk_count = len({(f.chunk_order, f.chunk_id) for fs in files.values() for f in fs})
    return LoadResult(
        table.name,
        load_id,
        placed.row_count,
        overlap,
        chunk_count,
        orphans=placed.orphans,
        orphan_policy=orphans,
    )


def _layout_and_index(
    deployment: Deployment, conn: sa.Connection, table: CatalogTable, data: pa.Table
) -> tuple[ChunkLayout | None, list[Path]]:
    if not table.partitioned:
        return None, []
    assert table.chunk_order is not None
    source = table.like_table or table.director_table or table.name
    existing = registered_chunks(conn, source) or registered_chunks(conn, table.name)
    layout = ChunkLayout.from_chunks(table.chunk_order, existing)
    if not existing and table.role == "director":
        h29 = healpix_29(
            data[table.ra_column].to_numpy(zero_copy_only=False),
            data[table.dec_column].to_numpy(zero_copy_only=False),
        )
        layout = adaptive_layout(h29, table.chunk_order, table.max_chunk_rows, table.overlap_arcsec)
    index_files: list[Path] = []
    if table.role == "child":
        assert table.director_table is not None
        index_files = committed_index_files(deployment, conn, table.director_table)
    return layout, index_files


def committed_index_files(deployment: Deployment, conn: sa.Connection, table: str) -> list[Path]:
    paths = conn.execute(
        sa.text(
            "SELECT index_path FROM dms.catalog_load WHERE table_name = :t AND state = 'committed' "
            "AND index_path IS NOT NULL ORDER BY load_id"
        ),
        {"t": table},
    ).scalars()
    return [deployment.data_dir / p for p in paths]


@dataclass
class Partitioned:
    """A load's rows as the shards store them, the director index it adds and what was counted."""

    rows: pa.Table
    index: pa.Table | None
    row_count: int  # the table's rows (not overlap copies; skipped orphans excluded)
    orphans: int = 0  # child rows without a director row (placed by position or skipped)


def _partition(
    deployment: Deployment,
    table: CatalogTable,
    data: pa.Table,
    layout: ChunkLayout | None,
    index_files: list[Path],
    orphans: str,
) -> Partitioned:
    if layout is None:
        return Partitioned(data, None, data.num_rows)
    if table.role == "match":
        from dms.loaders.match import match_rows

        rows, _, match_index = match_rows(deployment, table, data)
        return Partitioned(rows, match_index, data.num_rows)
    index = None
    orphan_count = 0
    if table.role == "child":
        placement = place_children(table, data, index_files, layout, orphans)
        data, h29, chunk = placement.rows, placement.healpix_29, placement.chunk
        index, orphan_count = placement.orphan_index, placement.orphans
    else:
        h29 = healpix_29(
            data[table.ra_column].to_numpy(zero_copy_only=False),
            data[table.dec_column].to_numpy(zero_copy_only=False),
        )
        orders, pixels = layout.assign(h29)
        chunk = nuniq(orders, pixels)
    rows = data.append_column("_healpix_29", pa.array(h29)).append_column("_chunk", pa.array(chunk))
    rows = rows.append_column("_overlap", pa.array(np.zeros(len(h29), bool)))
    if table.role == "director":
        index = _director_index(table, data, h29, chunk)
        if table.overlap_arcsec > 0:
            rows = _with_overlap(table, rows, h29, chunk, layout)
    rows = rows.sort_by([("_chunk", "ascending"), ("_healpix_29", "ascending")])
    return Partitioned(rows, index, data.num_rows, orphan_count)


def _director_index(table: CatalogTable, data: pa.Table, h29: np.ndarray, chunk: np.ndarray) -> pa.Table:
    assert table.id_column is not None
    ids = data[table.id_column]
    if ids.null_count:
        raise LoadError(f"{ids.null_count} rows have no {table.id_column}; a director's id is required")
    index = pa.table({"id": ids.cast(pa.int64()), "chunk": chunk, "healpix_29": h29}).sort_by("id")
    duplicates = pc.sum(pc.equal(index["id"][1:], index["id"][:-1])).as_py() if len(index) > 1 else 0
    if duplicates:
        raise LoadError(f"{duplicates} duplicate values of {table.id_column} in the files")
    return index


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


def _write_index(deployment: Deployment, table: CatalogTable, load_id: int, index: pa.Table) -> str:
    path = _index_path(deployment, table, load_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(index, path, row_group_size=8192, compression="lz4")
    return str(_index_relative(table, load_id))
