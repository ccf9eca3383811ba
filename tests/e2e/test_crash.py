"""kill -9 of the real operator right after a scheduled run, before its status is written: the runs that
came due while it was down are created per catchUp, each exactly once, against the real API server and the
real queue service."""

import signal
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import Kubectl, QueueServiceProcess
from tests.e2e.conftest import (
    OperatorFactory,
    list_jobs,
    missed_runs,
    status_of,
    trigger_manifest,
    wait_for,
)

PERIOD = 3
"""Seconds between runs (`*/3 * * * * *`)."""


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@pytest.mark.parametrize("catch_up", ["All", "Latest"])
def test_a_kill_right_after_a_run_loses_no_run(
    kubectl: Kubectl,
    start_operator: OperatorFactory,
    queue_service_process: QueueServiceProcess,
    catch_up: str,
) -> None:
    url = queue_service_process.url
    name = f"crash-{catch_up.lower()}"
    # A long status interval: the run's lastScheduleTime cannot be written before the kill.
    op = start_operator("--status-interval", "30")
    schedule = {"cron": f"*/{PERIOD} * * * * *", "catchUp": catch_up, "startingDeadlineSeconds": 120}
    kubectl.apply(trigger_manifest(name, {"schedule": schedule}, job={"type": "e2e.crash", "queue": name}))
    wait_for(lambda: list_jobs(url, queue=name), timeout=30, interval=0.01, message="the first run")
    op.process.stop(signal.SIGKILL)
    killed = datetime.now(UTC)
    before_kill = {j["metadata"]["scheduled_time"] for j in list_jobs(url, queue=name)}
    assert not status_of(kubectl, name).get("lastScheduleTime"), "the kill came before the status write"

    time.sleep(2 * PERIOD + 1)  # down across at least two due times
    op = start_operator()
    restarted = datetime.now(UTC)
    wait_for(
        lambda: (
            sum(_utc(j["metadata"]["scheduled_time"]) > restarted for j in list_jobs(url, queue=name)) >= 2
        ),
        timeout=60,
        message="two runs after the restart",
    )
    op.process.stop(signal.SIGTERM)  # the final flush writes the counters

    jobs = list_jobs(url, queue=name)
    keys = [j["idempotency_key"] for j in jobs]
    assert len(keys) == len(set(keys)), "every run exactly once"
    times = sorted(_utc(j["metadata"]["scheduled_time"]) for j in jobs)
    assert all((t.timestamp() % PERIOD) == 0 for t in times)
    uid = kubectl.json("get", "jt", name)["metadata"]["uid"]
    assert set(keys) == {f"{uid}:{t:%Y-%m-%dT%H:%M:%SZ}" for t in times}
    step = timedelta(seconds=PERIOD)
    if catch_up == "All":
        created = _utc(kubectl.json("get", "jt", name)["metadata"]["creationTimestamp"])
        first = datetime.fromtimestamp((int(created.timestamp()) // PERIOD + 1) * PERIOD, UTC)
        expected = [first + i * step for i in range(len(times))]
        assert times == expected, "every run from the creation on, none missing, none twice"
        assert status_of(kubectl, name)["jobsCreated"] == len(jobs), "the unrecorded run is counted once"
    else:
        # The restarted operator fired only the latest run due while it was down; its Event says which.
        [catch_up] = wait_for(
            lambda: [r for r in missed_runs(kubectl, name) if r.pending > killed],
            timeout=30,
            message="the ScheduleMissed Event of the restart",
        )
        assert catch_up.fired == 1
        pending = catch_up.pending
        latest = pending - step
        after_kill = [t for t in times if f"{t:%Y-%m-%dT%H:%M:%SZ}" not in before_kill]
        assert after_kill[0] == latest, f"the latest run due while down was caught up: {after_kill}"
        assert after_kill == [latest + i * step for i in range(len(after_kill))]
        assert latest - max(_utc(t) for t in before_kill) >= 2 * step, "older runs were not caught up"
