"""Errors of the APDB: each names the input or the stored rows it is about."""

from __future__ import annotations

from dms.errors import DMSError


class ApdbError(DMSError):
    """Any APDB failure."""


class ApdbInputError(ApdbError):
    """A frame, region or time given to the APDB that it cannot store or read (nothing was written)."""


class ApdbConflictError(ApdbError):
    """A store that would duplicate rows already in the APDB (the whole visit was rolled back)."""
