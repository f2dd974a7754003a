"""Errors of the Batch Processing service."""

from __future__ import annotations

from dms.errors import DMSError


class BatchError(DMSError):
    """A batch request cannot be carried out (the message names the job, task or field)."""


class WorkflowError(BatchError):
    """A workflow file is malformed: it cannot be submitted at all (per-task problems are recorded on the
    tasks instead, so the rest of the job goes on)."""


class JobNotFoundError(BatchError):
    """No batch job has the given id."""
