"""The Alert Production Database on PostgreSQL, with the API of lsst-dax-apdb in Python's spelling.

Code written for Rubin's `Apdb` (getDiaObjects, getDiaSources, getDiaForcedSources, store) ports by
renaming the methods: `get_dia_objects(region)`, `get_dia_sources(region, object_ids, visit_time)`,
`get_dia_forced_sources(region, object_ids, visit_time)`,
`store(visit_time, objects, sources, forced_sources)`.

- **Versions.** Each store of a DiaObject is a new version valid from the visit's time; the previous version's
  `validityEndMjdTai` is set to that time. The current versions are read through a partial index
  (`validityEndMjdTai IS NULL`) and mirrored, narrow, in DiaObjectLast (as dax_apdb's "last_object_table").
- **Space.** Every row carries `_healpix_29`; a region read is a set of index range scans over the region's
  HEALPix cover, then the exact test in the database (scisql functions), never a table scan.
- **Time.** DiaSource and DiaForcedSource reads return the history window before the visit
  (`read_sources_months`, `read_forced_sources_months`, 12 months of 30 days by default).
- **Atomicity.** One store is one transaction: a visit is stored whole or not at all; a repeated store of the
  same sources or the same object versions is refused with ApdbConflictError and changes nothing.
- **Transfer.** Rows move by COPY in both directions, converted by Arrow (no per-row Python).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
from astropy.time import Time
from psycopg import sql

from dms.loaders.partition import PartitionError, healpix_29
from dms.services.apdb.config import ApdbConfig
from dms.services.apdb.copyio import copy_in, copy_out
from dms.services.apdb.errors import ApdbConflictError, ApdbError, ApdbInputError
from dms.services.apdb.regions import Region
from dms.services.apdb.tables import HEALPIX_COLUMN, ApdbTable, apdb_table

if TYPE_CHECKING:
    from dms.deployment import Deployment

DAYS_PER_MONTH = 30.0
SEEK_BY_INDEX = "SET LOCAL enable_seqscan = off"
LAST_COLUMNS = apdb_table("DiaObjectLast").columns


@dataclass(frozen=True)
class StoreSummary:
    """What one store wrote."""

    visit_time_mjd_tai: float
    objects: int
    objects_superseded: int
    sources: int
    forced_sources: int


class Apdb:
    """An APDB in the `apdb` schema of a PostgreSQL database (the control database by default)."""

    def __init__(self, conninfo: str, config: ApdbConfig | None = None) -> None:
        self.config = config or ApdbConfig()
        self._conninfo = conninfo
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_deployment(cls, deployment: Deployment, config: ApdbConfig | None = None) -> Apdb:
        url = deployment.control_url().set(drivername="postgresql")
        return cls(url.render_as_string(hide_password=False), config)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Apdb:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reads ---------------------------------------------------------------------------------------------

    def get_dia_objects(self, region: Region) -> pd.DataFrame:
        """The latest version of every DiaObject whose position lies in `region`."""
        return self._read_region(apdb_table("DiaObject"), region, latest_in(region))

    def get_dia_sources(
        self, region: Region, object_ids: Iterable[int] | None, visit_time: Time
    ) -> pd.DataFrame | None:
        """DiaSources of the history window before `visit_time`: of `object_ids` when given (the region is
        then not used, as in dax_apdb), else every DiaSource in `region`. None when the window is 0 months."""
        return self._read_history(
            "DiaSource", self.config.read_sources_months, region, object_ids, visit_time
        )

    def get_dia_forced_sources(
        self, region: Region, object_ids: Iterable[int] | None, visit_time: Time
    ) -> pd.DataFrame | None:
        """DiaForcedSources of the history window before `visit_time`, chosen as get_dia_sources chooses."""
        return self._read_history(
            "DiaForcedSource", self.config.read_forced_sources_months, region, object_ids, visit_time
        )

    def contains_visit_detector(self, visit: int, detector: int) -> bool:
        """Whether sources or forced sources of this visit and detector are stored (a visit already done)."""
        query = sql.SQL(
            "SELECT EXISTS (SELECT 1 FROM {s} WHERE visit = %(v)s AND detector = %(d)s) "
            "OR EXISTS (SELECT 1 FROM {f} WHERE visit = %(v)s AND detector = %(d)s)"
        ).format(s=self._table("DiaSource"), f=self._table("DiaForcedSource"))
        with self.cursor() as cur:
            row = cur.execute(query, {"v": int(visit), "d": int(detector)}).fetchone()
        return bool(row and row[0])

    def count_unassociated_objects(self) -> int:
        """Current DiaObjects seen in one DiaSource only (dax_apdb's countUnassociatedObjects)."""
        query = sql.SQL('SELECT count(*) FROM {} WHERE "nDiaSources" = 1').format(
            self._table("DiaObjectLast")
        )
        with self.cursor() as cur:
            row = cur.execute(query).fetchone()
        return int(row[0]) if row else 0

    def _read_region(self, table: ApdbTable, region: Region, where: sql.Composable) -> pd.DataFrame:
        query = region_select(self._table(table.name), table, region, where)
        if query is None:
            return _frame(table.schema.empty_table())
        with self.cursor() as cur:
            return _frame(copy_out(cur, query, table.schema))

    def _read_history(
        self,
        name: str,
        months: int,
        region: Region,
        object_ids: Iterable[int] | None,
        visit_time: Time,
    ) -> pd.DataFrame | None:
        if months == 0:
            return None
        table = apdb_table(name)
        start = _tai_mjd(visit_time) - months * DAYS_PER_MONTH
        window = sql.SQL('t."midpointMjdTai" > {}').format(sql.Literal(start))
        if object_ids is None:
            return self._read_region(table, region, sql.SQL("{} AND {}").format(window, _contains(region)))
        ids = _ids(object_ids, self.config.max_ids_per_read)
        if not ids:
            return _frame(table.schema.empty_table())
        query = sql.SQL(
            'SELECT {cols} FROM {table} t WHERE t."diaObjectId" = ANY({ids}::bigint[]) AND {w}'
        ).format(cols=_columns(table), table=self._table(name), ids=_bigint_array(ids), w=window)
        with self.cursor() as cur, cur.connection.transaction():
            # A visit's ids are a large share of a young table, where the planner's estimate favours reading
            # the whole table; per-visit cost must not grow with the history, so the index is always used.
            cur.execute(SEEK_BY_INDEX)
            return _frame(copy_out(cur, query, table.schema))

    # -- writes --------------------------------------------------------------------------------------------

    def store(
        self,
        visit_time: Time,
        objects: pd.DataFrame,
        sources: pd.DataFrame | None = None,
        forced_sources: pd.DataFrame | None = None,
    ) -> StoreSummary:
        """Store one visit: new versions of `objects` valid from `visit_time`, and the visit's sources and
        forced sources, in one transaction (all or nothing)."""
        mjd = _tai_mjd(visit_time)
        new_objects = _prepare(
            apdb_table("DiaObject"), objects, {"validityStartMjdTai": mjd, "validityEndMjdTai": None}
        )
        _refuse_repeats(new_objects, "diaObjectId", "objects")
        last = new_objects.select([c for c in LAST_COLUMNS if c in new_objects.column_names])
        new_sources = _prepare(apdb_table("DiaSource"), sources) if sources is not None else None
        new_forced = (
            _prepare(apdb_table("DiaForcedSource"), forced_sources) if forced_sources is not None else None
        )
        ids = new_objects.column("diaObjectId").to_pylist()
        with self.cursor() as cur:
            try:
                with cur.connection.transaction():
                    cur.execute(SEEK_BY_INDEX)
                    superseded = self._supersede(cur, ids, mjd)
                    copy_in(cur, self._table("DiaObject"), new_objects)
                    copy_in(cur, self._table("DiaObjectLast"), last)
                    if new_sources is not None:
                        copy_in(cur, self._table("DiaSource"), new_sources)
                    if new_forced is not None:
                        copy_in(cur, self._table("DiaForcedSource"), new_forced)
            except psycopg.errors.UniqueViolation as exc:
                detail = exc.diag.message_detail or str(exc)
                raise ApdbConflictError(
                    f"visit at MJD(TAI) {mjd}: {detail} (table {exc.diag.table_name}); nothing was stored"
                ) from None
            except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
                raise ApdbInputError(
                    f"visit at MJD(TAI) {mjd}: {exc.diag.message_primary}; nothing stored"
                ) from None
        return StoreSummary(
            mjd,
            new_objects.num_rows,
            superseded,
            0 if new_sources is None else new_sources.num_rows,
            0 if new_forced is None else new_forced.num_rows,
        )

    def _supersede(self, cur: psycopg.Cursor[Any], ids: list[int], mjd: float) -> int:
        """Close the current versions of `ids` at `mjd` (refusing a store older than what is stored)."""
        if not ids:
            return 0
        ids_literal = _bigint_array(ids)
        later = cur.execute(
            sql.SQL(
                'SELECT "diaObjectId", "validityStartMjdTai" FROM {} '
                'WHERE "diaObjectId" = ANY({}::bigint[]) AND "validityEndMjdTai" IS NULL '
                'AND "validityStartMjdTai" >= %s ORDER BY 1 LIMIT 1'
            ).format(self._table("DiaObject"), ids_literal),
            (mjd,),
        ).fetchone()
        if later is not None:
            raise ApdbConflictError(
                f"DiaObject {later[0]} already has a version valid from MJD(TAI) {later[1]}, not before this "
                f"visit's {mjd}: visits are stored in time order, each once; nothing was stored"
            )
        cur.execute(
            sql.SQL('DELETE FROM {} WHERE "diaObjectId" = ANY({}::bigint[])').format(
                self._table("DiaObjectLast"), ids_literal
            )
        )
        cur.execute(
            sql.SQL(
                'UPDATE {} SET "validityEndMjdTai" = %s WHERE "diaObjectId" = ANY({}::bigint[]) '
                'AND "validityEndMjdTai" IS NULL'
            ).format(self._table("DiaObject"), ids_literal),
            (mjd,),
        )
        return int(cur.rowcount)

    # -- connection ----------------------------------------------------------------------------------------

    def _table(self, name: str) -> sql.Composable:
        return sql.Identifier(self.config.namespace, name)

    @contextmanager
    def cursor(self) -> Iterator[psycopg.Cursor[Any]]:
        """A cursor on the APDB's connection (for steps of the payload that compute in the database)."""
        with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = self._connect()
            try:
                with self._conn.cursor() as cur:
                    yield cur
            except psycopg.OperationalError as exc:
                self._conn.close()
                self._conn = None
                raise ApdbError(f"APDB connection failed: {exc}") from None

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True, application_name="dms-apdb")
        except psycopg.OperationalError as exc:
            raise ApdbError(f"cannot connect to the APDB database: {exc}") from None
        found = conn.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = %s AND column_name = %s",
            (self.config.namespace, HEALPIX_COLUMN),
        ).fetchone()
        if not found or found[0] < 4:
            conn.close()
            raise ApdbError(
                f"schema {self.config.namespace!r} has no APDB tables with {HEALPIX_COLUMN}: "
                "run `dms db upgrade` (migration c0014 adds them)"
            )
        return conn


