"""Errors of the Prompt Processing service (each names the visit or detector and what was wrong)."""

from __future__ import annotations

from dms.errors import DMSError


class PromptError(DMSError):
    """A prompt processing problem (the base of the others)."""


class VisitEventError(PromptError):
    """A next-visit or visit-ready event that cannot be accepted as given (HTTP 400)."""


class VisitNotFoundError(PromptError):
    """A visit the service was never told about (HTTP 404)."""


class VisitStateError(PromptError):
    """An event that does not fit the visit's state, e.g. a repeated visit-ready (HTTP 409)."""


class DetectorInputError(PromptError):
    """What one detector needs is missing or unreadable: no template, a corrupt raw, a missing calibration,
    an unknown detector. Recorded for that detector; the rest of the visit goes on."""
