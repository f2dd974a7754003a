"""The one results-VOTable writer, batch by batch (issue 17): astropy reads what is written back to the
same values as the Arrow result (TABLEDATA and BINARY2, batch boundaries anywhere), the pieces stay small
however large the result, and the command line's file is votlint-clean for a multi-batch result."""

from __future__ import annotations

import datetime as dt
import io
import math
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from astropy.io.votable import parse
from hypothesis import given, settings
from hypothesis import strategies as st

from dms.query.output import write_result
from dms.services.vo.tap_schema import Column
from dms.services.vo.votable_writer import _Describer, result_chunks, write_votable


@dataclass
class Result:
    table: pa.Table
    overflow: bool = False


def sample(rows: int, *, ascii_only: bool = False) -> pa.Table:
    """Every kind of result column, with nulls spread so that some batches have none and some all."""
    rng = np.random.default_rng(17)
    null = rng.random(rows) < 0.2
    null[: min(rows, 5)] = False  # a first batch without nulls must still describe the later ones
    text = "abc" if ascii_only else "aç€"
    return pa.table(
        {
            "id": pa.array(np.arange(rows, dtype=np.int64)),
            "n": pa.array([None if z else int(i % 7) for i, z in enumerate(null)], pa.int32()),
            "mag": pa.array(
                [None if z else float(v) for v, z in zip(rng.normal(20, 2, rows), null, strict=True)]
            ),
            "name": pa.array([None if z else text[i % 3] * (1 + i % 4) for i, z in enumerate(null)]),
            "flag": pa.array([None if z else bool(i % 2) for i, z in enumerate(null)], pa.bool_()),
            "t": pa.array(
                [
                    None if z else dt.datetime(2026, 1, 1) + dt.timedelta(seconds=i)
                    for i, z in enumerate(null)
                ],
                pa.timestamp("us"),
            ),
            "p": pa.array([None if z else [float(i), -float(i)] for i, z in enumerate(null)]),
            "poly": pa.array([None if z else [0.5] * (2 + 2 * (i % 3)) for i, z in enumerate(null)]),
        }
    )


def read_back(document: bytes) -> dict[str, list[object]]:
    table = parse(io.BytesIO(document)).get_first_table().to_table()
    values: dict[str, list[object]] = {}
    for name in table.colnames:
        column = table[name]
        mask = np.ma.getmaskarray(column) if column.ndim == 1 else np.zeros(len(column), bool)
        cells: list[object] = []
        for value, masked in zip(column.tolist(), mask, strict=True):
            if isinstance(value, bytes):
                value = value.decode()
            elif isinstance(value, np.ndarray):  # a variable-length array cell
                value = np.ma.filled(np.ma.asarray(value, dtype=float), np.nan).tolist()
            cells.append(None if masked else value)
        values[name] = cells
    return values


def assert_same(expected: pa.Table, got: dict[str, list[object]]) -> None:
    for name, column in zip(expected.column_names, expected.columns, strict=True):
        for row, (want, have) in enumerate(zip(column.to_pylist(), got[name], strict=True)):
            where = f"{name}[{row}]"
            if want is None:
                empty = have is None or have == "" or (isinstance(have, float) and math.isnan(have))
                arrays = isinstance(have, list) and all(v is None or math.isnan(v) for v in have)
                assert empty or arrays or (isinstance(have, list) and not have), where
            elif isinstance(want, dt.datetime):
                assert have == want.isoformat(), where
            elif isinstance(want, list):
                assert list(have) == pytest.approx(want), where  # type: ignore[call-overload]
            elif isinstance(want, float):
                assert have == pytest.approx(want, rel=1e-15), where
            else:
                assert have == want, where


@pytest.mark.parametrize("batch_rows", [1, 7, 64, 10_000])
@pytest.mark.parametrize("serialization", ["tabledata", "binary2"])
def test_written_values_read_back_the_same(serialization: str, batch_rows: int) -> None:
    # astropy reads BINARY2 char cells as ASCII, so the BINARY2 case keeps to ASCII text
    table = sample(300, ascii_only=serialization == "binary2")
    document = b"".join(result_chunks(table, serialization=serialization, batch_rows=batch_rows))
    assert_same(table, read_back(document))


def test_batches_change_nothing_in_the_document() -> None:
    table = sample(500)
    whole = b"".join(result_chunks(table, batch_rows=10_000))
    assert b"".join(result_chunks(table, batch_rows=37)) == whole
    # BINARY2 is one base64 stream whatever the batches: the same bytes once decoded
    ascii_table = sample(500, ascii_only=True)
    binary = [
        b"".join(result_chunks(ascii_table, serialization="binary2", batch_rows=n)) for n in (10_000, 37)
    ]
    assert read_back(binary[0]) == read_back(binary[1])


