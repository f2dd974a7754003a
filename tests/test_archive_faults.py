"""Faults: the archiver or the replicator killed (SIGKILL) mid-file, a full disk, a corrupted file.

Afterwards nothing is lost and nothing is half-registered: the registry holds whole datasets only, the
store at most unregistered copies (orphans) that `verify` reports, and rerunning completes the work."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from astropy.io import fits
from backbone_support import lsstcam_raw

from dms.deployment import Deployment
from dms.services.archiver.ingest import archive_file, archive_files
from dms.services.backbone import Backbone, store
from dms.services.backbone.errors import StoreFullError
from dms.services.backbone.replication import Policy, add_policy, replicate
from dms.services.backbone.verify import verify

pytest_plugins = ["backbone_support"]  # the deployment and backbone fixtures


def counts(backbone: Backbone) -> tuple[int, int, int, int]:
    """(datasets, datastore records, exposures, ObsCore rows)."""
    with backbone.begin() as conn:
        return tuple(  # type: ignore[return-value]
            conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("dms.dataset", "dms.datastore_record", "dms.exposure", 'ivoa."ObsCore"')
        )


def dms_subprocess(deployment: Deployment, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DMS_DATABASE_URL": str(deployment.config.database_url)}
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "dms"), "--data-dir", str(deployment.data_dir), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def wait_for(
    condition: Callable[[], bool], what: str, proc: subprocess.Popen[bytes], timeout: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            output = proc.communicate()[0].decode()
            raise AssertionError(f"timed out waiting for {what}; the process said: {output}")
        time.sleep(0.05)


def blocked_on_lock(deployment: Deployment) -> bool:
    with deployment.engine().connect() as conn:
        return bool(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
            ).scalar_one()
        )


def test_archiver_killed_between_storing_and_registering(
    backbone: Backbone, deployment: Deployment, tmp_path: Path
) -> None:
    raw = lsstcam_raw(tmp_path / "raw.fits", amp_shape=(200, 100))
    with psycopg.connect(str(deployment.config.database_url)) as locker:
        locker.execute("LOCK TABLE dms.dataset IN ACCESS EXCLUSIVE MODE")  # registration will wait here
        proc = dms_subprocess(deployment, "archive", str(raw))
        wait_for(lambda: blocked_on_lock(deployment), "the archiver to wait for the registry", proc)
        assert len(list(backbone.store().iter_objects())) == 1  # the file is stored, not yet registered
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        locker.rollback()
    assert counts(backbone) == (0, 0, 0, 0)  # nothing half-registered
    report = verify(backbone)
    assert report.healthy and len(report.orphans) == 1
    assert archive_file(backbone, raw).status == "archived"  # rerun: completes, reusing the stored copy
    assert counts(backbone) == (1, 1, 1, 1)
    report = verify(backbone)
    assert report.healthy and report.orphans == [] and report.ok == 1


def test_temporary_files_of_killed_writers_are_cleaned(backbone: Backbone) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    tmp = backbone.store().root / store.TMP
    tmp.mkdir(parents=True)
    stale = tmp / f"{dead.pid}-abc.part"
    stale.write_bytes(b"half a file")
    mine = tmp / f"{os.getpid()}-def.part"  # a live writer's file is kept
    mine.write_bytes(b"being written")
    orphan = backbone.store().put_bytes(b"SIMPLE  =                    T", ".fits", "unregistered")
    report = verify(backbone, clean=True)
    assert report.removed_temp == 1 and not stale.exists() and mine.exists()
    assert (
        report.orphans == [("summit", orphan.path)] and report.removed_orphans == 0
    )  # young: may be in flight
    assert verify(backbone, clean=True, orphan_age=0).removed_orphans == 1
    assert list(backbone.store().iter_objects()) == []


def test_disk_full_leaves_nothing_behind(
    backbone: Backbone, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = lsstcam_raw(tmp_path / "raw.fits")
    real_write_all, real_copy_range = store._write_all, store._copy_range

    def full_after_one_block(fd: int, data: memoryview) -> None:
        real_write_all(fd, data[:2880])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def full_copy(in_fd: int, out_fd: int, count: int, offset: int) -> int:
        real_copy_range(in_fd, out_fd, 2880, offset)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    # The file system fills up after one FITS block, on either copy path (kernel copy or buffers).
    monkeypatch.setattr(store, "_write_all", full_after_one_block)
    monkeypatch.setattr(store, "_copy_range", full_copy)
    [result] = archive_files(backbone, [raw])
    assert result.status == "failed" and "no space left on device" in result.message
    with pytest.raises(StoreFullError):
        backbone.put(raw, "raw_copy", {"instrument": "LSSTCam"}, run="r", dimensions=["instrument"])
    with pytest.raises(StoreFullError):
        backbone.put(
            fits.open(raw), "raw_object", {"instrument": "LSSTCam"}, run="r", dimensions=["instrument"]
        )
    assert counts(backbone) == (0, 0, 0, 0)
    assert list(backbone.store().iter_objects()) == [] and backbone.store().temp_files() == []
    monkeypatch.setattr(store, "_write_all", real_write_all)
    monkeypatch.setattr(store, "_copy_range", real_copy_range)
    assert archive_file(backbone, raw).status == "archived"  # space freed: the same file archives


def test_replicator_killed_mid_copy_resumes(
    backbone: Backbone, deployment: Deployment, tmp_path: Path
) -> None:
    archive_files(backbone, [lsstcam_raw(tmp_path / f"{n}.fits", seq_num=n) for n in range(1, 6)])
    with backbone.begin() as conn:
        add_policy(conn, Policy("to-base", "base", dataset_type="raw"))
    with psycopg.connect(str(deployment.config.database_url)) as locker:
        # Recording a replica waits on this lock: the replicator copies a file, then blocks.
        locker.execute("LOCK TABLE dms.datastore_record IN SHARE ROW EXCLUSIVE MODE")
        proc = dms_subprocess(deployment, "backbone", "replicate")
        wait_for(lambda: blocked_on_lock(deployment), "the replicator to wait before recording a copy", proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        locker.rollback()
    with backbone.begin() as conn:
        states = dict(
            conn.execute(sa.text("SELECT state, count(*) FROM dms.replication_task GROUP BY state")).all()
        )
        at_base = conn.execute(
            sa.text("SELECT count(*) FROM dms.datastore_record WHERE site = 'base'")
        ).scalar_one()
    assert states == {"pending": 5} and at_base == 0
    assert len(verify(backbone, "base").orphans) == 1  # the copy made before the kill, unrecorded
    report = replicate(backbone)
    assert report.copied == 5 and report.failed == []
    final = verify(backbone)
    assert final.healthy and final.orphans == [] and final.ok == 10


def test_corrupted_copy_is_detected_and_not_replicated(backbone: Backbone, tmp_path: Path) -> None:
    archive_files(backbone, [lsstcam_raw(tmp_path / f"{n}.fits", seq_num=n) for n in (1, 2)])
    with backbone.begin() as conn:
        add_policy(conn, Policy("to-archive", "archive", dataset_type="raw"))
    ref = backbone.list("raw")[0]
    path = backbone.store().absolute(ref.path or "")
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01
    path.write_bytes(bytes(data))
    report = verify(backbone)
    assert [p for _, p, _ in report.corrupt] == [ref.path]
    result = replicate(backbone, max_attempts=2, retry_delay=0.01)
    assert result.copied == 1 and len(result.failed) == 1 and "corrupted" in result.failed[0][2]
    with backbone.begin() as conn:
        failed = conn.execute(
            sa.text("SELECT attempts, last_error FROM dms.replication_task WHERE state = 'failed'")
        ).one()
    assert failed.attempts == 2 and "ChecksumMismatchError" in failed.last_error
    assert verify(backbone, "archive").healthy  # the bad bytes never became a replica
