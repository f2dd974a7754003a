"""The Data Backbone client: put, get, find and list datasets by data ID, at any site.

backbone = Backbone(Deployment.open())
backbone.put(table, "objectTable", {"instrument": "LSSTCam", "tract": 9813}, run="u/me/test",
             dimensions=["instrument", "tract"])
table = backbone.get("objectTable", {"instrument": "LSSTCam", "tract": 9813})   # a pyarrow Table
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from dms.deployment import Deployment
from dms.services.backbone import checksums, registry, sites
from dms.services.backbone.errors import ChecksumMismatchError, DatasetNotFoundError, StoreError
from dms.services.backbone.formats import Format, format_for_object, format_for_path, format_named
from dms.services.backbone.registry import DatasetRef
from dms.services.backbone.store import Store, StoredFile


class Backbone:
    """A Data Backbone over one deployment. `site` is where `put` writes and `get` reads."""

    def __init__(
        self,
        deployment: Deployment,
        *,
        site: str = sites.PRIMARY_SITE,
        fsync: bool = True,
        checksum: str = checksums.DEFAULT,
    ) -> None:
        self.deployment = deployment
        self.site = site
        self.fsync = fsync
        self.checksum = checksum
        self._stores: dict[str, Store] = {}
        with deployment.connect() as conn:  # checks the schema version, once
            sites.ensure_default_sites(conn, deployment.data_dir)
            conn.commit()

    @contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        """A transaction on the control database (committed on success, rolled back on error)."""
        with self.deployment.engine().begin() as conn:
            yield conn

    def store(self, site: str | None = None) -> Store:
        name = site or self.site
        if name not in self._stores:
            with self.begin() as conn:
                root = sites.site(conn, name).root
            self._stores[name] = Store(root, fsync=self.fsync, checksum=self.checksum)
        return self._stores[name]

    # ---- writing ------------------------------------------------------------------------------------

    def put(
        self,
        obj: Any,
        dataset_type: str,
        data_id: dict[str, Any],
        *,
        run: str,
        dimensions: list[str] | None = None,
    ) -> tuple[DatasetRef, bool]:
        """Store `obj` (a file path, an astropy HDUList/HDU or a pyarrow/astropy Table) as a dataset.

        `dimensions` registers a new dataset type. Returns (ref, created): putting the same contents again
        is a no-op; different contents under the same data ID raise DatasetConflictError.
        """
        tag = str(registry.dataset_id(dataset_type, run, data_id))
        if isinstance(obj, str | Path):
            path = Path(obj)
            fmt, suffix = format_for_path(path)
            stored = self.store().put_file(path, suffix, tag)
            label = str(path)
        else:
            fmt = format_for_object(obj)
            stored = self.store().put_bytes(fmt.write(obj), fmt.suffixes[0], tag)
            label = f"{dataset_type} object"
        return self.register(stored, fmt, dataset_type, data_id, run=run, dimensions=dimensions, label=label)

    def register(
        self,
        stored: StoredFile,
        fmt: Format,
        dataset_type: str,
        data_id: dict[str, Any],
        *,
        run: str,
        dimensions: list[str] | None = None,
        label: str,
    ) -> tuple[DatasetRef, bool]:
        """Register a file already in this site's store; an unregistered new file is removed on error."""
        try:
            with self.begin() as conn:
                store = self.store()
                if dimensions is not None:
                    registry.ensure_dataset_type(conn, dataset_type, dimensions, fmt.storage_class)
                dims = registry.dataset_type_dimensions(conn, dataset_type)
                registry.check_data_id(dims, data_id, dataset_type)
                registry.ensure_run(conn, run)
                ref, created = registry.register_file(
                    conn,
                    dataset_type=dataset_type,
                    run=run,
                    data_id=data_id,
                    stored=stored,
                    fmt=fmt,
                    site=self.site,
                    label=label,
                    rehash=lambda algorithm: store.checksum(stored.path, algorithm)[1],
                )
        except BaseException:
            self.discard_if_unreferenced(stored.path)
            raise
        if ref.path != stored.path:  # already stored under another checksum algorithm
            self.discard_if_unreferenced(stored.path)
        return ref, created

    def discard_if_unreferenced(self, path: str, site: str | None = None) -> None:
        """Remove a stored file no datastore record names (after a failed registration)."""
        name = site or self.site
        with self.begin() as conn:
            used = conn.execute(
                sa.text("SELECT 1 FROM dms.datastore_record WHERE site = :s AND path = :p"),
                {"s": name, "p": path},
            ).first()
        if used is None:
            self.store(name).remove(path)

    # ---- reading ------------------------------------------------------------------------------------

    def find(
        self, dataset_type: str, data_id: dict[str, Any], collections: list[str] | None = None
    ) -> DatasetRef | None:
        with self.begin() as conn:
            return registry.find(conn, dataset_type, data_id, collections, self.site)

    def list(
        self,
        dataset_type: str | None = None,
        *,
        run: str | None = None,
        where: dict[str, Any] | None = None,
        limit: int | None = None,
    ) -> builtins.list[DatasetRef]:
        """Datasets of a type and run matching a partial data ID (`where`), at this site."""
        with self.begin() as conn:
            return registry.list_datasets(
                conn, site=self.site, dataset_type=dataset_type, run=run, where=where, limit=limit
            )

    def read_bytes(self, ref: DatasetRef) -> bytes:
        """The bytes of a dataset's file at this site, checked against the recorded checksum."""
        if ref.path is None:
            raise DatasetNotFoundError(
                f"dataset {ref.id} ({ref.dataset_type} {registry.canonical_data_id(ref.data_id)}) has no "
                f"copy at site {self.site!r}: replicate it there or read from another site"
            )
        try:
            data = self.store().absolute(ref.path).read_bytes()
        except FileNotFoundError as exc:
            raise StoreError(f"dataset {ref.id}: file {ref.path} is missing at site {self.site!r}") from exc
        if checksums.of_bytes(data, ref.checksum_algorithm or checksums.DEFAULT) != ref.checksum:
            raise ChecksumMismatchError(
                f"dataset {ref.id}: file {ref.path} at site {self.site!r} does not match its recorded "
                "checksum (corrupted); restore it from another site's replica"
            )
        return data

    def get(
        self, dataset_type: str, data_id: dict[str, Any], collections: builtins.list[str] | None = None
    ) -> Any:
        """The dataset as a Python object: an astropy HDUList (FITS) or a pyarrow Table (Parquet)."""
        ref = self.find(dataset_type, data_id, collections)
        if ref is None:
            where = ", ".join(collections) if collections else "any run"
            raise DatasetNotFoundError(
                f"no {dataset_type} with data ID {registry.canonical_data_id(data_id)} in {where}"
            )
        return format_named(ref.file_format or "").read(self.read_bytes(ref))
