"""The Data Backbone client on a real PostgreSQL: put/get/find/list by data ID, conflicts, verification."""

from __future__ import annotations

import hashlib
from pathlib import Path

import google_crc32c
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from astropy.io import fits
from astropy.table import Table
from click.testing import CliRunner

from dms.cli import main
from dms.services.backbone import Backbone
from dms.services.backbone.errors import (
    ChecksumMismatchError,
    DataIdError,
    DatasetConflictError,
    DatasetNotFoundError,
)
from dms.services.backbone.verify import verify

DIMS = ["instrument", "tract"]

pytest_plugins = ["backbone_support"]  # the deployment and backbone fixtures


def table(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({"objectId": np.arange(n, dtype=np.int64), "ra": rng.uniform(0, 360, n)})


def test_parquet_and_fits_round_trip_by_data_id(backbone: Backbone) -> None:
    objects = table(500)
    ref, created = backbone.put(
        objects, "objectTable", {"instrument": "LSSTCam", "tract": 9813}, run="u/test/run1", dimensions=DIMS
    )
    assert created and ref.file_format == "parquet"
    assert backbone.get("objectTable", {"tract": 9813, "instrument": "LSSTCam"}).equals(objects)

    image = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.arange(12.0).reshape(3, 4), name="SCI")])
    backbone.put(
        image,
        "calexp",
        {"instrument": "LSSTCam", "visit": 7, "detector": 94},
        run="u/test/run1",
        dimensions=["instrument", "visit", "detector"],
    )
    back = backbone.get("calexp", {"instrument": "LSSTCam", "visit": 7, "detector": 94})
    np.testing.assert_array_equal(back["SCI"].data, image["SCI"].data)

    stored = backbone.store().absolute(ref.path or "")
    assert (
        ref.checksum_algorithm == "crc32c"
        and f"{google_crc32c.value(stored.read_bytes()):08x}" == ref.checksum
    )
    assert Path(ref.path or "").name == f"{ref.checksum}-{ref.id}.parquet"


def test_astropy_table_is_stored_as_parquet(backbone: Backbone) -> None:
    t = Table({"a": [1, 2, 3], "b": [0.5, 1.5, 2.5]})
    backbone.put(t, "small", {"instrument": "X", "tract": 1}, run="r", dimensions=DIMS)
    got = backbone.get("small", {"instrument": "X", "tract": 1})
    assert got.column("a").to_pylist() == [1, 2, 3] and got.column("b").to_pylist() == [0.5, 1.5, 2.5]


def test_same_contents_twice_is_one_dataset_and_different_contents_conflict(backbone: Backbone) -> None:
    data_id = {"instrument": "LSSTCam", "tract": 1}
    first, created = backbone.put(table(10), "objectTable", data_id, run="r", dimensions=DIMS)
    again, created_again = backbone.put(table(10), "objectTable", data_id, run="r")
    assert created and not created_again and again.id == first.id
    with pytest.raises(DatasetConflictError, match=r"different contents.*nothing was overwritten"):
        backbone.put(table(11), "objectTable", data_id, run="r")
    assert backbone.get("objectTable", data_id).equals(table(10))
    assert len(backbone.list("objectTable")) == 1
    assert sorted(backbone.store().iter_objects()) == [first.path]  # the rejected copy was removed


def test_data_ids_must_match_the_dimensions(backbone: Backbone) -> None:
    backbone.put(table(3), "objectTable", {"instrument": "LSSTCam", "tract": 1}, run="r", dimensions=DIMS)
    with pytest.raises(DataIdError, match="dimensions are instrument, tract"):
        backbone.put(table(3), "objectTable", {"instrument": "LSSTCam", "patch": 1}, run="r")
    with pytest.raises(DataIdError, match="unknown dataset type 'nope'"):
        backbone.put(table(3), "nope", {"instrument": "LSSTCam"}, run="r")


def test_find_follows_chained_collections_in_order(backbone: Backbone) -> None:
    data_id = {"instrument": "LSSTCam", "tract": 5}
    old, _ = backbone.put(table(4, seed=1), "objectTable", data_id, run="drp/v1", dimensions=DIMS)
    new, _ = backbone.put(table(4, seed=2), "objectTable", data_id, run="drp/v2")
    with backbone.begin() as conn:
        conn.execute(sa.text("INSERT INTO dms.collection (name, type) VALUES ('drp/latest', 'CHAINED')"))
        conn.execute(
            sa.text(
                "INSERT INTO dms.collection_chain VALUES ('drp/latest', 0, 'drp/v2'), "
                "('drp/latest', 1, 'drp/v1')"
            )
        )
    assert backbone.find("objectTable", data_id, ["drp/latest"]).id == new.id  # type: ignore[union-attr]
    assert backbone.find("objectTable", data_id, ["drp/v1", "drp/v2"]).id == old.id  # type: ignore[union-attr]
    assert backbone.get("objectTable", data_id, ["drp/latest"]).equals(table(4, seed=2))
    with pytest.raises(DatasetNotFoundError):
        backbone.get("objectTable", {"instrument": "LSSTCam", "tract": 6})


