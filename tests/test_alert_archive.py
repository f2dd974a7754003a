"""The alert archive on a real Data Backbone and PostgreSQL: packets kept and found by position, time and
object, fetched by id byte for byte, archived once, conflicting batches refused with nothing added."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
import sqlalchemy as sa
from apdb_support import field_positions, make_forced, make_objects, make_sources
from astropy.coordinates import SkyCoord
from lsst.alert.packet import Schema

from dms.services.alerts.archive import archive_batch, find_alerts, read_packet
from dms.services.alerts.batch import batch_packets
from dms.services.alerts.packets import AlertPacketError
from dms.services.apdb import Circle
from dms.services.backbone import Backbone

pytest_plugins = ["backbone_support"]  # the backbone fixture (a migrated deployment, emptied per test)

MJD = 60_950.3


def _visit(visit: int, first_id: int, n: int = 300) -> tuple:
    rng = np.random.default_rng(visit)
    objects = make_objects(
        rng, np.arange(first_id, first_id + n), field_positions(rng, n, 150.0, 2.0, 1.0), MJD
    )
    objects["validityStartMjdTai"] = MJD
    sources = make_sources(rng, objects, visit=visit, detector=42, mjd=MJD + visit / 1000, first_id=first_id)
    forced = make_forced(objects, visit=visit - 1, detector=42, mjd=MJD - 1, first_id=first_id)
    return sources, batch_packets(sources, objects, None, forced)


def _count(backbone: Backbone) -> int:
    with backbone.begin() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM dms.alert")).scalar_one())


def test_archive_find_and_fetch(backbone: Backbone) -> None:
    sources, packets = _visit(7, 1_000)
    summary = archive_batch(backbone, 7, 42, sources, packets)
    assert (summary.alerts, summary.created) == (300, True)
    coords = SkyCoord(sources["ra"].to_numpy() * u.deg, sources["dec"].to_numpy() * u.deg)
    inside = coords.separation(SkyCoord(150.2 * u.deg, 2.1 * u.deg)) <= 0.4 * u.deg
    found = find_alerts(backbone, region=Circle(150.2, 2.1, 0.4))
    assert sorted(found["alert_id"]) == sorted(sources["diaSourceId"][inside]) and inside.sum() > 0
    one = int(sources["diaObjectId"].iloc[5])
    assert list(find_alerts(backbone, dia_object_id=one)["alert_id"]) == [int(sources["diaSourceId"].iloc[5])]
    assert len(find_alerts(backbone, start_mjd_tai=MJD, end_mjd_tai=MJD + 1, visit=7)) == 300
    assert len(find_alerts(backbone, start_mjd_tai=MJD + 1)) == 0
    rubin = Schema.from_file()
    for k in (0, 123, 299):
        packet = read_packet(backbone, int(sources["diaSourceId"].iloc[k]))
        assert packet == packets[k]
        assert rubin.deserialize(packet[5:])["diaSourceId"] == sources["diaSourceId"].iloc[k]
    with pytest.raises(AlertPacketError, match="no alert 5 in the archive"):
        read_packet(backbone, 5)


def test_archiving_twice_adds_nothing_and_conflicts_are_refused(backbone: Backbone) -> None:
    sources, packets = _visit(8, 5_000)
    archive_batch(backbone, 8, 42, sources, packets)
    again = archive_batch(backbone, 8, 42, sources, packets)
    assert again.created is False and _count(backbone) == 300
    with pytest.raises(AlertPacketError, match="other alerts were archived for it before"):
        archive_batch(backbone, 8, 42, sources.iloc[:10], packets[:10])
    with pytest.raises(AlertPacketError, match="already archived from another visit"):
        archive_batch(backbone, 9, 42, sources.iloc[:10], packets[:10])
    assert _count(backbone) == 300
    assert len(backbone.list("alert_packets")) == 1
    with pytest.raises(AlertPacketError, match="2 packets given for 3"):
        archive_batch(backbone, 10, 1, sources.iloc[:3], packets[:2])
    with pytest.raises(AlertPacketError, match="no Confluent header"):
        archive_batch(backbone, 10, 1, sources.iloc[:1], [b"\x01junk"])