def region_select(
    name: sql.Composable, table: ApdbTable, region: Region, where: sql.Composable
) -> sql.Composable | None:
    """SELECT of `table`'s rows whose `_healpix_29` lies in `region`'s cover and that pass `where` (None when
    the cover is empty)."""
    ranges = region.healpix_ranges()
    if len(ranges) == 0:
        return None
    # An OR of BETWEENs plans as a BitmapOr of index range scans whatever the statistics say (a join with
    # unnest() of the ranges was planned as a nested loop over every current row before an ANALYZE).
    cover = sql.SQL(" OR ").join(
        sql.SQL('t."_healpix_29" BETWEEN {} AND {}').format(sql.Literal(int(lo)), sql.Literal(int(hi)))
        for lo, hi in ranges.tolist()
    )
    return sql.SQL("SELECT {cols} FROM {table} t WHERE ({cover}) AND {where}").format(
        cols=_columns(table), table=name, cover=cover, where=where
    )


def latest_in(region: Region) -> sql.Composable:
    """The condition of a DiaObject read: the current version, inside `region`."""
    return sql.SQL('t."validityEndMjdTai" IS NULL AND {}').format(_contains(region))


def _contains(region: Region) -> sql.Composable:
    return region.sql_contains(sql.SQL('t."ra"'), sql.SQL('t."dec"'))


