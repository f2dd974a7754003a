"""The Telemetry Gateway: QC measurements and alarms pushed to subscribers as they happen.

The stream is ``dms.gateway_event`` (appended by the QC trigger in commit order, announced by
``NOTIFY dms_gateway``); subscribers read it over HTTP as Server-Sent Events and resume after a reconnect
from the last event id they saw (``Last-Event-ID`` header or ``?after=``), so nothing is lost.
"""
