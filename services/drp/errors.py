"""Errors of the Data Release Production (the message names the release, visit, detector or patch)."""

from __future__ import annotations

from dms.errors import DMSError


class DrpError(DMSError):
    """A DRP step cannot go on with its inputs."""
