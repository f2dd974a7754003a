"""What a Dask worker runs for one batch task: dms.tasks.run_task, its log excerpt, and JSON outputs.

The worker never touches the database: it returns the outcome, and the runner records it (so a worker
killed mid-task leaves nothing half-written).
"""

from __future__ import annotations

import importlib
import json
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Lines of a task's log kept on the task row.
LOG_LINES = 20


class _ThreadLog(logging.Handler):
    """Keeps the last lines logged by one thread (a Dask worker runs several tasks at once)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.thread = threading.get_ident()
        self.lines: deque[str] = deque(maxlen=LOG_LINES)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.lines.append(self.format(record))


def _plain(value: Any) -> Any:
    """Numpy scalars and arrays as JSON numbers and lists."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def worker_address() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return socket.gethostname()


def execute(spec: dict[str, Any], modules: Sequence[str] = ()) -> dict[str, Any]:
    """Run one task of `spec` (see store.Claimed.spec); returns ok, outputs, error, log, seconds and the
    configuration hash. Any failure, of the task or of its outputs, is returned, never raised."""
    from dms.tasks import lookup_task, run_task

    task_logger = logging.getLogger("dms.task")
    if task_logger.level == logging.NOTSET:
        task_logger.setLevel(logging.INFO)
    handler = _ThreadLog()
    task_logger.addHandler(handler)
    result: dict[str, Any] = {
        "ok": False,
        "outputs": {},
        "error": None,
        "seconds": None,
        "config_hash": None,
        "started": time.time(),
    }
    try:
        for module in modules:
            importlib.import_module(module)
        task_class = lookup_task(spec["task"])
        outcome = run_task(
            task_class, spec["config"], data_id=spec["data_id"], raise_errors=False, **spec["arguments"]
        )
        result.update(seconds=outcome.seconds, config_hash=outcome.config_hash)
        if not outcome.ok:
            where = ", ".join(f"{k}={v}" for k, v in spec["data_id"].items())
            result["error"] = f"{spec['task']} [{where}] failed: {outcome.error}"
        if outcome.ok:
            result["outputs"] = _outputs(spec["outputs"], outcome.result, spec["task"])
            result["ok"] = True
    except Exception as exc:  # a bad spec, configuration or output: recorded on the task
        from dms.errors import DMSError

        result["error"] = str(exc) if isinstance(exc, DMSError) else f"{type(exc).__name__}: {exc}"
    finally:
        task_logger.removeHandler(handler)
    result["log"] = "\n".join(handler.lines) or None
    result["worker"] = worker_address()
    return result


def _outputs(names: Sequence[str], value: Any, task: str) -> dict[str, Any]:
    """The task's result as its declared outputs: the value itself for one output, a mapping naming each
    output for several. Values must be JSON (numpy numbers and arrays are converted)."""
    from dms.errors import DMSError

    if not names:
        return {}
    if len(names) == 1 and not (isinstance(value, dict) and set(value) == set(names)):
        values = {names[0]: value}
    elif isinstance(value, dict) and set(names) <= set(value):
        values = {name: value[name] for name in names}
    else:
        raise DMSError(
            f"task {task} declares outputs {list(names)} but returned "
            f"{type(value).__name__}: return a mapping with those keys"
        )
    try:
        return {name: json.loads(json.dumps(v, default=_plain)) for name, v in values.items()}
    except (TypeError, ValueError) as exc:
        raise DMSError(
            f"task {task}: an output is not JSON ({exc}); store large products in the Data "
            "Backbone and return a reference"
        ) from None