def test_list_by_partial_data_id(backbone: Backbone) -> None:
    for tract in (1, 2, 3):
        backbone.put(
            table(tract), "objectTable", {"instrument": "LSSTCam", "tract": tract}, run="r", dimensions=DIMS
        )
    backbone.put(table(1), "objectTable", {"instrument": "LATISS", "tract": 1}, run="r")
    assert {r.data_id["tract"] for r in backbone.list(where={"instrument": "LSSTCam"})} == {1, 2, 3}
    assert len(backbone.list(where={"tract": 1})) == 2


def test_verify_detects_corrupted_and_missing_files(backbone: Backbone, deployment: object) -> None:
    refs = [
        backbone.put(
            table(100, seed=s), "objectTable", {"instrument": "LSSTCam", "tract": s}, run="r", dimensions=DIMS
        )[0]
        for s in range(3)
    ]
    assert verify(backbone).healthy
    corrupted = backbone.store().absolute(refs[0].path or "")
    data = bytearray(corrupted.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit pattern, same size
    corrupted.write_bytes(bytes(data))
    backbone.store().absolute(refs[1].path or "").unlink()
    report = verify(backbone)
    assert [p for _, p, _ in report.corrupt] == [refs[0].path] and [p for _, p in report.missing] == [
        refs[1].path
    ]
    assert report.ok == 1 and not report.healthy
    with pytest.raises(ChecksumMismatchError, match="corrupted"):
        backbone.get("objectTable", {"instrument": "LSSTCam", "tract": 0})
    result = CliRunner().invoke(main, ["backbone", "verify", "--data-dir", str(backbone.deployment.data_dir)])
    assert result.exit_code == 1 and "CORRUPT" in result.output and "MISSING" in result.output


def test_cli_put_get_find_list(backbone: Backbone, tmp_path: Path) -> None:
    source = tmp_path / "objects.parquet"
    pq.write_table(table(20), source)
    base = ["--data-dir", str(backbone.deployment.data_dir)]
    runner = CliRunner()
    put = runner.invoke(
        main,
        [
            "backbone",
            "put",
            str(source),
            "--type",
            "objectTable",
            "--run",
            "r",
            "--dimensions",
            "instrument,tract",
            "instrument=LSSTCam",
            "tract=42",
            *base,
        ],
    )
    assert put.exit_code == 0, put.output
    out = tmp_path / "back.parquet"
    get = runner.invoke(
        main,
        ["backbone", "get", "--type", "objectTable", "instrument=LSSTCam", "tract=42", "-o", str(out), *base],
    )
    assert get.exit_code == 0, get.output
    assert out.read_bytes() == source.read_bytes()
    found = runner.invoke(
        main, ["backbone", "find", "--type", "objectTable", "instrument=LSSTCam", "tract=42", *base]
    )
    assert f"{google_crc32c.value(source.read_bytes()):08x}" in found.output
    listed = runner.invoke(main, ["backbone", "list", "tract=42", *base])
    assert listed.output.count("objectTable") == 1
    missing = runner.invoke(
        main, ["backbone", "get", "--type", "objectTable", "tract=1", "instrument=X", *base]
    )
    assert missing.exit_code == 1 and "no objectTable" in missing.output


def test_sha256_checksums_on_request_and_mixed_algorithms(deployment: object) -> None:
    strong = Backbone(deployment, checksum="sha256")  # type: ignore[arg-type]
    data_id = {"instrument": "LSSTCam", "tract": 9}
    ref, _ = strong.put(table(50), "objectTable", data_id, run="r", dimensions=DIMS)
    data = strong.store().absolute(ref.path or "").read_bytes()
    assert ref.checksum_algorithm == "sha256" and hashlib.sha256(data).hexdigest() == ref.checksum
    fast = Backbone(deployment)  # type: ignore[arg-type]
    again, created = fast.put(table(50), "objectTable", data_id, run="r")  # same bytes, other algorithm
    assert not created and again.path == ref.path and again.checksum == ref.checksum
    with pytest.raises(DatasetConflictError):
        fast.put(table(51), "objectTable", data_id, run="r")
    assert sorted(fast.store().iter_objects()) == [ref.path] and verify(fast).healthy
