"""`dms efd` and `dms qc` through the command line, and the transform's service mode."""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path
from typing import Any

import psycopg
from click.testing import CliRunner, Result

from dms.cli import main
from dms.deployment import Deployment
from dms.loaders.efd import ingest, transform
from dms.loaders.efd.db import conninfo
from tests.efd_support import add_exposure, efd_conn, efd_deployment

__all__ = ["efd_conn", "efd_deployment"]

T0 = dt.datetime(2025, 4, 15, 3, 0, 0)  # TAI


def dms(deployment: Deployment, *args: str) -> Result:
    return CliRunner().invoke(main, ["--data-dir", str(deployment.data_dir), *args])


def telemetry(path: Path, start_s: float, values: list[float]) -> Path:
    """Samples one second apart from T0 (UTC = TAI - 37 s) + start_s."""
    base = (T0 - dt.timedelta(seconds=37)).replace(tzinfo=dt.UTC).timestamp() + start_s
    path.write_text(
        "".join(
            json.dumps(
                {
                    "topic": "lsst.sal.ESS.airTurbulence",
                    "private_efdStamp": base + i,
                    "salIndex": 110,
                    "sonicTemperature": v,
                }
            )
            + "\n"
            for i, v in enumerate(values)
        )
    )
    return path


def test_load_configure_transform_and_qc_from_the_command_line(
    efd_deployment: Deployment, efd_conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    add_exposure(efd_conn, 2025041500001, T0, 10)
    path = telemetry(tmp_path / "a.jsonl", 0, [10.0, 12.0, 14.0])
    refused = dms(efd_deployment, "efd", "load", str(path))
    assert refused.exit_code == 1 and "unknown topic" in refused.output and "Traceback" not in refused.output
    loaded = dms(efd_deployment, "efd", "load", str(path), "--create")
    assert loaded.exit_code == 0 and "3 samples, 3 new" in loaded.output, loaded.output
    old_form = tmp_path / "old.yaml"
    old_form.write_text(
        "outputs:\n- {target_table: exposure_efd, name: mt_salindex110_sonic_temperature_mean,\n"
        "   topic: lsst.sal.ESS.airTurbulence, fields: [sonicTemperature], function: mean}\n"
    )
    refused = dms(efd_deployment, "efd", "config", "load", str(old_form))
    assert refused.exit_code == 1 and "`columns` list" in refused.output and "Traceback" not in refused.output
    config = tmp_path / "config_lsstcam.yaml"  # ConsDB's format
    config.write_text(
        "version: 1.0.0\ncolumns:\n- name: mt_salindex110_sonic_temperature_mean\n"
        '  tables: ["exposure_efd"]\n  function: mean\n  datatype: float\n'
        '  ivoa: {"unit":"deg_C", "ucd":"meta.ucd;stat.mean"}\n  description: Mean sonic temperature.\n'
        "  packed_series: False\n  topics:\n  - name: lsst.sal.ESS.airTurbulence\n    fields:\n"
        "    - name: sonicTemperature\n"
    )
    assert dms(efd_deployment, "efd", "config", "load", str(config)).exit_code == 0
    assert "mean(sonicTemperature)" in dms(efd_deployment, "efd", "config", "list").output
    assert "1 exposure(s) transformed" in dms(efd_deployment, "efd", "transform").output
    assert efd_conn.execute(
        "SELECT mt_salindex110_sonic_temperature_mean FROM efd_lsstcam.exposure_efd"
    ).fetchone() == (12.0,)
    assert "0 exposure(s) transformed" in dms(efd_deployment, "efd", "transform").output
    assert "1 exposure(s) transformed" in dms(efd_deployment, "efd", "transform", "--recompute").output

    assert (
        dms(
            efd_deployment, "qc", "metric", "add", "m.seeing", "--unit", "arcsec", "--description", "x"
        ).exit_code
        == 0
    )
    added = dms(
        efd_deployment,
        "qc",
        "threshold",
        "add",
        "m.design",
        "--metric",
        "m.seeing",
        "--op",
        "<=",
        "--value",
        "1",
        "--unit",
        "arcsec",
        "--level",
        "design",
    )
    assert added.exit_code == 0, added.output
    bad = dms(
        efd_deployment,
        "qc",
        "threshold",
        "add",
        "m.bad",
        "--metric",
        "m.seeing",
        "--op",
        "<=",
        "--value",
        "1",
        "--unit",
        "parsecz",
        "--level",
        "design",
    )
    assert bad.exit_code == 1 and "unknown unit 'parsecz'" in bad.output
    no_ids = dms(efd_deployment, "qc", "metric", "insert", "m.seeing", "1500", "--unit", "mas")
    assert no_ids.exit_code == 1 and "scope production needs a production" in no_ids.output
    inserted = dms(
        efd_deployment, "qc", "metric", "insert", "m.seeing", "1500", "--unit", "mas", "--production", "p"
    )
    assert (
        "ALARM" in inserted.output and "m.seeing = 1500 mas, design requires <= 1 arcsec" in inserted.output
    )
    assert "raised" in dms(efd_deployment, "qc", "alarms", "--active").output
    dms(efd_deployment, "qc", "metric", "insert", "m.seeing", "0.8", "--production", "p")
    assert dms(efd_deployment, "qc", "alarms", "--active").output == ""
    assert "cleared" in dms(efd_deployment, "qc", "alarms").output


def test_watch_mode_transforms_when_telemetry_arrives(
    efd_deployment: Deployment, efd_conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    add_exposure(efd_conn, 2025041500001, T0, 10)
    ingest.load_file(efd_conn, telemetry(tmp_path / "a.jsonl", 0, [1.0, 2.0]), create=True)
    transform.configure(
        efd_conn,
        transform.parse_outputs(
            [
                {
                    "target_table": "exposure_efd",
                    "name": "mt_salindex110_sonic_temperature_mean",
                    "topic": "lsst.sal.ESS.airTurbulence",
                    "fields": ["sonicTemperature"],
                    "function": "mean",
                }
            ],
            "t",
        ),
    )
    runs: list[int] = []
    ran = threading.Event()
    stop = threading.Event()

    def on_run(run_id: int, count: int) -> None:
        runs.append(count)
        ran.set()

    service = threading.Thread(
        target=transform.watch,
        args=(conninfo(efd_deployment),),
        kwargs={"interval": 600, "stop": stop, "on_run": on_run},
    )
    service.start()
    try:
        assert ran.wait(20) and runs == [1]  # the initial run
        ran.clear()
        ingest.load_file(efd_conn, telemetry(tmp_path / "b.jsonl", 5, [9.0]))  # late sample: NOTIFY wakes it
        assert ran.wait(20) and runs == [1, 1]
        mean = efd_conn.execute("SELECT mt_salindex110_sonic_temperature_mean FROM efd_lsstcam.exposure_efd")
        assert mean.fetchone() == (4.0,)
    finally:
        stop.set()
        service.join(10)
