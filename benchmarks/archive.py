"""Archive and replication throughput against a plain file copy of the same files, in the same run.

    python benchmarks/archive.py [--files 8] [--mb 64] [--repeats 3]

Writes LSSTCam-style raws (16 amplifier HDUs each) to a scratch directory, then times, best of
--repeats, each peer over the same files:
  copy            shutil.copyfile of every file (the physical limit; no checksum, no database)
  archive         `dms archive`: header translation, copy with CRC32C, registry + ConsDB + ObsCore rows
  archive sha256  the same with SHA-256 checksums (`--checksum sha256`)
  replicate       `dms backbone replicate` summit -> base: copy, checksum checked, replica recorded
each without and with fsync (copy+fsync flushes every file, as the archive does by default).
Prints MB/s, files/s and the ratio to the matching copy. Target: archive >= 70% of copy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from astropy.io import fits

from dms import migrate
from dms.deployment import Deployment
from dms.services.archiver.ingest import archive_files
from dms.services.backbone import Backbone
from dms.services.backbone.replication import Policy, add_policy, replicate


def write_raws(directory: Path, files: int, mb: float) -> list[Path]:
    """LSSTCam-style raws of about `mb` MB each: 16 int32 amplifiers with noise (incompressible)."""
    rng = np.random.default_rng(42)
    pixels = int(mb * 1e6 / 4 / 16)
    ny = 500
    nx = max(1, pixels // ny)
    paths = []
    for n in range(files):
        primary = fits.PrimaryHDU()
        primary.header.update(
            {
                "INSTRUME": "LSSTCam",
                "TIMESYS": "TAI",
                "OBSID": f"MC_O_20250501_{n + 1:06d}",
                "DAYOBS": 20250501,
                "SEQNUM": n + 1,
                "DATE-BEG": f"2025-05-02T01:{n // 60:02d}:{n % 60:02d}.000",
                "DATE-END": f"2025-05-02T01:{n // 60:02d}:{n % 60:02d}.500",
                "EXPTIME": 0.5,
                "FILTER": "r_57",
                "FILTBAND": "r",
                "RA": 150.0,
                "DEC": 2.0,
                "RAFTBAY": "R22",
                "CCDSLOT": "S11",
            }
        )
        amps = [fits.ImageHDU(rng.integers(0, 2**20, size=(ny, nx), dtype=np.int32)) for _ in range(16)]
        path = directory / f"raw_{n:04d}.fits"
        fits.HDUList([primary, *amps]).writeto(path)
        paths.append(path)
    return paths


def copy_files(paths: list[Path], dest: Path, fsync: bool) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for path in paths:
        target = dest / path.name
        shutil.copyfile(path, target)
        if fsync:
            fd = os.open(target, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)


def best(run: Callable[[], None], reset: Callable[[], None], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        reset()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def reset_backbone(deployment: Deployment) -> None:
    with deployment.engine().begin() as conn:
        conn.execute(
            sa.text(
                'TRUNCATE dms.replication_task, dms.datastore_record, dms.dataset, ivoa."ObsCore", '
                "cdb_lsstcam.ccdexposure, cdb_lsstcam.exposure, dms.exposure CASCADE"
            )
        )
    shutil.rmtree(deployment.data_dir / "backbone" / "summit" / "objects", ignore_errors=True)
    shutil.rmtree(deployment.data_dir / "backbone" / "base" / "objects", ignore_errors=True)


def run_mode(
    deployment: Deployment, paths: list[Path], root: Path, fsync: bool, repeats: int
) -> list[tuple[str, float, str]]:
    """Time copy, archive (CRC32C and SHA-256) and replicate, all with or all without fsync."""
    label = "fsync" if fsync else "no fsync"
    copy_dir = root / "copy"
    t_copy = best(lambda: copy_files(paths, copy_dir, fsync), lambda: shutil.rmtree(copy_dir, True), repeats)

    def archive_with(backbone: Backbone) -> Callable[[], None]:
        def run() -> None:
            results = archive_files(backbone, paths)
            assert all(r.status == "archived" for r in results), [r.message for r in results]

        return run

    strong = Backbone(deployment, fsync=fsync, checksum="sha256")
    t_sha256 = best(archive_with(strong), lambda: reset_backbone(deployment), repeats)
    backbone = Backbone(deployment, fsync=fsync)  # crc32c, the default
    t_archive = best(archive_with(backbone), lambda: reset_backbone(deployment), repeats)
    with deployment.engine().begin() as conn:
        if not conn.execute(sa.text("SELECT 1 FROM dms.replication_policy WHERE name = 'bench'")).first():
            add_policy(conn, Policy("bench", "base", dataset_type="raw"))

    def reset_replicas() -> None:
        with deployment.engine().begin() as conn:
            conn.execute(sa.text("DELETE FROM dms.datastore_record WHERE site = 'base'"))
            conn.execute(sa.text("DELETE FROM dms.replication_task"))
        shutil.rmtree(deployment.data_dir / "backbone" / "base" / "objects", ignore_errors=True)

    def run_replicate() -> None:
        report = replicate(backbone)
        assert report.copied == len(paths) and not report.failed

    t_replicate = best(run_replicate, reset_replicas, repeats)
    return [
        (f"copy ({label})", t_copy, ""),
        (f"archive ({label})", t_archive, f"{t_copy / t_archive:.0%} of copy"),
        (f"archive sha256 ({label})", t_sha256, f"{t_copy / t_sha256:.0%} of copy"),
        (f"replicate ({label})", t_replicate, f"{t_copy / t_replicate:.0%} of copy"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument(
        "--mb", type=float, default=64.0, help="size of each file (MB; an LSSTCam raw is ~65)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dms-bench-") as scratch:
        root = Path(scratch)
        (root / "raws").mkdir()
        paths = write_raws(root / "raws", args.files, args.mb)
        total_mb = sum(p.stat().st_size for p in paths) / 1e6
        deployment = Deployment.create(root / "dep")
        migrate.upgrade(deployment)
        rows: list[tuple[str, float, str]] = []
        for fsync in (False, True):
            rows += run_mode(deployment, paths, root, fsync, args.repeats)
        deployment.stop()
    print(f"{args.files} files, {total_mb:.0f} MB in total, best of {args.repeats}")
    print(f"{'peer':<24}{'MB/s':>10}{'files/s':>10}  ratio")
    for name, seconds, ratio in rows:
        print(f"{name:<24}{total_mb / seconds:>10.0f}{args.files / seconds:>10.1f}  {ratio}")


if __name__ == "__main__":
    sys.exit(main())
