"""Watch mode: archive raw files as they appear in a directory (standing in for the camera's feed).

The directory is polled; a file is archived once its size and modification time have not changed for
`settle` seconds (the writer has finished). Each version of a file (path, size, mtime) is tried once, so
a bad file is reported once and a rewritten file is tried again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from dms.services.archiver.ingest import ArchiveResult, archive_files
from dms.services.backbone.client import Backbone

PATTERNS = ("*.fits", "*.fit", "*.fits.gz", "*.fits.fz")


def _candidates(directory: Path) -> dict[Path, tuple[int, float]]:
    found = {}
    for pattern in PATTERNS:
        for path in directory.rglob(pattern):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            found[path] = (stat.st_size, stat.st_mtime)
    return found


def watch(
    backbone: Backbone,
    directory: Path,
    *,
    interval: float = 1.0,
    settle: float = 2.0,
    once: bool = False,
    stop: Callable[[], bool] = lambda: False,
    report: Callable[[ArchiveResult], None] = lambda result: None,
) -> list[ArchiveResult]:
    """Archive settled files under `directory` until `stop()` (or after one scan with `once`)."""
    seen: dict[Path, tuple[int, float]] = {}
    stable_since: dict[Path, float] = {}
    tried: set[tuple[Path, int, float]] = set()
    results: list[ArchiveResult] = []
    while True:
        now = time.monotonic()
        ready = []
        for path, version in sorted(_candidates(directory).items()):
            if seen.get(path) != version:
                seen[path] = version
                stable_since[path] = now
            if (path, *version) in tried:
                continue
            if once or now - stable_since[path] >= settle:
                ready.append(path)
                tried.add((path, *version))
        for result in archive_files(backbone, ready):
            report(result)
            results.append(result)
        if once or stop():
            return results
        time.sleep(interval)
