"""Alert packets against the library that defines them: lsst-alert-packet's schema validates every record,
decodes every packet DMS writes, and its own sample alert round-trips through DMS."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import fastavro
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from apdb_support import field_positions, make_forced, make_objects, make_sources, tai
from astropy.io import fits
from astropy.wcs import WCS
from hypothesis import given, settings
from hypothesis import strategies as st
from lsst.alert.packet import Schema, get_path_to_latest_schema

from dms.services.alerts.batch import batch_packets
from dms.services.alerts.columnar import encode_table
from dms.services.alerts.cutouts import stamp
from dms.services.alerts.packets import (
    AlertPacketError,
    Cutouts,
    alert_records,
    deserialize,
    gather,
    latest_schema,
    serialize,
)
from dms.services.apdb import Apdb, Circle
from tests.hypothesis_profiles import examples

MJD = 60_900.2

pytest_plugins = ["apdb_support"]  # the apdb fixture


@pytest.fixture(scope="module")
def rubin() -> Schema:
    return Schema.from_file()


def _batch(n: int = 50) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(11)
    objects = make_objects(rng, np.arange(1, n + 1), field_positions(rng, n, 10.0, -40.0, 1.0), MJD)
    objects["validityStartMjdTai"] = MJD  # as the APDB returns them
    sources = make_sources(rng, objects, visit=7, detector=3, mjd=MJD, first_id=100_000)
    history = pd.concat(
        [make_sources(rng, objects, visit=k, detector=3, mjd=MJD - 10 * k, first_id=1000 * k) for k in (1, 2)]
    )
    forced = pd.concat(
        [make_forced(objects, visit=k, detector=3, mjd=MJD - 10 * k, first_id=1000 * k) for k in (1, 2)]
    )
    return sources, objects, history, forced


def test_packets_validate_and_decode_with_rubins_schema(rubin: Schema) -> None:
    sources, objects, history, forced = _batch()
    records = alert_records(gather(sources, objects, history, forced))
    assert len(records) == len(sources)
    for record in records:
        assert rubin.validate(record)
        packet = serialize(record)
        magic, schema_id = struct.unpack(">bI", packet[:5])
        assert (magic, schema_id) == (0, rubin.get_schema_id()) == (0, 1101)
        decoded = rubin.deserialize(packet[5:])
        assert decoded["diaSource"]["diaSourceId"] == record["diaSourceId"]
        assert decoded == deserialize(packet)
    first = rubin.deserialize(serialize(records[0])[5:])
    source = sources.iloc[0]
    assert first["diaSource"]["ra"] == source["ra"] and first["diaSource"]["band"] == source["band"]
    assert first["diaSource"]["psfFlux"] == pytest.approx(float(source["psfFlux"]), rel=1e-7)
    assert first["diaObject"]["diaObjectId"] == source["diaObjectId"]
    assert sorted(s["visit"] for s in first["prvDiaSources"]) == [1, 2]
    assert sorted(s["visit"] for s in first["prvDiaForcedSources"]) == [1, 2]
    # a NULL of the APDB (NaN in the frame) is an Avro null, not a NaN
    assert objects["u_psfFluxMean"].isna().iloc[0]
    assert first["diaObject"]["u_psfFluxMean"] is None


def test_rubins_sample_alert_round_trips(rubin: Schema) -> None:
    sample = Path(get_path_to_latest_schema()).parent / "sample_data" / "alert.json"
    record = json.loads(sample.read_text())
    for key in ("cutoutDifference", "cutoutScience", "cutoutTemplate"):
        if isinstance(record.get(key), str):
            record[key] = record[key].encode()
    packet = serialize(record)
    assert deserialize(packet) == rubin.deserialize(packet[5:])
    assert deserialize(packet)["diaSourceId"] == record["diaSourceId"]


def test_cutouts_are_fits_with_their_wcs(rubin: Schema) -> None:
    image = np.arange(200 * 300, dtype=np.float32).reshape(200, 300)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [10.0, -40.0]
    wcs.wcs.crpix = [150.0, 100.0]
    wcs.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    data = stamp(image, 120.0, 80.0, wcs)
    with fits.open(io.BytesIO(data)) as hdus:
        np.testing.assert_array_equal(hdus[0].data, image[65:95, 105:135])
        cut_wcs = WCS(hdus[0].header)
        assert np.allclose(cut_wcs.pixel_to_world_values(15, 15), wcs.pixel_to_world_values(120, 80))
    edge = stamp(image, 1.0, 1.0)
    with fits.open(io.BytesIO(edge)) as hdus:
        assert np.isnan(hdus[0].data[0, 0]) and hdus[0].data[14, 14] == image[0, 0]
    with pytest.raises(AlertPacketError, match="outside the image"):
        stamp(image, 1000.0, 1000.0)
    sources, objects, _, _ = _batch(1)
    record = alert_records(gather(sources, objects), [Cutouts(science=data, template=data, difference=edge)])[
        0
    ]
    decoded = rubin.deserialize(serialize(record)[5:])
    assert decoded["cutoutScience"] == data and decoded["cutoutDifference"] == edge


def test_bad_packets_and_rows_are_named() -> None:
    sources, objects, _, _ = _batch(2)
    with pytest.raises(AlertPacketError, match=r"requires columns \['visit'\]"):
        gather(sources.drop(columns=["visit"]), objects)
    record = alert_records(gather(sources, objects))[0]
    packet = serialize(record)
    with pytest.raises(AlertPacketError, match="shorter than the 5-byte"):
        deserialize(packet[:3])
    with pytest.raises(AlertPacketError, match="not the Confluent magic byte"):
        deserialize(b"\x01" + packet[1:])
    with pytest.raises(AlertPacketError, match="schema id 999"):
        deserialize(struct.pack(">bI", 0, 999) + packet[5:])
    with pytest.raises(AlertPacketError, match=r"not a valid 11\.1 alert"):
        deserialize(packet[: len(packet) // 2])
    broken = dict(record, diaSource=dict(record["diaSource"], visit="seven"))
    with pytest.raises(AlertPacketError, match="does not fit schema"):
        serialize(broken)
    assert latest_schema().version == "11.1"


def test_packets_from_a_real_apdb(apdb: Apdb, rubin: Schema) -> None:
    sources, objects, history, forced = _batch(30)
    apdb.store(tai(MJD - 20), objects.drop(columns=["validityStartMjdTai"]), history, forced)
    region = Circle(10.0, -40.0, 1.1)
    stored_objects = apdb.get_dia_objects(region)
    ids = stored_objects["diaObjectId"]
    inputs = gather(
        sources,
        stored_objects,
        apdb.get_dia_sources(region, ids, tai(MJD)),
        apdb.get_dia_forced_sources(region, ids, tai(MJD)),
    )
    for record in alert_records(inputs):
        decoded = rubin.deserialize(serialize(record)[5:])
        assert rubin.validate(record)
        assert len(decoded["prvDiaSources"]) == 2 and len(decoded["prvDiaForcedSources"]) == 2
        assert decoded["diaObject"]["validityStartMjdTai"] == tai(MJD - 20).mjd


@pytest.mark.parametrize("with_history", [True, False])
def test_the_columnar_batch_writes_fastavros_bytes(rubin: Schema, with_history: bool) -> None:
    sources, objects, history, forced = _batch(40)
    sources.loc[sources.index[3], "diaObjectId"] = 999_999  # a source whose object is not in the batch
    sources.loc[sources.index[5], "psfFlux"] = np.nan  # NULL
    sources.loc[sources.index[6], "band"] = "é"  # a multi-byte character
    stamps = [
        Cutouts(science=bytes([k]) * (k * 37), difference=None, template=b"") for k in range(len(sources))
    ]
    frames = (history, forced) if with_history else (None, None)
    expected = [serialize(r) for r in alert_records(gather(sources, objects, *frames), stamps)]
    got = batch_packets(sources, objects, *frames, cutouts=stamps)
    assert got == expected
    decoded = rubin.deserialize(got[3][5:])
    assert decoded["diaObject"] is None and decoded["diaSource"]["diaObjectId"] == 999_999
    assert rubin.deserialize(got[5][5:])["diaSource"]["psfFlux"] is None


@settings(max_examples=examples(40), deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(-(2**63), 2**63 - 1),
            st.one_of(st.none(), st.floats(width=32, allow_nan=False)),
            st.floats(allow_nan=False),
            st.one_of(st.none(), st.text(max_size=8)),
            st.booleans(),
            st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_columnar_encoding_equals_fastavro_on_any_values(values: list[tuple]) -> None:
    schema = {
        "type": "record",
        "name": "t",
        "fields": [
            {"name": "a", "type": "long"},
            {"name": "b", "type": ["null", "float"]},
            {"name": "c", "type": "double"},
            {"name": "d", "type": ["null", "string"]},
            {"name": "e", "type": "boolean"},
            {"name": "f", "type": ["int", "null"]},
        ],
    }
    table = pa.table(
        {
            "a": pa.array([v[0] for v in values], pa.int64()),
            "b": pa.array([v[1] for v in values], pa.float32()),
            "c": pa.array([v[2] for v in values], pa.float64()),
            "d": pa.array([v[3] for v in values], pa.string()),
            "e": pa.array([v[4] for v in values], pa.bool_()),
            "f": pa.array([v[5] for v in values], pa.int32()),
        }
    )
    encoded = encode_table(table, schema)
    parsed = fastavro.parse_schema(schema)
    for i, row in enumerate(table.to_pylist()):
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, parsed, row)
        assert encoded.row(i) == buffer.getvalue()