def test_list_columns_are_typed_by_the_whole_result() -> None:
    # the first batch alone would make `poly` a fixed 2-element array; later rows are longer
    table = sample(50)
    fields = {
        f.name: f
        for f in parse(io.BytesIO(b"".join(result_chunks(table, batch_rows=1)))).get_first_table().fields
    }
    assert fields["p"].arraysize == "2" and fields["poly"].arraysize == "*"


def test_status_and_datalink_follow_the_rows() -> None:
    table = sample(40, ascii_only=True)
    document = b"".join(
        result_chunks(table, overflow=True, batch_rows=9, datalink=("name", "http://h/datalink"))
    )
    votable = parse(io.BytesIO(document))
    infos = [(i.name, i.value) for i in votable.resources[0].infos]
    assert infos[0] == ("QUERY_STATUS", "OK")
    assert b'<INFO name="QUERY_STATUS" value="OVERFLOW"/>' in document
    assert document.index(b'value="OVERFLOW"') > document.index(b"</TABLE>")
    assert document.count(b'utype="adhoc:service"') == 1 and b'ID="datalink_id"' in document
    empty = b"".join(result_chunks(table.slice(0, 0), overflow=True))
    assert parse(io.BytesIO(empty)).get_first_table().array.shape == (0,) and b"OVERFLOW" in empty


def test_pieces_stay_small_however_large_the_result() -> None:
    """The rendered document is produced a batch at a time: no piece holds more than one batch's rows."""
    table = sample(60_000)
    sizes = [len(piece) for piece in result_chunks(table, batch_rows=5_000)]
    assert sum(sizes) > 8 * max(sizes)
    assert max(sizes) < sum(sizes) / 10


@pytest.mark.skipif(shutil.which("stilts") is None, reason="needs Debian's stilts (apt-get install stilts)")
def test_command_line_file_is_votlint_clean_across_batches(tmp_path: Path) -> None:
    path = tmp_path / "big.vot"
    table = sample(45_000)  # three batches of the writer's default size
    write_result(Result(table, overflow=True), "votable", path)
    result = subprocess.run(["stilts", "votlint", str(path)], capture_output=True, timeout=300)
    output = (result.stdout + result.stderr).decode()
    assert "ERROR" not in output, output
    assert_same(table, read_back(path.read_bytes()))


def test_write_votable_to_a_stream_counts_its_bytes() -> None:
    sink = io.BytesIO()
    table = sample(100, ascii_only=True)
    assert write_votable(sink, table, serialization="binary2", batch_rows=30) == len(sink.getvalue())
    assert_same(table, read_back(sink.getvalue()))


PLAIN_FLOATS = st.one_of(
    st.none(), st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1e16, 1e-5, 2.0])
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
            PLAIN_FLOATS,
            PLAIN_FLOATS,
            st.one_of(st.none(), st.booleans()),
            st.one_of(st.none(), st.integers(-(2**15), 2**15 - 1)),
        ),
        min_size=1,
        max_size=12,
    ),
    st.sampled_from([1, 5, 1000]),
)
def test_results_of_numbers_are_the_documents_astropy_writes(rows: list[tuple], batch_rows: int) -> None:
    """A result of numbers and booleans has its rows written without astropy's per-cell path: the
    document is byte for byte the one astropy writes for the whole table (any batch size)."""
    ids, doubles, floats, flags, shorts = (list(c) for c in zip(*rows, strict=True))
    table = pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "ra": pa.array(doubles, pa.float64()),
            "f": pa.array(floats, pa.float32(), from_pandas=False, safe=False),
            "flag": pa.array(flags, pa.bool_()),
            "s": pa.array(shorts, pa.int16()),
        }
    )
    columns = {"ra": Column("ra", "double", unit="deg", ucd="pos.eq.ra", description="RA <ICRS> & more")}
    infos = {"COORDSYS": "ICRS"}
    written = b"".join(result_chunks(table, columns, infos=infos, overflow=True, batch_rows=batch_rows))
    whole = _Describer(table.schema, columns, infos, None, {}).document(table, "tabledata")
    at = whole.rfind(b"</RESOURCE>")
    assert written == whole[:at] + b'<INFO name="QUERY_STATUS" value="OVERFLOW"/>\n' + whole[at:]


def test_a_result_of_numbers_is_votlint_clean(tmp_path: Path) -> None:
    path = tmp_path / "numbers.vot"
    table = sample(300).select(["id", "n", "mag", "flag"])
    write_result(Result(table, overflow=True), "votable", path)
    result = subprocess.run(["stilts", "votlint", str(path)], capture_output=True, timeout=300)
    output = (result.stdout + result.stderr).decode()
    assert "ERROR" not in output and "WARNING" not in output, output
    assert_same(table, read_back(path.read_bytes()))
