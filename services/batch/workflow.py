"""Workflow files: a job's tasks, their configurations and the datasets each reads and writes.

    name: daily-calibration
    production: cpp-daily
    priority: cpp                       # default class of the tasks
    tasks:
      - label: bias-94
        task: cpp.master_bias
        config: {sigma: 3.0}
        data_id: {instrument: LSSTCam, detector: 94}
        args: {frames: [...]}            # literal JSON arguments of run()
        outputs: [bias-94]               # datasets the task writes
      - label: flat-94-r
        task: cpp.master_flat
        inputs: {bias: bias-94}          # run() argument -> dataset (or list of datasets) it reads
        after: [other-label]             # ordering without a dataset

A task runs once the tasks writing its inputs are done (the DAG is quantum-graph-like: edges come from the
datasets). Problems of one task (unknown task, configuration failing validation, a missing input, a
dependency cycle) do not refuse the job: `plan` returns them as errors to record on those tasks (their
downstream tasks become upstream_failed) and the rest of the job goes on. Only a malformed file is refused.
"""

from __future__ import annotations

import graphlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dms.errors import DMSError
from dms.services.batch.classes import PriorityClass
from dms.services.batch.errors import WorkflowError

#: Largest workflow accepted in one submission.
MAX_TASKS = 2_000_000
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:/@+=,-]*$"


class TaskEntry(BaseModel):
    """One task of a workflow file."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1, max_length=255, pattern=NAME, description="Unique name in the job.")
    task: str = Field(min_length=1, max_length=128, description="A registered task (dms task list).")
    config: dict[str, Any] = Field(default_factory=dict, description="Configuration values of the task.")
    data_id: dict[str, Any] = Field(default_factory=dict, description="Data ID the task processes.")
    inputs: dict[str, str | list[str]] = Field(
        default_factory=dict, description="run() argument -> dataset name or list of names it reads."
    )
    args: dict[str, Any] = Field(default_factory=dict, description="run() argument -> literal JSON value.")
    outputs: list[str] = Field(default_factory=list, description="Datasets the task writes.")
    after: list[str] = Field(default_factory=list, description="Labels that must be done first.")
    priority: PriorityClass | None = Field(default=None, description="Priority class (default: the job's).")
    max_attempts: int | None = Field(default=None, ge=1, le=20, description="Attempts before failing.")


class WorkflowFile(BaseModel):
    """A workflow file: a named job and its tasks."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, description="Name of the job.")
    production: str | None = Field(default=None, max_length=64, description="Production of the job.")
    priority: PriorityClass = Field(default="drp", description="Default priority class of the tasks.")
    max_attempts: int = Field(default=3, ge=1, le=20, description="Default attempts before a task fails.")
    tasks: list[TaskEntry] = Field(min_length=1, max_length=MAX_TASKS, description="The tasks.")


@dataclass
class PlannedTask:
    """A task ready to insert: its entry, resolved provenance, upstream labels and any submit-time error."""

    entry: TaskEntry
    priority_class: str
    max_attempts: int
    config_hash: str | None = None
    cpus: float = 1.0
    memory_mb: int = 1024
    upstream: set[str] = field(default_factory=set)
    reads: set[str] = field(default_factory=set)
    error: str | None = None
    upstream_failed: bool = False

    @property
    def state(self) -> str:
        if self.error is not None:
            return "upstream_failed" if self.upstream_failed else "failed"
        return "blocked" if self.upstream else "queued"


def after_dataset(label: str) -> str:
    """The pseudo-dataset a task writes when another task is declared `after` it."""
    return f"@{label}"


