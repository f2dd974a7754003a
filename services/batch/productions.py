"""Productions the OCS (or an operator) can start by name: each turns typed parameters into a workflow.

A production is registered with its parameter model (a pydantic model, a description per field), so a
command's parameters are validated, and errors list the fields, before anything is submitted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dms.services.batch.errors import BatchError
from dms.services.batch.workflow import WorkflowFile


class ProductionParameters(BaseModel):
    """Base of every production's parameters: no unknown fields."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Production:
    name: str
    description: str
    parameters: type[ProductionParameters]
    build: Callable[[Any], WorkflowFile]


PRODUCTIONS: dict[str, Production] = {}


def register_production(
    name: str, parameters: type[ProductionParameters]
) -> Callable[[Callable[[Any], WorkflowFile]], Callable[[Any], WorkflowFile]]:
    """Register `build(parameters) -> WorkflowFile` as production `name`."""

    def decorate(build: Callable[[Any], WorkflowFile]) -> Callable[[Any], WorkflowFile]:
        PRODUCTIONS[name] = Production(name, (build.__doc__ or "").strip(), parameters, build)
        return build

    return decorate


def workflow_for(name: str, parameters: dict[str, Any]) -> WorkflowFile:
    """The workflow of production `name` with `parameters`; BatchError naming the problem otherwise."""
    production = PRODUCTIONS.get(name)
    if production is None:
        raise BatchError(f"unknown production {name!r}; known productions: {', '.join(sorted(PRODUCTIONS))}")
    try:
        values = production.parameters.model_validate(parameters)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(parameters)'}: {err['msg']}"
            for err in exc.errors()[:10]
        )
        fields = ", ".join(production.parameters.model_fields)
        raise BatchError(
            f"invalid parameters of production {name!r}: {problems} (fields: {fields})"
        ) from None
    return production.build(values)


class SmokeParameters(ProductionParameters):
    tasks: int = Field(default=10, ge=1, le=100_000, description="No-op tasks to run.")
    seconds: float = Field(default=0.0, ge=0, le=3600, description="Seconds each task holds its worker.")


@register_production("smoke", SmokeParameters)
def smoke(parameters: SmokeParameters) -> WorkflowFile:
    """Check the batch system end to end: `tasks` tasks that do nothing (or sleep), then one summing up."""
    tasks: list[dict[str, Any]] = [
        {
            "label": f"t{i}",
            "task": "batch.sleep",
            "config": {"seconds": parameters.seconds},
            "outputs": [f"t{i}"],
        }
        for i in range(parameters.tasks)
    ]
    tasks.append(
        {
            "label": "total",
            "task": "batch.sum",
            "inputs": {"xs": [f"t{i}" for i in range(parameters.tasks)]},
            "outputs": ["total"],
        }
    )
    return WorkflowFile.model_validate(
        {"name": "smoke", "production": "smoke", "priority": "ocs", "tasks": tasks}
    )


# Productions defined beside their tasks register on import (after the registry above exists).
import dms.services.cpp.production  # noqa: E402, F401
