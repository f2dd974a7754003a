"""Small tasks of the batch service itself: for smoke tests of a deployment, benchmarks and examples.

`batch.noop` measures the service's own overhead; `batch.sleep` holds a worker (priority and quota checks);
`batch.sum` adds its inputs, so a DAG's result can be checked by hand.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field

from dms.tasks import Task, TaskConfig, register_task


class NoopConfig(TaskConfig):
    """No settings."""


@register_task
class NoopTask(Task[NoopConfig, None]):
    """Do nothing (measures the batch service's overhead per task)."""

    name = "batch.noop"
    ConfigClass = NoopConfig

    def run(self, **_: Any) -> None:
        return None


class SleepConfig(TaskConfig):
    seconds: float = Field(
        default=1.0, ge=0, le=86_400, description="How long to hold the worker, in seconds."
    )


@register_task
class SleepTask(Task[SleepConfig, float]):
    """Hold a worker for a while (returns the seconds slept)."""

    name = "batch.sleep"
    ConfigClass = SleepConfig

    def run(self, **_: Any) -> float:
        time.sleep(self.config.seconds)
        return self.config.seconds


class SumConfig(TaskConfig):
    offset: float = Field(default=0.0, description="Added to the sum.")


@register_task
class SumTask(Task[SumConfig, float]):
    """Add the numbers given (inputs or arguments, numbers or lists of numbers) and the offset."""

    name = "batch.sum"
    ConfigClass = SumConfig

    def run(self, **values: Any) -> float:
        total = self.config.offset
        for value in values.values():
            total += sum(value) if isinstance(value, list) else value
        return total
