"""The `cpp` production: daily, intermediate and annual calibration runs are one production with
different inputs. `kind` chooses how many observing days up to `day_obs` the raw calibration frames are
taken from; the build finds them in the Data Backbone (raws archived with their exposure records) and makes
one DAG: per detector a master bias, a master dark (from the bias), a master flat per physical filter
(from both), a crosstalk matrix from the science raws of the range when there are any, and (with
`template_dataset_type`) a template per detector and band from the range's calibrated exposures.

    dms cpp run --kind daily --day-obs 20261203           # or an OCS runProduction command naming "cpp"
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from dms.services.batch.errors import BatchError
from dms.services.batch.productions import ProductionParameters, register_production
from dms.services.batch.workflow import WorkflowFile

#: Observing days each kind of run reaches back over (the day_obs itself included).
KIND_DAYS = {"daily": 1, "intermediate": 30, "annual": 365}
CALIBRATION_TYPES = ("bias", "dark", "flat")


class CppParameters(ProductionParameters):
    kind: Literal["daily", "intermediate", "annual"] = Field(
        description="daily (one night), intermediate (30 nights) or annual (365 nights) up to day_obs."
    )
    day_obs: int = Field(ge=19700101, le=99991231, description="Last observing day (YYYYMMDD) of the run.")
    instrument: str = Field(default="LSSTCam", min_length=1, description="Instrument of the raws.")
    detectors: list[int] | None = Field(default=None, description="Detectors to calibrate (default: all).")
    data_dir: str | None = Field(
        default=None, description="Deployment whose Data Backbone holds the raws (default: DMS_DATA_DIR)."
    )
    amplifiers: int = Field(default=4, ge=2, le=64, description="Amplifiers per detector for crosstalk.")
    crosstalk: bool = Field(default=True, description="Estimate crosstalk from the range's science raws.")
    template_dataset_type: str | None = Field(
        default=None,
        description="Calibrated exposures to coadd into templates (e.g. calexp: data ID instrument, visit, "
        "detector, band; visits of the day range); none: no templates.",
    )
    template_run: str = Field(
        default="templates/cpp", min_length=1, description="RUN collection the templates are stored in."
    )


def deployment_dir(parameters: CppParameters) -> Path:
    """The production's deployment: its `data_dir`, else the one `dms` itself would open (DMS_DATA_DIR or the
    per-user data directory), so the raws' registry and the masters' directory are the same deployment's."""
    from dms.config import default_data_dir

    return Path(parameters.data_dir) if parameters.data_dir else default_data_dir()


def day_range(kind: str, day_obs: int) -> tuple[int, int]:
    """(first, last) day_obs of a run of `kind` ending at `day_obs`."""
    try:
        last = dt.datetime.strptime(str(day_obs), "%Y%m%d").date()
    except ValueError:
        raise BatchError(f"day_obs {day_obs} is not a date YYYYMMDD") from None
    first = last - dt.timedelta(days=KIND_DAYS[kind] - 1)
    return int(first.strftime("%Y%m%d")), day_obs


@contextmanager
def _registry(parameters: CppParameters) -> Iterator[tuple[Any, Any]]:
    """A control-database connection and the primary site's store of the production's deployment."""
    from dms.deployment import Deployment
    from dms.services.backbone.client import Backbone
    from dms.services.prompt.qc import connect

    deployment = Deployment.open(deployment_dir(parameters))
    try:
        store = Backbone(deployment).store()
        with connect(deployment) as conn:
            yield conn, store
    finally:
        deployment.dispose()


RAWS = (
    "SELECT e.id, e.observation_type, e.physical_filter, (d.data_id->>'detector')::int, r.path "
    "FROM dms.exposure e "
    "JOIN dms.dataset d ON d.dataset_type = 'raw' AND d.data_id->>'instrument' = e.instrument "
    "AND (d.data_id->>'exposure')::bigint = e.id "
    "JOIN dms.datastore_record r ON r.dataset_id = d.id AND r.site = %(site)s "
    "WHERE e.instrument = %(instrument)s AND e.day_obs BETWEEN %(first)s AND %(last)s "
    "AND (%(detectors)s::int[] IS NULL OR (d.data_id->>'detector')::int = ANY(%(detectors)s::int[])) "
    "ORDER BY e.id, 4"
)
EXPOSURES = (
    "SELECT (d.data_id->>'detector')::int, d.data_id->>'band', r.path FROM dms.dataset d "
    "JOIN dms.exposure e ON e.instrument = d.data_id->>'instrument' AND e.id = (d.data_id->>'visit')::bigint "
    "JOIN dms.datastore_record r ON r.dataset_id = d.id AND r.site = %(site)s "
    "WHERE d.dataset_type = %(dataset_type)s AND e.instrument = %(instrument)s "
    "AND e.day_obs BETWEEN %(first)s AND %(last)s "
    "AND (%(detectors)s::int[] IS NULL OR (d.data_id->>'detector')::int = ANY(%(detectors)s::int[])) "
    "ORDER BY e.id"
)


