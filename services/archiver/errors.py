"""What goes wrong when archiving a raw file: one error per file, naming it and what would be valid."""

from __future__ import annotations

from dms.services.backbone.errors import BackboneError


class ArchiveError(BackboneError):
    """A file could not be archived; nothing of it was registered."""


class NotFitsError(ArchiveError):
    """The file is not a FITS file, or it is truncated."""


class HeaderError(ArchiveError):
    """Required header keys are missing or unreadable."""


class ExposureConflictError(ArchiveError):
    """The file's exposure clashes with an archived exposure (same id or obs id, different exposure)."""
