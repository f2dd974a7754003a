"""UWS 1.1 XML documents: a job, and the job list."""

from __future__ import annotations

from datetime import datetime
from xml.sax.saxutils import escape, quoteattr

from dms.services.vo.uws import Job

UWS_NS = "http://www.ivoa.net/xml/UWS/v1.0"
_NAMESPACES = (
    f'xmlns:uws="{UWS_NS}" xmlns:xlink="http://www.w3.org/1999/xlink" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
)


def iso(when: datetime | None) -> str | None:
    return None if when is None else when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _element(name: str, value: object | None) -> str:
    if value is None:
        return f'<uws:{name} xsi:nil="true"/>'
    return f"<uws:{name}>{escape(str(value))}</uws:{name}>"


def job_xml(job: Job, base: str) -> str:
    """The UWS job document; `base` is the job's URL."""
    parameters = "".join(
        f"<uws:parameter id={quoteattr(k.lower())}>{escape(v)}</uws:parameter>"
        for k, v in sorted(job.parameters.items())
    )
    results = (
        f'<uws:result id="result" xlink:type="simple" xlink:href={quoteattr(base + "/results/result")}'
        + (f" mime-type={quoteattr(job.result_format)}" if job.result_format else "")
        + "/>"
        if job.phase == "COMPLETED"
        else ""
    )
    error = (
        f'<uws:errorSummary type="{job.error_type or "fatal"}" hasDetail="true">'
        f"<uws:message>{escape(job.error_summary or '')}</uws:message></uws:errorSummary>"
        if job.phase == "ERROR"
        else ""
    )
    parts = [
        _element("jobId", job.job_id),
        _element("runId", job.run_id) if job.run_id else "",
        _element("ownerId", job.owner_id),
        _element("phase", job.phase),
        _element("quote", None),
        _element("creationTime", iso(job.creation_time)),
        _element("startTime", iso(job.start_time)),
        _element("endTime", iso(job.end_time)),
        _element("executionDuration", job.execution_duration),
        _element("destruction", iso(job.destruction_time)),
        f"<uws:parameters>{parameters}</uws:parameters>",
        f"<uws:results>{results}</uws:results>",
        error,
    ]
    head = f'<?xml version="1.0" encoding="UTF-8"?>\n<uws:job {_NAMESPACES} version="1.1">'
    return f"{head}{''.join(parts)}</uws:job>\n"


def job_list_xml(jobs: list[Job], base: str) -> str:
    refs = "".join(
        f'<uws:jobref id={quoteattr(j.job_id)} xlink:type="simple" '
        f"xlink:href={quoteattr(base + '/' + j.job_id)}>"
        f"{_element('phase', j.phase)}{_element('runId', j.run_id) if j.run_id else ''}"
        f"{_element('ownerId', j.owner_id)}{_element('creationTime', iso(j.creation_time))}</uws:jobref>"
        for j in jobs
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<uws:jobs {_NAMESPACES} version="1.1">{refs}</uws:jobs>\n'
    )