def load(path: Path) -> WorkflowFile:
    """Read and validate a workflow file (YAML or JSON); errors name the file and the field."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise WorkflowError(f"cannot read workflow file {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise WorkflowError(f"workflow file {path} is not valid YAML/JSON: {exc}") from None
    return parse(data, source=str(path))


def parse(data: Any, *, source: str = "workflow") -> WorkflowFile:
    """Validate a workflow mapping; the error lists every problem with its location."""
    if not isinstance(data, Mapping):
        raise WorkflowError(f"{source} must be a mapping with 'name' and 'tasks', not {type(data).__name__}")
    try:
        return WorkflowFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(workflow)'}: {err['msg']}"
            for err in exc.errors()[:10]
        )
        raise WorkflowError(f"invalid {source}: {problems}") from None


def plan(workflow: WorkflowFile, *, check_tasks: bool = True) -> list[PlannedTask]:
    """Resolve every task's class, configuration hash, resources and upstream tasks, recording the
    problems of individual tasks on them. A malformed whole (duplicate labels, two writers of a dataset)
    raises WorkflowError."""
    planned: dict[str, PlannedTask] = {}
    writer: dict[str, str] = {}
    checked: dict[tuple[str, str], tuple[float, int, str | None, str | None]] = {}
    for entry in workflow.tasks:
        if entry.label in planned:
            raise WorkflowError(f"workflow {workflow.name!r}: two tasks are labelled {entry.label!r}")
        task = PlannedTask(
            entry,
            priority_class=entry.priority or workflow.priority,
            max_attempts=entry.max_attempts or workflow.max_attempts,
        )
        planned[entry.label] = task
        for name in entry.outputs:
            if name.startswith("@"):
                raise WorkflowError(f"task {entry.label!r}: output names cannot start with '@' ({name!r})")
            if name in writer:
                raise WorkflowError(
                    f"workflow {workflow.name!r}: dataset {name!r} is written by both {writer[name]!r} "
                    f"and {entry.label!r}"
                )
            writer[name] = entry.label
        if check_tasks:
            _check_task(task, checked)
    for task in planned.values():
        _link(task, planned, writer)
    _propagate(planned, _fail_cycles(planned))
    return list(planned.values())


def _check_task(
    task: PlannedTask, checked: dict[tuple[str, str], tuple[float, int, str | None, str | None]]
) -> None:
    """Resolve the task class and validate its configuration (once per distinct task and configuration:
    a production repeats the same few over millions of data IDs)."""
    from dms.tasks import lookup_task, make_config

    key = (task.entry.task, json.dumps(task.entry.config, sort_keys=True, default=str))
    if key not in checked:
        try:
            task_class = lookup_task(task.entry.task)
            config_hash = make_config(task_class.ConfigClass, task.entry.config).config_hash()
            resources = task_class.resources
            checked[key] = (resources.cpus, resources.memory_mb, config_hash, None)
        except DMSError as exc:
            checked[key] = (1.0, 1024, None, str(exc))
    task.cpus, task.memory_mb, task.config_hash, error = checked[key]
    if error is not None:
        task.error = f"task {task.entry.label!r}: {error}"


def _link(task: PlannedTask, planned: dict[str, PlannedTask], writer: dict[str, str]) -> None:
    names = [
        n for value in task.entry.inputs.values() for n in ([value] if isinstance(value, str) else value)
    ]
    missing = [n for n in names if n not in writer]
    if missing and task.error is None:
        task.error = (
            f"task {task.entry.label!r}: missing input {', '.join(map(repr, missing))}: no task of the "
            "workflow writes it"
        )
    task.reads = {n for n in names if n in writer}
    task.upstream = {writer[n] for n in task.reads}
    for label in task.entry.after:
        if label not in planned:
            if task.error is None:
                task.error = (
                    f"task {task.entry.label!r}: 'after' names {label!r}, which is not in the workflow"
                )
            continue
        task.upstream.add(label)
        task.reads.add(after_dataset(label))
    if task.entry.label in task.upstream and task.error is None:
        task.error = f"task {task.entry.label!r} reads its own output (a dependency cycle)"


def _fail_cycles(planned: dict[str, PlannedTask]) -> dict[str, set[str]]:
    """Mark the tasks of every dependency cycle failed, naming the cycle; returns the graph with the
    cycles cut."""
    graph = {label: set(task.upstream) for label, task in planned.items()}
    while True:
        try:
            graphlib.TopologicalSorter(graph).prepare()
            return graph
        except graphlib.CycleError as exc:
            cycle: list[str] = exc.args[1]
            text = " -> ".join(cycle)
            for label in set(cycle):
                if planned[label].error is None:
                    planned[label].error = f"task {label!r} is in a dependency cycle: {text}"
                graph[label] = set()  # break the cycle to find the next one


def _propagate(planned: dict[str, PlannedTask], acyclic: dict[str, set[str]]) -> None:
    """A task downstream of a task that failed at submission is upstream_failed, naming the first cause."""
    for label in graphlib.TopologicalSorter(acyclic).static_order():
        task = planned[label]
        if task.error is not None:
            continue
        failed = sorted(u for u in task.upstream if planned[u].error is not None)
        if failed:
            task.error = f"task {label!r}: upstream task {failed[0]!r} failed"
            task.upstream_failed = True
