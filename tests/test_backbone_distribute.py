"""`dms distribute`: products to subscribed partner directories, incrementally, with a manifest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from backbone_support import REAL_FILES, lsstcam_raw
from click.testing import CliRunner

from dms.cli import main
from dms.services.archiver.ingest import archive_files
from dms.services.backbone import Backbone
from dms.services.backbone.distribute import Subscription, distribute, subscribe
from dms.services.backbone.errors import BackboneError

pytest_plugins = ["backbone_support"]  # the deployment and backbone fixtures


def manifest_matches_files(destination: Path) -> dict[str, str]:
    manifest = json.loads((destination / "manifest.json").read_text())
    files = {}
    for entry in manifest["files"]:
        data = (destination / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["size_bytes"]
        files[entry["item"]] = entry["path"]
    return files


def test_first_delivery_then_only_what_is_new(backbone: Backbone, tmp_path: Path) -> None:
    archive_files(backbone, [lsstcam_raw(tmp_path / f"{n}.fits", seq_num=n) for n in (1, 2)])
    archive_files(backbone, [REAL_FILES["wfpc2"]])
    partner = tmp_path / "frdf"
    with backbone.begin() as conn:
        subscribe(conn, Subscription("frdf", partner, ["raw"], ["LSSTCam/raw/all"], ["cdb_lsstcam.exposure"]))
    [first] = distribute(backbone)
    assert len(first.delivered) == 3 and first.unchanged == 0  # two LSSTCam raws (not WFPC2), one table
    files = manifest_matches_files(partner)
    table = pq.read_table(partner / files["table:cdb_lsstcam.exposure"])
    assert sorted(table.column("seq_num").to_pylist()) == [1, 2]
    for ref in backbone.list("raw", run="LSSTCam/raw/all"):
        assert (partner / files[f"dataset:{ref.id}"]).read_bytes() == backbone.store().absolute(
            ref.path or ""
        ).read_bytes()

    [nothing] = distribute(backbone)
    assert nothing.delivered == [] and nothing.unchanged == 3
    archive_files(backbone, [lsstcam_raw(tmp_path / "3.fits", seq_num=3)])
    [more] = distribute(backbone)
    assert len(more.delivered) == 2 and more.unchanged == 2  # the new raw and the changed table
    assert sorted(
        pq.read_table(partner / files["table:cdb_lsstcam.exposure"]).column("seq_num").to_pylist()
    ) == [1, 2, 3]
    assert len(manifest_matches_files(partner)) == 4


def test_bad_subscriptions_are_refused(backbone: Backbone, tmp_path: Path) -> None:
    with backbone.begin() as conn:
        with pytest.raises(BackboneError, match=r"unknown table 'dms\.nope'"):
            subscribe(conn, Subscription("x", tmp_path, tables=["dms.nope"]))
        with pytest.raises(BackboneError, match="unknown table"):
            subscribe(conn, Subscription("x", tmp_path, tables=["dms.site; DROP TABLE dms.site"]))
    with pytest.raises(BackboneError, match="no active subscription named 'x'"):
        distribute(backbone, "x")


def test_cli_subscribe_and_distribute(backbone: Backbone, tmp_path: Path) -> None:
    archive_files(backbone, [lsstcam_raw(tmp_path / "1.fits", seq_num=1)])
    base = ["--data-dir", str(backbone.deployment.data_dir)]
    runner = CliRunner()
    sub = runner.invoke(
        main,
        [
            "distribute",
            "subscribe",
            "ukdf",
            str(tmp_path / "ukdf"),
            "--type",
            "raw",
            "--table",
            "ivoa.ObsCore",
            *base,
        ],
    )
    assert sub.exit_code == 0, sub.output
    assert "ukdf" in runner.invoke(main, ["distribute", "list", *base]).output
    out = runner.invoke(main, ["distribute", *base])
    assert out.exit_code == 0 and "ukdf: 2 delivered" in out.output
    with backbone.begin() as conn:
        rows = conn.execute(sa.text('SELECT count(*) FROM ivoa."ObsCore"')).scalar_one()
    assert pq.read_table(tmp_path / "ukdf" / "tables" / "ivoa.ObsCore.parquet").num_rows == rows == 1