def _where(parameters: CppParameters) -> dict[str, Any]:
    first, last = day_range(parameters.kind, parameters.day_obs)
    return {
        "site": store_site(),
        "instrument": parameters.instrument,
        "first": first,
        "last": last,
        "detectors": parameters.detectors,
        "dataset_type": parameters.template_dataset_type,
    }


def find_raws(parameters: CppParameters) -> list[dict[str, Any]]:
    """The archived raws of the run's day range: observation type, physical filter, detector, file path."""
    with _registry(parameters) as (conn, store):
        return [
            {
                "exposure": int(exposure),
                "observation_type": (observation_type or "").lower(),
                "physical_filter": physical_filter,
                "detector": int(detector),
                "path": str(store.absolute(path)),
            }
            for exposure, observation_type, physical_filter, detector, path in conn.execute(
                RAWS, _where(parameters)
            )
        ]


def find_exposures(parameters: CppParameters) -> dict[tuple[int, str], list[str]]:
    """Files of the calibrated exposures to make templates from, per (detector, band): datasets of
    `template_dataset_type` whose visit is an exposure of the day range."""
    found: dict[tuple[int, str], list[str]] = defaultdict(list)
    with _registry(parameters) as (conn, store):
        for detector, band, path in conn.execute(EXPOSURES, _where(parameters)):
            found[(int(detector), str(band))].append(str(store.absolute(path)))
    return dict(found)


def store_site() -> str:
    from dms.services.backbone import sites

    return sites.PRIMARY_SITE


@register_production("cpp", CppParameters)
def cpp(parameters: CppParameters) -> WorkflowFile:
    """Calibration Products Production: master bias, dark, flat per detector (and filter) and crosstalk,
    from the raw frames of the day range that `kind` (daily|intermediate|annual) and `day_obs` choose."""
    raws = find_raws(parameters)
    first, last = day_range(parameters.kind, parameters.day_obs)
    by: dict[tuple[int, str, str | None], list[str]] = defaultdict(list)
    for raw in raws:
        kind = raw["observation_type"]
        key = (raw["detector"], kind, raw["physical_filter"] if kind == "flat" else None)
        by[key].append(raw["path"])
    detectors = sorted({d for d, kind, _ in by if kind in CALIBRATION_TYPES})
    if not detectors:
        raise BatchError(
            f"no raw bias, dark or flat frames of {parameters.instrument} from day_obs {first} to {last} "
            "in the Data Backbone (archive them first)"
        )
    out = deployment_dir(parameters) / "cpp" / parameters.kind
    out = out / str(parameters.day_obs)
    tasks: list[dict[str, Any]] = []
    for det in detectors:
        data_id = {"instrument": parameters.instrument, "detector": det}
        tasks.append(_task(f"bias-{det}", "cpp.master_bias", data_id, by[(det, "bias", None)], out, {}))
        tasks.append(
            _task(
                f"dark-{det}",
                "cpp.master_dark",
                data_id,
                by[(det, "dark", None)],
                out,
                {"bias": f"bias-{det}"},
            )
        )
        for (d, kind, physical_filter), frames in sorted(by.items(), key=str):
            if d == det and kind == "flat":
                label = f"flat-{det}-{physical_filter}"
                inputs = {"bias": f"bias-{det}", "dark": f"dark-{det}"}
                flat_id = {**data_id, "physical_filter": physical_filter}
                tasks.append(_task(label, "cpp.master_flat", flat_id, frames, out, inputs))
        science = by.get((det, "science", None), [])
        if parameters.crosstalk and science:
            entry = _task(f"crosstalk-{det}", "cpp.crosstalk", data_id, science, out, {})
            entry["config"] = {"amplifiers": parameters.amplifiers}
            tasks.append(entry)
    if parameters.template_dataset_type:
        data_dir = str(deployment_dir(parameters).resolve())
        for (det, band), exposures in sorted(find_exposures(parameters).items()):
            label = f"template-{det}-{band}"
            tasks.append(
                {
                    "label": label,
                    "task": "cpp.template",
                    "data_id": {"instrument": parameters.instrument, "detector": det, "band": band},
                    "args": {
                        "exposures": exposures,
                        "output": str(out / f"{label}.fits"),
                        "data_dir": data_dir,
                        "run": parameters.template_run,
                    },
                    "outputs": [label],
                }
            )
    return WorkflowFile.model_validate(
        {
            "name": f"cpp-{parameters.kind}-{parameters.day_obs}",
            "production": "cpp",
            "priority": "cpp",
            "tasks": tasks,
        }
    )


def _task(
    label: str, task: str, data_id: dict[str, Any], frames: list[str], out: Path, inputs: dict[str, str]
) -> dict[str, Any]:
    return {
        "label": label,
        "task": task,
        "data_id": data_id,
        "inputs": inputs,
        "args": {"frames": frames, "output": str(out / f"{label}.fits")},
        "outputs": [label],
    }
