"""The task framework: typed configurations, provenance hashes, timings, errors, the `dms task` commands."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from pydantic import Field

from dms.cli import main
from dms.errors import ConfigError
from dms.tasks import Resources, Task, TaskConfig, TaskError, TaskRun, make_config, register_task, run_task


class ClipConfig(TaskConfig):
    nsigma: float = Field(default=3.0, gt=0, description="Clip at this many standard deviations.")
    iterations: int = Field(default=3, ge=1, le=20, description="Clipping passes.")


class BackgroundConfig(TaskConfig):
    clip: ClipConfig = Field(
        default_factory=ClipConfig, description="Sigma clipping of the background pixels."
    )
    subtract: bool = Field(default=True, description="Return the image minus its background.")


class ClipTask(Task[ClipConfig, np.ndarray]):
    """Sigma-clip an array."""

    name = "test.clip"
    ConfigClass = ClipConfig

    def run(self, values: np.ndarray) -> np.ndarray:
        kept = values
        for _ in range(self.config.iterations):
            with self.timed("pass"):
                centre, spread = np.median(kept), np.std(kept)
                kept = kept[np.abs(kept - centre) < self.config.nsigma * spread]
        return kept


@register_task
class BackgroundTask(Task[BackgroundConfig, np.ndarray]):
    """Estimate an image's background as the mean of its clipped pixels."""

    name = "test.background"
    ConfigClass = BackgroundConfig
    resources = Resources(cpus=1, memory_mb=256)

    def run(self, image: np.ndarray) -> np.ndarray:
        if image.ndim != 2:
            raise ConfigError(f"an image is 2-d, not {image.ndim}-d")
        kept = self.subtask("clip", ClipTask).run(image.ravel())
        with self.timed("level"):
            level = float(np.mean(kept))
        return image - level if self.config.subtract else np.full_like(image, level)


def image_with_stars(seed: int = 1) -> tuple[np.ndarray, float]:
    rng = np.random.default_rng(seed)
    image = rng.normal(100.0, 5.0, (200, 200))
    image[rng.integers(0, 200, 40), rng.integers(0, 200, 40)] += 5000.0  # bright pixels the clip must reject
    return image, 100.0


def test_run_task_returns_result_timings_and_provenance() -> None:
    image, level = image_with_stars()
    outcome = run_task(
        BackgroundTask, {"clip": {"nsigma": 2.5}}, image=image, data_id={"visit": 7, "detector": 3}
    )
    assert outcome.ok and outcome.task == "test.background"
    assert outcome.data_id == {"visit": 7, "detector": 3}
    residual = outcome.result
    assert residual is not None
    # the clipped background is the true level (an unclipped mean is pulled up by the stars by ~5)
    assert abs(float(np.median(residual))) < 0.5
    assert float(np.mean(image)) - level > 4
    assert set(outcome.timings) == {"clip.pass", "level"}
    assert all(t >= 0 for t in outcome.timings.values()) and outcome.seconds >= sum(outcome.timings.values())


def test_config_hash_is_stable_and_tracks_values() -> None:
    a = make_config(BackgroundConfig, {"clip": {"nsigma": 2.5}})
    b = make_config(BackgroundConfig, overrides=["clip.nsigma=2.5"])
    c = make_config(BackgroundConfig, overrides=["clip.nsigma=2.6"])
    assert a == b and a.config_hash() == b.config_hash()
    assert a.config_hash() != c.config_hash()
    assert len(a.config_hash()) == 16


def test_config_file_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "bg.yaml"
    path.write_text("subtract: false\nclip:\n  iterations: 5\n")
    config = make_config(BackgroundConfig, file=path, overrides=["clip.nsigma=4"])
    assert config.subtract is False and config.clip.iterations == 5 and config.clip.nsigma == 4.0


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["clip.nsigma=-1"], "clip.nsigma"),
        (["clip.iterations=many"], "clip.iterations"),
        (["colour=red"], "colour"),
        (["nsigma"], "key=value"),
        (["subtract=true", "subtract.deep=1"], "not a subtask"),
    ],
)
def test_bad_configuration_names_the_field(overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        make_config(BackgroundConfig, overrides=overrides)


def test_bad_config_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("- a list\n- not a mapping\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        make_config(BackgroundConfig, file=path)
    with pytest.raises(ConfigError, match="cannot read"):
        make_config(BackgroundConfig, file=tmp_path / "missing.yaml")


def test_a_field_without_description_is_refused() -> None:
    with pytest.raises(TypeError, match="every field needs a description; missing on \\['size'\\]"):

        class Undocumented(TaskConfig):
            size: int = 3


def test_failures_name_the_task_and_data_id(caplog: pytest.LogCaptureFixture) -> None:
    recorded: list[TaskRun[np.ndarray]] = []
    with caplog.at_level(logging.INFO, logger="dms.task"), pytest.raises(TaskError) as info:
        run_task(BackgroundTask, image=np.zeros(5), data_id={"visit": 9}, on_done=recorded.append)
    assert "test.background [visit=9] failed: an image is 2-d, not 1-d" in str(info.value)
    assert (
        len(recorded) == 1 and recorded[0].error == "an image is 2-d, not 1-d" and recorded[0].result is None
    )
    assert any("started" in r.getMessage() for r in caplog.records)
    assert any("failed after" in r.getMessage() for r in caplog.records)
    kept = run_task(BackgroundTask, image=np.zeros((3, 3, 3)), raise_errors=False)
    assert not kept.ok and "3-d" in (kept.error or "")


def test_wrong_config_class_is_refused() -> None:
    with pytest.raises(ConfigError, match="takes a BackgroundConfig, not a ClipConfig"):
        BackgroundTask(ClipConfig())  # type: ignore[arg-type]


def test_cli_lists_and_shows_tasks() -> None:
    runner = CliRunner()
    listed = runner.invoke(main, ["task", "list"])
    assert listed.exit_code == 0 and "test.background" in listed.output
    shown = runner.invoke(main, ["task", "show", "test.background", "--config", "clip.nsigma=2"])
    assert shown.exit_code == 0, shown.output
    assert (
        "clip.nsigma (float) = 2.0" in shown.output
        and "Clip at this many standard deviations." in shown.output
    )
    assert make_config(BackgroundConfig, overrides=["clip.nsigma=2"]).config_hash() in shown.output
    unknown = runner.invoke(main, ["task", "show", "nope"])
    assert (
        unknown.exit_code != 0
        and "unknown task 'nope'" in unknown.output
        and "Traceback" not in unknown.output
    )
