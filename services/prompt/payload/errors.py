"""Errors of the Alert Production payload: each names the visit, detector and input at fault."""

from __future__ import annotations

from dms.errors import DMSError


class PayloadError(DMSError):
    """The payload cannot process a detector's inputs (the prompt service records the message)."""


class CorruptRawError(PayloadError):
    """A raw file is unreadable, truncated, or lacks the image or the keywords ISR needs."""


class CalibrationError(PayloadError):
    """A master calibration (bias, flat) is missing or does not match the raw (detector, shape, band)."""


class UnknownDetectorError(PayloadError):
    """A detector number the camera does not have."""


class NoTemplateError(PayloadError):
    """No template covers the detector: nothing to subtract (the visit's detector gets no DiaSources)."""


class SubtractionError(PayloadError):
    """PSF matching failed (too few usable stars, singular kernel fit)."""
