"""`dms batch submit|status|cancel|retry|workers|run` on a real deployment."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import yaml
from click.testing import CliRunner, Result

from dms.cli import main
from dms.deployment import Deployment

pytest_plugins = ["batch_support"]


def dms(deployment: Deployment, *args: str) -> Result:
    return CliRunner().invoke(main, ["--data-dir", str(deployment.data_dir), *args])


def test_submit_run_status_and_quotas(
    batch_deployment: Deployment, batch_conn: psycopg.Connection, tmp_path: Path
) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        yaml.safe_dump(
            {
                "name": "cli-demo",
                "priority": "cpp",
                "tasks": [
                    {"label": "one", "task": "batch.sum", "args": {"x": 1}, "outputs": ["one"]},
                    {"label": "two", "task": "batch.sum", "config": {"offset": 1}, "inputs": {"x": "one"}},
                    {"label": "broken", "task": "batch.sleep", "config": {"seconds": "soon"}},
                ],
            }
        )
    )
    submitted = dms(batch_deployment, "batch", "submit", str(flow))
    assert submitted.exit_code == 0, submitted.output
    assert "Submitted job 1 (cli-demo): 1 blocked, 1 failed, 1 queued" in submitted.output
    ran = dms(batch_deployment, "batch", "run", "--workers", "1", "--threads", "2", "--job", "1")
    assert ran.exit_code == 0, ran.output
    assert "2 done" in ran.output
    status = dms(batch_deployment, "batch", "status", "1", "--json")
    data = json.loads(status.output)
    assert data["state"] == "failed" and data["tasks"] == {"done": 2, "failed": 1}
    broken = next(t for t in data["task_list"] if t["label"] == "broken")
    assert "seconds" in broken["error"] and "valid number" in broken["error"]
    text = dms(batch_deployment, "batch", "status", "1").output
    assert "broken" in text and "error:" in text
    assert "cli-demo" in dms(batch_deployment, "batch", "status").output
    quota = dms(batch_deployment, "batch", "workers", "--class", "prompt", "--reserved", "1", "--max", "4")
    assert quota.exit_code == 0, quota.output
    assert "prompt          1  4" in quota.output
    assert batch_conn.execute("SELECT reserved_workers, max_workers FROM dms.batch_quota").fetchall() == [
        (1, 4)
    ]
    refused = dms(batch_deployment, "batch", "workers", "--class", "urgent", "--max", "1")
    assert refused.exit_code == 1 and "unknown priority class 'urgent'" in refused.output
    retried = dms(batch_deployment, "batch", "retry", "1", "broken")
    assert retried.exit_code == 1 and "failed at submission" in retried.output
    cancelled = dms(batch_deployment, "batch", "cancel", "1")
    assert cancelled.exit_code == 0 and "0 tasks stopped" in cancelled.output


def test_bad_files_and_jobs_are_clear_errors(
    batch_deployment: Deployment, conninfo: str, tmp_path: Path
) -> None:
    missing = dms(batch_deployment, "batch", "submit", str(tmp_path / "nope.yaml"))
    assert missing.exit_code == 1 and "cannot read workflow file" in missing.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntasks: [{label: a}]\n")
    refused = dms(batch_deployment, "batch", "submit", str(bad))
    assert refused.exit_code == 1 and "tasks.0.task: Field required" in refused.output
    bad.write_text("name: [unclosed\n")
    assert "not valid YAML/JSON" in dms(batch_deployment, "batch", "submit", str(bad)).output
    unknown = dms(batch_deployment, "batch", "cancel", "42")
    assert unknown.exit_code == 1 and "no batch job 42" in unknown.output
    assert "Traceback" not in unknown.output + refused.output + missing.output
