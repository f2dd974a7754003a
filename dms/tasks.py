"""The task framework that prompt processing and the productions share (in the spirit of lsst.pipe.base).

A task is a class with a typed configuration (a pydantic model whose every field carries a description), a
logger named after it, per-step timings, the resources it asks of the batch system, and one `run` method. The
prompt service, the batch workers and the command line all run tasks through `run_task`, which times the run,
logs its start and end with the data ID, and returns a `TaskRun` that carries the result, the timings and the
configuration hash (the provenance a production records with its outputs).

    class DetectConfig(TaskConfig):
        threshold: float = Field(default=5.0, gt=0, description="Detection threshold, in noise sigmas.")

    @register_task
    class DetectTask(Task[DetectConfig, pd.DataFrame]):
        '''Find sources above the threshold.'''
        name = "detect"
        ConfigClass = DetectConfig

        def run(self, image: np.ndarray) -> pd.DataFrame:
            with self.timed("background"):
                ...

    outcome = run_task(DetectTask, {"threshold": 4.0}, image=image, data_id={"visit": 1, "detector": 9})
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dms.errors import ConfigError, DMSError

log = logging.getLogger(__name__)


class TaskError(DMSError):
    """A task failed on its inputs (the message names the task and the data ID)."""


class TaskConfig(BaseModel):
    """Base of every task configuration: frozen, no unknown fields, a description for every field.

    A field whose type is itself a TaskConfig is the configuration of a subtask (`Task.subtask`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        missing = [name for name, info in cls.model_fields.items() if not info.description]
        if missing:
            raise TypeError(f"{cls.__qualname__}: every field needs a description; missing on {missing}")

    def config_hash(self) -> str:
        """A short, stable digest of the configuration and its class (equal configs, equal hashes)."""
        text = json.dumps(
            {"config": type(self).__qualname__, "values": self.model_dump(mode="json")},
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def describe(cls, prefix: str = "") -> list[tuple[str, str, Any, str]]:
        """(name, type, default, description) of every field, subtask fields as `sub.field`."""
        rows: list[tuple[str, str, Any, str]] = []
        for name, info in cls.model_fields.items():
            kind = info.annotation
            if isinstance(kind, type) and issubclass(kind, TaskConfig):
                rows.append((prefix + name, "subtask", kind.__qualname__, info.description or ""))
                rows.extend(kind.describe(prefix + name + "."))
            else:
                type_name = getattr(kind, "__name__", str(kind))
                rows.append((prefix + name, type_name, info.get_default(), info.description or ""))
        return rows


class Resources(BaseModel):
    """What one run of a task asks of the machine it runs on (the batch system schedules by it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpus: float = Field(default=1.0, gt=0, le=256, description="Cores one run uses.")
    memory_mb: int = Field(default=1024, gt=0, description="Peak memory of one run, in MiB.")


C = TypeVar("C", bound=TaskConfig)
R = TypeVar("R")


class Task(Generic[C, R]):
    """A unit of processing: a configuration, a logger, timings and a `run` method."""

    name: ClassVar[str]
    ConfigClass: ClassVar[type[TaskConfig]]
    resources: ClassVar[Resources] = Resources()

    def __init__(self, config: C | None = None, *, data_id: Mapping[str, Any] | None = None) -> None:
        self.config: C = config if config is not None else self.ConfigClass()  # type: ignore[assignment]
        if not isinstance(self.config, self.ConfigClass):
            raise ConfigError(
                f"task {self.name!r} takes a {self.ConfigClass.__qualname__}, "
                f"not a {type(self.config).__qualname__}"
            )
        self.data_id: dict[str, Any] = dict(data_id or {})
        self.log = logging.LoggerAdapter(
            logging.getLogger(f"dms.task.{self.name}"), {"data_id": self.data_id}
        )
        self.timings: dict[str, float] = {}

    def run(self, *args: Any, **kwargs: Any) -> R:
        raise NotImplementedError

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        """Time a step of `run`; repeated steps add up. Timings reach the TaskRun and the logs."""
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.timings[step] = self.timings.get(step, 0.0) + elapsed
            self.log.debug("%s %s took %.3f s", self.name, step, elapsed)

    def subtask(self, field_name: str, task_class: type[Task[Any, Any]]) -> Any:
        """An instance of `task_class` configured by this task's `field_name` config, sharing data ID and
        timings (its steps are recorded as `field_name.step`)."""
        sub_config = getattr(self.config, field_name)
        child = task_class(sub_config, data_id=self.data_id)
        parent = self

        @contextmanager
        def timed(step: str) -> Iterator[None]:
            start = time.perf_counter()
            try:
                yield
            finally:
                key = f"{field_name}.{step}"
                parent.timings[key] = parent.timings.get(key, 0.0) + time.perf_counter() - start

        child.timed = timed  # type: ignore[method-assign]
        return child


@dataclass
class TaskRun(Generic[R]):
    """The outcome of one `run_task`: the result (or the error), timings and provenance."""

    task: str
    config_hash: str
    data_id: dict[str, Any]
    started: float
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    result: R | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


TASKS: dict[str, type[Task[Any, Any]]] = {}

T = TypeVar("T", bound=type[Task[Any, Any]])


def register_task(task_class: T) -> T:
    """Make a task known to `dms task list/show` and to batch workers by its name."""
    name = task_class.name
    if name in TASKS and TASKS[name] is not task_class:
        raise TypeError(
            f"two tasks are named {name!r}: {TASKS[name].__qualname__} and {task_class.__qualname__}"
        )
    TASKS[name] = task_class
    return task_class


def lookup_task(name: str) -> type[Task[Any, Any]]:
    """The registered task called `name`, or a ConfigError listing the known names."""
    _import_task_modules()
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(
            f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS)) or 'none'}"
        ) from None


# Modules that define registered tasks; imported lazily so `dms --help` stays fast.
TASK_MODULES: list[str] = [
    "dms.services.batch.tasks",
    "dms.services.cpp.tasks",
    "dms.services.cpp.products",
    "dms.services.prompt.calibration",
    "dms.services.prompt.payload.isr",
    "dms.services.prompt.payload.process",
    "dms.services.drp.tasks",
]


def _import_task_modules() -> None:
    import importlib

    for module in TASK_MODULES:
        importlib.import_module(module)


def make_config(
    config_class: type[C],
    values: Mapping[str, Any] | None = None,
    *,
    file: Path | None = None,
    overrides: Sequence[str] = (),
) -> C:
    """A validated configuration from a YAML/JSON file, a mapping and `key=value` overrides (in that order;
    `sub.key=value` reaches a subtask's config). Errors name the field and what is allowed."""
    merged: dict[str, Any] = {}
    if file is not None:
        try:
            loaded = yaml.safe_load(Path(file).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read task configuration {file}: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"task configuration {file} must be a mapping of field names to values")
        _deep_update(merged, loaded)
    _deep_update(merged, dict(values or {}))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"a configuration override is key=value, not {item!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        target = merged
        *parents, leaf = key.strip().split(".")
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"configuration override {item!r}: {part!r} is not a subtask")
        target[leaf] = value
    try:
        return config_class.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or '(config)'}: {error['msg']}"
            for error in exc.errors()
        )
        known = ", ".join(row[0] for row in config_class.describe())
        raise ConfigError(f"invalid {config_class.__qualname__}: {problems} (fields: {known})") from None