def _columns(table: ApdbTable) -> sql.Composable:
    return sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in table.columns)


def _tai_mjd(visit_time: Time) -> float:
    if not isinstance(visit_time, Time) or not visit_time.isscalar:
        raise ApdbInputError(f"visit_time must be one astropy Time, got {type(visit_time).__name__}")
    return float(visit_time.tai.mjd)


def _ids(object_ids: Iterable[int], limit: int) -> list[int]:
    try:
        ids = sorted({int(i) for i in object_ids})
    except (TypeError, ValueError) as exc:
        raise ApdbInputError(f"object ids must be integers: {exc}") from None
    if len(ids) > limit:
        raise ApdbInputError(f"{len(ids)} object ids asked for; at most {limit} per read (max_ids_per_read)")
    return ids


def _bigint_array(ids: list[int]) -> sql.Composable:
    """A bigint[] literal of `ids` (integers already), written once as text rather than quoted one by one."""
    return sql.Literal("{" + ",".join(str(int(i)) for i in ids) + "}")


def _frame(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas()


def _refuse_repeats(table: pa.Table, key: str, label: str) -> None:
    values = table.column(key).to_numpy()
    unique, counts = np.unique(values, return_counts=True)
    if (counts > 1).any():
        raise ApdbInputError(
            f"{label}: {key} {int(unique[counts > 1][0])} appears more than once in one store"
        )


def _prepare(table: ApdbTable, frame: Any, fixed: dict[str, Any] | None = None) -> pa.Table:
    """`frame` as an Arrow table of `table`'s columns and types, with `_healpix_29` and `fixed` values set."""
    if isinstance(frame, pa.Table):
        frame = frame.to_pandas()
    if not isinstance(frame, pd.DataFrame):
        raise ApdbInputError(f"{table.name}: expected a pandas DataFrame, got {type(frame).__name__}")
    given = [str(c) for c in frame.columns]
    unknown = sorted(set(given) - set(table.columns))
    if unknown:
        raise ApdbInputError(f"{table.name}: unknown columns {unknown} (not in Rubin's apdb.yaml)")
    missing = [c for c in table.required if c not in given and c not in (fixed or {})]
    if missing:
        raise ApdbInputError(f"{table.name}: missing required columns {missing}")
    arrays: dict[str, pa.Array] = {}
    for name in given:
        if name == HEALPIX_COLUMN or (fixed and name in fixed):
            continue
        arrays[name] = _column(table, name, frame[name])
    try:
        arrays[HEALPIX_COLUMN] = pa.array(
            healpix_29(frame["ra"].to_numpy(float), frame["dec"].to_numpy(float))
        )
    except (PartitionError, TypeError, ValueError) as exc:
        raise ApdbInputError(f"{table.name}: {exc}") from None
    for name, value in (fixed or {}).items():
        arrays[name] = pa.array([value] * len(frame), table.schema.field(name).type)
    return pa.table(arrays)


def _column(table: ApdbTable, name: str, values: pd.Series) -> pa.Array:
    field = table.schema.field(name)
    try:
        array = pa.array(values, from_pandas=True)
        if array.type != field.type:
            array = array.cast(field.type, safe=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise ApdbInputError(f"{table.name}.{name}: cannot be stored as {field.type}: {exc}") from None
    if not field.nullable and array.null_count:
        raise ApdbInputError(f"{table.name}.{name}: {array.null_count} rows are null; the column is NOT NULL")
    return array
