"""Checksum algorithms of stored files, by name (datastore_record.checksum_algorithm).

crc32c (the default) is what object stores use for transfer integrity (Google Cloud Storage, S3's
additional checksums): computed in hardware at many GB/s, so checksumming never limits archiving. sha256
is available where a cryptographic digest is wanted (`Backbone(checksum="sha256")`, `--checksum sha256`),
at roughly the speed of a page-cache copy on current CPUs. Both detect the corruption `verify` looks for.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

import google_crc32c

from dms.services.backbone.errors import BackboneError

DEFAULT = "crc32c"


class Digest(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...

    def hexdigest(self) -> str: ...


class _Crc32c:
    def __init__(self) -> None:
        self._checksum = google_crc32c.Checksum()

    def update(self, data: bytes | memoryview, /) -> None:
        self._checksum.update(bytes(data) if isinstance(data, memoryview) else data)

    def hexdigest(self) -> str:
        return bytes(self._checksum.digest()).hex()


def new(algorithm: str) -> Digest:
    """A fresh digest of `algorithm` (crc32c or sha256)."""
    if algorithm == "crc32c":
        return _Crc32c()
    if algorithm == "sha256":
        return hashlib.sha256()
    raise BackboneError(f"unknown checksum algorithm {algorithm!r}; choose crc32c or sha256")


def of_bytes(data: bytes, algorithm: str) -> str:
    digest = new(algorithm)
    digest.update(data)
    return digest.hexdigest()