def _deep_update(target: dict[str, Any], source: Mapping[str, Any]) -> None:
    for key, value in source.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = dict(value) if isinstance(value, Mapping) else value


def run_task(
    task: type[Task[Any, R]] | Task[Any, R],
    config: TaskConfig | Mapping[str, Any] | None = None,
    *,
    data_id: Mapping[str, Any] | None = None,
    raise_errors: bool = True,
    on_done: Callable[[TaskRun[R]], None] | None = None,
    **inputs: Any,
) -> TaskRun[R]:
    """Run a task on `inputs`: the one entry point of the prompt service, batch workers and the command line.

    A DMSError or any other exception from the task becomes a TaskError naming the task and data ID (with
    `raise_errors=False` it is recorded in the TaskRun instead). `on_done` receives the TaskRun either way
    (the callers record timings in the database through it)."""
    if isinstance(task, Task):
        instance = task
        if data_id is not None:
            instance.data_id.update(data_id)
    else:
        if config is None or isinstance(config, Mapping):
            config = make_config(task.ConfigClass, config or {})
        instance = task(config, data_id=data_id)
    label = _label(instance.name, instance.data_id)
    outcome: TaskRun[R] = TaskRun(
        task=instance.name,
        config_hash=instance.config.config_hash(),
        data_id=dict(instance.data_id),
        started=time.time(),
        seconds=0.0,
    )
    start = time.perf_counter()
    instance.log.info("%s: started", label)
    failure: BaseException | None = None
    try:
        outcome.result = instance.run(**inputs)
    except Exception as exc:  # every failure is reported with the task and data ID
        failure = exc
        outcome.error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, DMSError) else str(exc)
    outcome.seconds = time.perf_counter() - start
    outcome.timings = dict(instance.timings)
    if failure is None:
        instance.log.info("%s: done in %.3f s", label, outcome.seconds)
    else:
        instance.log.warning("%s: failed after %.3f s: %s", label, outcome.seconds, outcome.error)
    if on_done is not None:
        on_done(outcome)
    if failure is not None and raise_errors:
        raise TaskError(f"{label} failed: {outcome.error}") from failure
    return outcome


def _label(name: str, data_id: Mapping[str, Any]) -> str:
    if not data_id:
        return name
    return f"{name} [{', '.join(f'{k}={v}' for k, v in data_id.items())}]"
