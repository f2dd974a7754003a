"""`dms alerts create-topic` and `dms alerts consume` on a real deployment's PostgreSQL log: alerts printed
(decoded from the packets) or written byte for byte, groups resuming, bad offsets and topics refused with a
one-line error."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from feed_support import visit_alerts

from dms.cli import main
from dms.deployment import Deployment
from dms.services.alerts.feed import open_feed

pytest_plugins = ["backbone_support", "feed_support"]


def _dms(deployment: Deployment, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--data-dir", str(deployment.data_dir), "alerts", *args])
    return result.exit_code, result.output


def test_consume_prints_writes_resumes_and_refuses_bad_input(
    deployment: Deployment, feed_url: str, tmp_path: Path
) -> None:
    assert _dms(deployment, "create-topic", "alerts", "--partitions", "2") == (0, "topic alerts\n")
    sources, packets = visit_alerts(31, 97_000, n=25)
    with open_feed(database_url=feed_url) as feed:
        feed.publish_visit("alerts", sources["diaSourceId"].tolist(), packets)
    code, out = _dms(deployment, "consume", "alerts", "--group", "cli", "--max", "10", "--wait", "0.5")
    assert code == 0, out
    first = [line.split("\t") for line in out.splitlines()]
    assert len(first) == 10
    by_id = dict(zip(sources["diaSourceId"], sources["ra"], strict=True))
    assert all(abs(float(ra) - by_id[int(i)]) < 1e-6 for _, _, i, ra, _, _ in first)
    code, out = _dms(
        deployment, "consume", "alerts", "--group", "cli", "--out", str(tmp_path), "--wait", "0.5"
    )
    assert code == 0, out
    written = {int(p.stem): p.read_bytes() for p in tmp_path.glob("*.avro")}
    assert len(written) == 15 and not set(written) & {int(row[2]) for row in first}  # resumed after the 10
    assert all(
        written[int(i)] == packets[k] for k, i in enumerate(sources["diaSourceId"]) if int(i) in written
    )
    code, out = _dms(deployment, "consume", "alerts", "--group", "cli", "--from-offset", "1", "--wait", "0.5")
    assert code == 0 and len(out.splitlines()) == 25  # replayed from the start
    code, out = _dms(deployment, "consume", "alerts", "--group", "cli", "--from-offset", "999")
    assert code == 1 and "topic 'alerts' has no offset 999: its messages are at offsets 1..25" in out
    assert "Traceback" not in out
    code, out = _dms(deployment, "consume", "nosuch", "--group", "cli")
    assert code == 1 and "unknown topic 'nosuch'" in out


def test_the_demo_step_publishes_a_visit_and_a_broker_reads_it(deployment: Deployment, feed_url: str) -> None:
    from dms.demo_alerts import run_alerts_demo

    lines: list[str] = []
    assert run_alerts_demo(deployment, lines.append, alerts=20) == 20
    assert run_alerts_demo(deployment, lines.append, alerts=20) == 20  # again: the group reads only the new
    assert "offsets 21..40" in lines[2] and "received and decoded 20" in lines[2]
    with open_feed(database_url=feed_url) as feed:
        assert len(feed.replay("alerts", from_offset=1, max_messages=100)) == 40
