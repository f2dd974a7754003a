"""What goes wrong in the Data Backbone, as one small hierarchy under DMSError."""

from __future__ import annotations

from dms.errors import DMSError


class BackboneError(DMSError):
    """A Data Backbone operation failed; nothing stored was lost or half-registered."""


class DataIdError(BackboneError):
    """A data ID does not match its dataset type's dimensions."""


class DatasetNotFoundError(BackboneError):
    """No dataset matches a data ID in the collections searched."""


class DatasetConflictError(BackboneError):
    """A dataset with this data ID already exists in the run with different contents."""


class StoreError(BackboneError):
    """A file could not be written to or read from a site's store."""


class StoreFullError(StoreError):
    """The store's file system is full (ENOSPC); the partial file was removed."""


class ChecksumMismatchError(StoreError):
    """A stored file's contents no longer match the checksum recorded when it was stored."""


class SiteError(BackboneError):
    """A site is unknown or misconfigured."""
