"""UWS 1.1 XML documents (a job, and the job list), from the vo-models UWS models Rubin's services use."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic_xml import BaseXmlModel, element
from vo_models.uws import models as uws
from vo_models.uws.types import ErrorType, ExecutionPhase, UWSVersion
from vo_models.xlink import XlinkType

from dms.services.vo.uws import Job


class JobParameters(BaseXmlModel, tag="parameters", ns="uws", nsmap=uws.NSMAP):
    """The parameters of a TAP job as they were given: any names, one `uws:parameter` each.

    vo-models' own `Parameters` wants one model field per parameter name; a TAP job may carry any
    (UPLOAD parts, DALI extensions), so the list form is used."""

    parameter: list[uws.Parameter] = element(tag="parameter", default_factory=list)


def iso(when: datetime | None) -> str | None:
    """A UWS time as the job document writes it (vo-models: milliseconds and Z), so /destruction and the
    job document say the same text."""
    if when is None:
        return None
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _utc(when: datetime | None) -> datetime | None:
    """dms.job stores naive UTC; the models want the zone said."""
    return None if when is None else when.replace(tzinfo=UTC) if when.tzinfo is None else when


def job_model(job: Job, base: str) -> uws.JobSummary[JobParameters]:
    """The UWS job model of `job`; `base` is the job's URL."""
    results = []
    if job.phase == "COMPLETED":
        results.append(
            uws.ResultReference(
                id="result", type=XlinkType.SIMPLE, href=f"{base}/results/result", mime_type=job.result_format
            )
        )
    values: dict[str, Any] = {
        "job_id": job.job_id,
        "owner_id": job.owner_id,
        "phase": ExecutionPhase(job.phase),
        "quote": None,
        "creation_time": _utc(job.creation_time),
        "start_time": _utc(job.start_time),
        "end_time": _utc(job.end_time),
        "execution_duration": job.execution_duration,
        "destruction": _utc(job.destruction_time),
        "parameters": JobParameters(
            parameter=[uws.Parameter(id=k.lower(), value=v) for k, v in sorted(job.parameters.items())]
        ),
        "results": uws.Results(results=results),
        "version": UWSVersion.V1_1,
    }
    if job.run_id:
        values["run_id"] = job.run_id
    if job.phase == "ERROR":
        values["error_summary"] = uws.ErrorSummary(
            message=job.error_summary or "", type=ErrorType(job.error_type or "fatal"), has_detail=True
        )
    return uws.JobSummary[JobParameters](**values)


def job_xml(job: Job, base: str) -> str:
    """The UWS job document; `base` is the job's URL."""
    # exclude_unset: optional elements not given (runId, errorSummary) are left out rather than written
    # empty; the nillable ones given as None (ownerId, startTime, ...) are written xsi:nil as UWS wants.
    return _document(job_model(job, base))


def job_part_xml(job: Job, base: str, part: str) -> str:
    """One element of the job document as a document of its own (`results` or `parameters`, with the
    namespaces declared), for the job's /results and /parameters resources."""
    model = job_model(job, base)
    element = getattr(model, part)
    assert isinstance(element, BaseXmlModel)
    return _document(element)


def job_list_xml(jobs: list[Job], base: str) -> str:
    """The UWS job list; `base` is the job list's URL."""
    refs = []
    for j in jobs:
        values: dict[str, Any] = {
            "job_id": j.job_id,
            "type": XlinkType.SIMPLE,
            "href": f"{base}/{j.job_id}",
            "phase": ExecutionPhase(j.phase),
            "owner_id": j.owner_id,
            "creation_time": _utc(j.creation_time),
        }
        if j.run_id:
            values["run_id"] = j.run_id
        refs.append(uws.ShortJobDescription(**values))
    return _document(uws.Jobs(jobref=refs, version=UWSVersion.V1_1))


def _document(model: BaseXmlModel) -> str:
    body = model.to_xml(exclude_unset=True, encoding="unicode")
    assert isinstance(body, str)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n'
