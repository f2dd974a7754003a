"""A content-addressed file store: one per Data Backbone site.

Files are named by their checksum and their dataset's id: ``objects/ab/cd/abcd...-<dataset id><suffix>``
(the registry keeps one dataset per file, so equal bytes of two datasets are two files). Files are
written to ``tmp/<pid>-<uuid>.part``, flushed to disk, and renamed into place, so a path under ``objects/``
always holds a complete file whose name starts with its checksum; an interrupted write leaves only a
temporary file
(removed by `clean_stale_temp` once its writer is gone). The registry, not the store, says which dataset a
file holds: an object that no datastore record names is an orphan (see `verify`).

Checksums (see `checksums`) are computed while copying: the kernel copies the file (copy_file_range)
while a second thread reads it from the page cache and checksums it, so archiving costs little more than
a plain copy.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from dms.services.backbone import checksums
from dms.services.backbone.errors import StoreError, StoreFullError

CHUNK_BYTES = 8 << 20
OBJECTS = "objects"
TMP = "tmp"


@dataclass(frozen=True)
class StoredFile:
    """A file in a store: its path relative to the store root, size and checksum (hex)."""

    path: str
    size_bytes: int
    checksum: str
    algorithm: str = checksums.DEFAULT


class Store:
    """The files of one site, under `root`. With `fsync` (the default) every file is on disk before it
    is renamed into place and recorded."""

    def __init__(self, root: Path, *, fsync: bool = True, checksum: str = checksums.DEFAULT) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self.algorithm = checksum
        checksums.new(checksum)  # unknown algorithms fail here, not half-way through a copy

    def object_path(self, checksum: str, tag: str, suffix: str) -> str:
        """Where a file with this checksum lives, relative to the root; `tag` (the dataset id) keeps two
        datasets with identical bytes in separate files, as the registry requires one dataset per file."""
        return f"{OBJECTS}/{checksum[:2]}/{checksum[2:4]}/{checksum}-{tag}{suffix}"

    def absolute(self, path: str) -> Path:
        return self.root / path

    def put_file(self, source: Path, suffix: str, tag: str) -> StoredFile:
        """Copy `source` into the store, computing its checksum on the way."""
        try:
            with open(source, "rb", buffering=0) as src:
                return self._put_stream(src, lambda checksum: self.object_path(checksum, tag, suffix))
        except FileNotFoundError as exc:
            raise StoreError(f"{source}: no such file") from exc

    def put_bytes(self, data: bytes, suffix: str, tag: str) -> StoredFile:
        """Store `data` (a serialized dataset)."""
        return self._put_stream(io.BytesIO(data), lambda checksum: self.object_path(checksum, tag, suffix))

    def copy_to(self, path: str, other: Store, algorithm: str) -> StoredFile:
        """Copy one of this store's files to the same path in `other`, checksummed with `algorithm`."""
        try:
            with open(self.root / path, "rb", buffering=0) as src:
                return other._put_stream(src, lambda checksum: path, algorithm)
        except FileNotFoundError as exc:
            raise StoreError(f"{self.root / path}: no such file") from exc

    def _put_stream(
        self, src: BinaryIO, path_for: Callable[[str], str], algorithm: str | None = None
    ) -> StoredFile:
        algorithm = algorithm or self.algorithm
        tmp_dir = self.root / TMP
        tmp_dir.mkdir(parents=True, exist_ok=True)
        tmp = tmp_dir / f"{os.getpid()}-{uuid.uuid4().hex}.part"
        try:
            size, checksum = self._copy_hashing(src, tmp, algorithm)
            path = path_for(checksum)
            final = self.root / path
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists() and Path(path).name.startswith(checksum) and final.stat().st_size == size:
                tmp.unlink()  # already stored by an earlier, unregistered attempt: the same bytes
            else:
                os.replace(tmp, final)
                if self.fsync:
                    _fsync_dir(final.parent)
            return StoredFile(path, size, checksum, algorithm)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno == errno.ENOSPC:
                raise StoreFullError(
                    f"store {self.root} is full (no space left on device); the partial file was removed "
                    "and nothing was registered: free space or add storage, then retry"
                ) from exc
            raise StoreError(f"cannot write to store {self.root}: {exc.strerror or exc}") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _copy_hashing(self, src: BinaryIO, dest: Path, algorithm: str) -> tuple[int, str]:
        """Copy src to dest, hashing the bytes on a second thread while they are copied."""
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            try:
                in_fd = src.fileno()
            except (AttributeError, OSError, io.UnsupportedOperation):
                size, checksum = _copy_buffers(src, fd, checksums.new(algorithm))
            else:
                size, checksum = _copy_kernel(in_fd, fd, checksums.new(algorithm))
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        return size, checksum

    def checksum(self, path: str, algorithm: str) -> tuple[int, str]:
        """(size, checksum) of a stored file, read back from disk."""
        digest = checksums.new(algorithm)
        size = 0
        with open(self.root / path, "rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                digest.update(chunk)
                size += len(chunk)
        return size, digest.hexdigest()

    def remove(self, path: str) -> None:
        (self.root / path).unlink(missing_ok=True)

    def iter_objects(self) -> Iterator[str]:
        """Every stored file's path, relative to the root."""
        base = self.root / OBJECTS
        if base.exists():
            for p in sorted(base.rglob("*")):
                if p.is_file():
                    yield p.relative_to(self.root).as_posix()

    def clean_stale_temp(self) -> list[Path]:
        """Remove temporary files left by writers that no longer run (killed mid-file)."""
        removed = []
        tmp_dir = self.root / TMP
        for part in tmp_dir.glob("*.part") if tmp_dir.exists() else []:
            pid = part.name.split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                part.unlink(missing_ok=True)
                removed.append(part)
        return removed

    def temp_files(self) -> list[Path]:
        tmp_dir = self.root / TMP
        return sorted(tmp_dir.glob("*.part")) if tmp_dir.exists() else []

    def free_bytes(self) -> int:
        self.root.mkdir(parents=True, exist_ok=True)
        return shutil.disk_usage(self.root).free


def _copy_kernel(in_fd: int, out_fd: int, digest: checksums.Digest) -> tuple[int, str]:
    """Copy a file in the kernel (copy_file_range: no trip through Python buffers) while a second thread
    reads the same bytes from the page cache and hashes them; both release the GIL."""

    def hash_source() -> int:
        offset = 0
        while chunk := os.pread(in_fd, CHUNK_BYTES, offset):
            digest.update(chunk)
            offset += len(chunk)
        return offset

    with ThreadPoolExecutor(max_workers=1) as hasher:
        hashed = hasher.submit(hash_source)
        copied = 0
        try:
            while n := _copy_range(in_fd, out_fd, CHUNK_BYTES, copied):
                copied += n
        finally:
            hashed_size = hashed.result()
    if hashed_size != copied:
        raise StoreError(
            f"the source changed while it was copied ({copied} bytes copied, {hashed_size} hashed)"
        )
    return copied, digest.hexdigest()


def _copy_range(in_fd: int, out_fd: int, count: int, offset: int) -> int:
    try:
        return os.copy_file_range(in_fd, out_fd, count, offset)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    chunk = os.pread(in_fd, count, offset)  # file systems without copy_file_range
    _write_all(out_fd, memoryview(chunk))
    return len(chunk)


def _copy_buffers(src: BinaryIO, fd: int, digest: checksums.Digest) -> tuple[int, str]:
    """Copy a stream in chunks, hashing each chunk on a second thread while it is written."""
    buffers = [bytearray(CHUNK_BYTES), bytearray(CHUNK_BYTES)]
    size = 0
    with ThreadPoolExecutor(max_workers=1) as hasher:
        pending = None
        turn = 0
        while n := src.readinto(memoryview(buffers[turn])):  # type: ignore[attr-defined]
            chunk = memoryview(buffers[turn])[:n]
            if pending is not None:
                pending.result()  # the other buffer is free again once its hash is done
            pending = hasher.submit(digest.update, chunk)
            _write_all(fd, chunk)
            size += n
            turn = 1 - turn
        if pending is not None:
            pending.result()
    return size, digest.hexdigest()


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
