"""Errors of the Science Platform's workspaces, groups and release states, with their HTTP status."""

from __future__ import annotations

from dms.errors import DMSError


class WorkspaceError(DMSError):
    """Bad input to a workspace, group or release operation (HTTP 400 unless said otherwise)."""

    status = 400


class NotFound(WorkspaceError):
    """No such table, user, group or share (for this caller: another's private table is not found)."""

    status = 404


class AlreadyExists(WorkspaceError):
    """A table, group or member that already exists."""

    status = 409


class QuotaExceeded(WorkspaceError):
    """The operation would take a workspace over its quota (nothing is stored)."""

    status = 413
