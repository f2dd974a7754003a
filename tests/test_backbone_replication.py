"""Replication policies (dataset type, run pattern, sky cone, priority) and the replicate/status commands."""

from __future__ import annotations

from pathlib import Path

import astropy.units as u
import pytest
import sqlalchemy as sa
from astropy.coordinates import SkyCoord
from backbone_support import lsstcam_raw
from click.testing import CliRunner

from dms.cli import main
from dms.services.archiver.ingest import archive_files
from dms.services.backbone import Backbone
from dms.services.backbone.errors import BackboneError
from dms.services.backbone.replication import Policy, add_policy, plan, replicate
from dms.services.backbone.verify import verify

POINTINGS = [(10.0, -30.0), (12.0, -31.0), (200.0, 45.0), (359.5, 0.5), (0.5, -0.5)]

pytest_plugins = ["backbone_support"]  # the deployment and backbone fixtures


def archive_pointings(backbone: Backbone, tmp_path: Path) -> None:
    files = [
        lsstcam_raw(tmp_path / f"{n}.fits", seq_num=n + 1, ra=ra, dec=dec)
        for n, (ra, dec) in enumerate(POINTINGS)
    ]
    assert all(r.status == "archived" for r in archive_files(backbone, files))


def tasks(backbone: Backbone) -> dict[tuple[int, str], int]:
    with backbone.begin() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT coalesce((d.data_id->>'exposure')::bigint, 0) AS exposure, t.site, t.priority "
                "FROM dms.replication_task t "
                "JOIN dms.dataset d ON d.id = t.dataset_id"
            )
        )
        return {(r.exposure % 100_000, r.site): r.priority for r in rows}


def test_policies_select_by_type_run_and_sky_cone(backbone: Backbone, tmp_path: Path) -> None:
    archive_pointings(backbone, tmp_path)
    backbone.put(
        tmp_path / "0.fits",
        "calexp",
        {"instrument": "LSSTCam", "visit": 1},
        run="drp/run1",
        dimensions=["instrument", "visit"],
    )
    centre = SkyCoord(0 * u.deg, 0 * u.deg)
    with backbone.begin() as conn:
        add_policy(conn, Policy("raw-to-base", "base", dataset_type="raw", priority=1))
        add_policy(conn, Policy("drp-to-archive", "archive", collection_pattern="drp/%", priority=2))
        add_policy(conn, Policy("equator-to-satellite", "satellite", cone=(0.0, 0.0, 2.0), priority=3))
        add_policy(
            conn, Policy("equator-urgent", "satellite", dataset_type="raw", cone=(0.0, 0.0, 1.0), priority=9)
        )
        assert plan(conn) == 5 + 1 + 2
        assert plan(conn) == 0  # planning again adds nothing
    expected_cone = {
        n + 1
        for n, (ra, dec) in enumerate(POINTINGS)
        if SkyCoord(ra * u.deg, dec * u.deg).separation(centre).deg <= 2.0
    }
    found = tasks(backbone)
    assert {seq for seq, site in found if site == "satellite"} == expected_cone == {4, 5}
    assert {seq for seq, site in found if site == "base"} == {1, 2, 3, 4, 5}
    assert {seq for seq, site in found if site == "archive"} == {0}  # the calexp (no exposure)
    assert all(found[seq, "satellite"] == 9 for seq in expected_cone)  # the highest priority policy wins
    with backbone.begin() as conn:
        archive_tasks = (
            conn.execute(
                sa.text(
                    "SELECT d.dataset_type FROM dms.replication_task t "
                    "JOIN dms.dataset d ON d.id = t.dataset_id "
                    "WHERE t.site = 'archive'"
                )
            )
            .scalars()
            .all()
        )
    assert archive_tasks == ["calexp"]
    report = replicate(backbone)
    assert report.copied == 8 and report.failed == [] and report.bytes_copied > 0
    assert verify(backbone).healthy
    assert backbone.store("satellite").absolute(backbone.list("raw")[4].path or "").exists()


def test_highest_priority_is_copied_first(backbone: Backbone, tmp_path: Path) -> None:
    archive_pointings(backbone, tmp_path)
    with backbone.begin() as conn:
        add_policy(conn, Policy("bulk", "base", dataset_type="raw", priority=0))
        add_policy(conn, Policy("north-first", "archive", cone=(200.0, 45.0, 1.0), priority=10))
    replicate(backbone, limit=1)
    with backbone.begin() as conn:
        done = (
            conn.execute(sa.text("SELECT site FROM dms.replication_task WHERE state = 'done'"))
            .scalars()
            .all()
        )
    assert done == ["archive"]


def test_bad_policies_are_refused(backbone: Backbone) -> None:
    with backbone.begin() as conn:
        with pytest.raises(BackboneError, match="unknown site 'moon'"):
            add_policy(conn, Policy("p", "moon"))
        with pytest.raises(BackboneError, match="radius"):
            add_policy(conn, Policy("p", "base", cone=(0.0, 95.0, 1.0)))
        add_policy(conn, Policy("p", "base"))
        with pytest.raises(BackboneError, match="names are unique"):
            add_policy(conn, Policy("p", "archive"))


def test_cli_policy_status_replicate(backbone: Backbone, tmp_path: Path) -> None:
    archive_pointings(backbone, tmp_path)
    base = ["--data-dir", str(backbone.deployment.data_dir)]
    runner = CliRunner()
    added = runner.invoke(
        main, ["backbone", "policy", "add", "all", "--site", "archive", "--type", "raw", *base]
    )
    assert added.exit_code == 0, added.output
    assert "all\t-> archive" in runner.invoke(main, ["backbone", "policy", "list", *base]).output
    status = runner.invoke(main, ["backbone", "status", *base])
    assert "replication to archive: 5 pending" in status.output and "site summit: 5 files" in status.output
    done = runner.invoke(main, ["backbone", "replicate", *base])
    assert done.exit_code == 0 and "copied 5 files" in done.output
    status = runner.invoke(main, ["backbone", "status", *base])
    assert "replication to archive: 5 done" in status.output and "pending" not in status.output
    sites = runner.invoke(main, ["backbone", "sites", *base]).output
    assert [line.split("\t")[0] for line in sites.splitlines()] == ["archive", "base", "satellite", "summit"]
