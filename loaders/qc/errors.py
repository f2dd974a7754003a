"""Errors of quality control: bad metrics, thresholds, units and measurements."""

from __future__ import annotations

from dms.errors import DMSError


class QCError(DMSError):
    """A quality control request cannot be carried out."""


class QCUnitError(QCError):
    """A unit astropy does not know, or two units that do not convert into each other."""
