"""The alert archive: each batch's packets in the Data Backbone, one searchable row per alert in `dms.alert`.

A batch (one visit and detector) is one `alert_packets` dataset: a Parquet table of (alert_id, packet), put in
the Data Backbone like any product (checksummed, replicated by the site policies). Each alert gets a row in
`dms.alert` with its position (`_healpix_29`), time, visit and DiaObject, pointing at its row of that dataset,
so brokers that missed a night find alerts by position, time or object and fetch the packets by id.
Archiving is idempotent: the same batch again changes nothing; a different batch for the same visit and
detector, or an alert id already archived from another batch, is refused and nothing is added.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import sqlalchemy as sa

from dms.loaders.partition import PartitionError, healpix_29
from dms.services.alerts.packets import HEADER, AlertPacketError
from dms.services.apdb.regions import Region
from dms.services.backbone import Backbone
from dms.services.backbone.errors import DatasetConflictError

DATASET_TYPE = "alert_packets"
DIMENSIONS = ["visit", "detector"]
DEFAULT_RUN = "alerts"
LISTED = (
    "alert_id",
    "visit",
    "detector",
    "dia_object_id",
    "midpoint_mjd_tai",
    "ra",
    "dec",
    "schema_id",
    "packet_size",
)
ALERT = sa.table("alert", *(sa.column(name) for name in (*LISTED, "_healpix_29")), schema="dms")


@dataclass(frozen=True)
class ArchiveSummary:
    visit: int
    detector: int
    dataset_id: str
    alerts: int
    created: bool  # False when this batch was archived before


def archive_batch(
    backbone: Backbone,
    visit: int,
    detector: int,
    dia_sources: pd.DataFrame,
    packets: list[bytes],
    *,
    run: str = DEFAULT_RUN,
) -> ArchiveSummary:
    """Keep one batch's packets (in the order of `dia_sources`) and index them in `dms.alert`."""
    if len(packets) != len(dia_sources):
        raise AlertPacketError(f"{len(packets)} packets given for {len(dia_sources)} DiaSources")
    rows = _rows(visit, detector, dia_sources, packets)
    table = pa.table(
        {"alert_id": pa.array(rows["alert_id"], pa.int64()), "packet": pa.array(packets, pa.binary())}
    )
    data_id = {"visit": int(visit), "detector": int(detector)}
    with backbone.begin() as conn:
        existing = conn.execute(
            sa.text("SELECT alert_id, visit, detector FROM dms.alert WHERE alert_id = ANY(:ids)"),
            {"ids": rows["alert_id"].tolist()},
        ).all()
    foreign = [a for a, v, d in existing if (v, d) != (int(visit), int(detector))]
    if foreign:
        raise AlertPacketError(
            f"alert {foreign[0]} (and {len(foreign) - 1} more) was already archived from another visit or "
            "detector; nothing added"
        )
    try:
        ref, created = backbone.put(table, DATASET_TYPE, data_id, run=run, dimensions=DIMENSIONS)
    except DatasetConflictError as exc:
        raise AlertPacketError(
            f"visit {visit} detector {detector}: other alerts were archived for it before ({exc}); "
            "nothing added"
        ) from None
    rows["packet_dataset"] = str(ref.id)
    if not existing:
        with backbone.begin() as conn:
            records = [{str(k): v for k, v in r.items()} for r in rows.to_dict("records")]
            conn.execute(sa.text(_INSERT), records)
    return ArchiveSummary(int(visit), int(detector), str(ref.id), len(rows), created or not existing)


_INSERT = (
    "INSERT INTO dms.alert (alert_id, visit, detector, dia_object_id, midpoint_mjd_tai, ra, dec, "
    "_healpix_29, "
    "schema_id, packet_dataset, packet_index, packet_size) VALUES (:alert_id, :visit, :detector, "
    ":dia_object_id, :midpoint_mjd_tai, :ra, :dec, :_healpix_29, :schema_id, CAST(:packet_dataset AS uuid), "
    ":packet_index, :packet_size)"
)


def _rows(visit: int, detector: int, sources: pd.DataFrame, packets: list[bytes]) -> pd.DataFrame:
    schema_ids = []
    for packet in packets:
        if len(packet) < HEADER.size or packet[0] != 0:
            raise AlertPacketError("a packet has no Confluent header (magic byte 0 and a schema id)")
        schema_ids.append(HEADER.unpack_from(packet)[1])
    try:
        hpx = healpix_29(sources["ra"].to_numpy(float), sources["dec"].to_numpy(float))
    except PartitionError as exc:
        raise AlertPacketError(f"alert positions: {exc}") from None
    object_ids = sources["diaObjectId"] if "diaObjectId" in sources else pd.Series([None] * len(sources))
    return pd.DataFrame(
        {
            "alert_id": sources["diaSourceId"].to_numpy(np.int64),
            "visit": int(visit),
            "detector": int(detector),
            "dia_object_id": [None if pd.isna(v) else int(v) for v in object_ids],
            "midpoint_mjd_tai": sources["midpointMjdTai"].to_numpy(float),
            "ra": sources["ra"].to_numpy(float),
            "dec": sources["dec"].to_numpy(float),
            "_healpix_29": hpx,
            "schema_id": schema_ids,
            "packet_index": np.arange(len(packets)),
            "packet_size": [len(p) for p in packets],
        }
    ).astype({"alert_id": object, "_healpix_29": object})


def read_packet(backbone: Backbone, alert_id: int) -> bytes:
    """The packet of one archived alert, as it was sent."""
    with backbone.begin() as conn:
        row = conn.execute(
            sa.text("SELECT visit, detector, packet_index FROM dms.alert WHERE alert_id = :a"),
            {"a": int(alert_id)},
        ).first()
    if row is None:
        raise AlertPacketError(f"no alert {alert_id} in the archive")
    table = backbone.get(DATASET_TYPE, {"visit": row.visit, "detector": row.detector})
    return bytes(table.column("packet")[row.packet_index].as_py())


def find_alerts(
    backbone: Backbone,
    *,
    region: Region | None = None,
    start_mjd_tai: float | None = None,
    end_mjd_tai: float | None = None,
    dia_object_id: int | None = None,
    visit: int | None = None,
    limit: int = 100_000,
) -> pd.DataFrame:
    """Archived alerts matching every condition given (a region by `_healpix_29` ranges, then exactly)."""
    t = ALERT
    conditions: list[sa.ColumnElement[bool]] = []
    if region is not None:
        ranges = region.healpix_ranges().tolist()
        conditions.append(
            sa.or_(sa.false(), *(t.c._healpix_29.between(int(lo), int(hi)) for lo, hi in ranges))
        )
    if start_mjd_tai is not None:
        conditions.append(t.c.midpoint_mjd_tai >= float(start_mjd_tai))
    if end_mjd_tai is not None:
        conditions.append(t.c.midpoint_mjd_tai < float(end_mjd_tai))
    if dia_object_id is not None:
        conditions.append(t.c.dia_object_id == int(dia_object_id))
    if visit is not None:
        conditions.append(t.c.visit == int(visit))
    query = (
        sa.select(*(t.c[name] for name in LISTED))
        .where(sa.and_(sa.true(), *conditions))
        .order_by(t.c.alert_id)
        .limit(int(limit))
    )
    with backbone.begin() as conn:
        frame = pd.DataFrame(conn.execute(query).mappings().all(), columns=list(LISTED))
    if region is not None and len(frame):
        frame = frame[region.contains(frame["ra"].to_numpy(float), frame["dec"].to_numpy(float))]
    return frame.reset_index(drop=True)
