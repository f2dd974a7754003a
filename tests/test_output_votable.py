"""`dms query --format votable` writes with the services' VOTable writer (issue 17): nullable columns keep
their types and nulls, and the document is votlint-clean (stilts, when installed)."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from astropy.io.votable import parse

from dms.query.output import write_result


@dataclass
class Result:
    table: pa.Table
    overflow: bool = False


def nullable_table() -> pa.Table:
    return pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int64()),
            "mag": pa.array([12.5, None, 14.25], pa.float64()),
            "n": pa.array([None, 7, 8], pa.int32()),
            "name": pa.array(["a", None, "ç"], pa.string()),
            "flag": pa.array([True, None, False], pa.bool_()),
            "t": pa.array([dt.datetime(2026, 1, 2, 3, 4, 5), None, None], pa.timestamp("us")),
            "id ": pa.array([4, 5, 6], pa.int64()),
        }
    ).rename_columns(["id", "mag", "n", "name", "flag", "t", "id"])  # two columns of one name


def test_nullable_columns_keep_their_types_and_nulls(tmp_path: Path) -> None:
    path = tmp_path / "r.vot"
    write_result(Result(nullable_table(), overflow=True), "votable", path, infos={"COORDSYS": "a note"})
    votable = parse(str(path))
    fields = {f.name: f for f in votable.get_first_table().fields}
    assert fields["mag"].datatype == "double" and fields["n"].datatype == "int"
    assert fields["name"].datatype in ("char", "unicodeChar") and fields["flag"].datatype == "boolean"
    assert fields["t"].xtype == "timestamp"
    table = votable.get_first_table().to_table()
    assert table.colnames == ["id", "mag", "n", "name", "flag", "t", "id_2"]
    assert np.ma.is_masked(table["mag"][1]) and table["mag"][2] == 14.25
    assert np.ma.is_masked(table["n"][0]) and table["n"][1] == 7
    # a null char cell is empty (VOTable has no null value for char), never the text "None"
    assert (np.ma.is_masked(table["name"][1]) or table["name"][1] == "") and table["name"][2] == "ç"
    assert "None" not in path.read_text()
    infos = [(i.name, i.value) for i in votable.resources[0].infos]
    assert ("QUERY_STATUS", "OK") in infos and ("COORDSYS", "a note") in infos
    assert b'<INFO name="QUERY_STATUS" value="OVERFLOW"/>' in path.read_bytes()


@pytest.mark.skipif(shutil.which("stilts") is None, reason="needs Debian's stilts (apt-get install stilts)")
def test_votlint_is_clean_on_the_command_line_output(tmp_path: Path) -> None:
    path = tmp_path / "r.vot"
    write_result(Result(nullable_table()), "votable", path)
    result = subprocess.run(
        ["stilts", "votlint", f"location={path}"], capture_output=True, text=True, timeout=120
    )
    report = result.stdout + result.stderr
    assert not [line for line in report.splitlines() if line.startswith("ERROR")], report
    assert not [line for line in report.splitlines() if line.startswith("WARNING")], report
