"""`dms demo`'s prompt processing step: a short night through the service, rerun-safe."""

from __future__ import annotations

from prompt_support import count, reset

from dms.demo_prompt import run_prompt_demo
from dms.deployment import Deployment

pytest_plugins = ["prompt_support"]


def test_the_demo_night_is_processed_once(prompt_deployment: Deployment) -> None:
    reset(prompt_deployment)
    lines: list[str] = []
    alerts = run_prompt_demo(prompt_deployment, lines.append)
    archived = count(prompt_deployment, "SELECT count(*) FROM dms.alert")
    sources = count(prompt_deployment, 'SELECT count(*) FROM apdb."DiaSource"')
    assert alerts == archived == sources > 0
    assert count(prompt_deployment, "SELECT count(*) FROM dms.prompt_visit WHERE state = 'done'") == 2
    again: list[str] = []
    assert run_prompt_demo(prompt_deployment, again.append) == alerts
    assert any("processed before" in line for line in again)
    assert count(prompt_deployment, "SELECT count(*) FROM dms.alert") == archived  # nothing twice
    assert count(prompt_deployment, 'SELECT count(*) FROM apdb."DiaSource"') == sources
