"""The errors of `dms load` (here so that every loader module can raise them without import cycles)."""

from __future__ import annotations

from dms.errors import DMSError


class LoadError(DMSError):
    """A load that cannot proceed; nothing it started is visible."""
