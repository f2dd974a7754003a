"""Errors of the EFD: bad telemetry input, unknown topics or fields, bad transform configurations."""

from __future__ import annotations

from dms.errors import DMSError


class EFDError(DMSError):
    """An EFD request cannot be carried out."""


class EFDTopicError(EFDError):
    """A topic is unknown, or its field schema is invalid."""


class EFDInputError(EFDError):
    """Telemetry input is malformed or does not match its topic (nothing of it was stored)."""


class EFDTransformError(EFDError):
    """A transform configuration is invalid, or the transformation failed."""
