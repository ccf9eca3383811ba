"""One end-to-end test per source: a JobTrigger applied to the real API server, the real operator
process, the real event (an HTTP call, a clock, a file, a RabbitMQ message, a PostgreSQL row), and the
job in the real reference queue service."""

import asyncio
import base64
import hashlib
import hmac
import json
import signal
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from portico.testing.services import PostgresServer, RabbitMQServer
from tests.conftest import Kubectl, QueueServiceProcess
from tests.e2e.conftest import (
    OperatorFactory,
    list_jobs,
    missed_runs,
    status_of,
    trigger_manifest,
    wait_for,
)


def running(kubectl: Kubectl, name: str) -> dict[str, Any] | None:
    s = status_of(kubectl, name)
    return s if s.get("phase") == "Running" and s.get("isRunning") else None


def secret(kubectl: Kubectl, name: str, key: str, value: str) -> None:
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "data": {key: base64.b64encode(value.encode()).decode()},
        }
    )


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_schedule_enqueues_jobs_stops_on_delete_and_catches_up_after_restart(
    kubectl: Kubectl, start_operator: OperatorFactory, queue_service_process: QueueServiceProcess
) -> None:
    url = queue_service_process.url
    op = start_operator()
    job = {
        "type": "report.tick",
        "queue": "reports",
        "priority": 5,
        "payload": {"report": "daily"},
        "metadata": {"team": "finance"},
    }
    kubectl.apply(trigger_manifest("every2s", {"schedule": {"cron": "@every 2s"}}, job=job))
    jobs = wait_for(
        lambda: len(j := list_jobs(url, queue="reports")) >= 2 and j, timeout=15, message="2 jobs"
    )
    first = jobs[0]
    assert (first["job_type"], first["queue_name"], first["priority"]) == ("report.tick", "reports", 5)
    assert first["payload"] == {"report": "daily"}
    meta = first["metadata"]
    assert (
        meta["team"] == "finance"
        and meta["trigger.name"] == "every2s"
        and meta["trigger.source"] == "schedule"
    )
    uid = kubectl.json("get", "jt", "every2s")["metadata"]["uid"]
    assert first["idempotency_key"] == f"{uid}:{meta['scheduled_time']}"

    # Restart across due times: of the runs that came due while the operator was down, catchUp Latest
    # fires the most recent one, exactly once. Which runs those are is decided by the operator's clock
    # when the trigger starts, so it is read from the operator's ScheduleMissed Event, never guessed from
    # when the test saw the status change (that guess failed whenever a run came due during startup).
    op.process.stop(signal.SIGTERM)
    time.sleep(4.5)
    stopped_status = status_of(kubectl, "every2s")
    assert stopped_status["isRunning"] is False, "the final flush on stop wrote the stopped state"
    last_before = datetime.fromisoformat(stopped_status["lastScheduleTime"].replace("Z", "+00:00"))
    start_operator()
    wait_for(lambda: running(kubectl, "every2s"), message="running after restart")
    [catch_up] = wait_for(
        lambda: missed_runs(kubectl, "every2s"), message="the catch-up's ScheduleMissed Event"
    )
    assert catch_up.fired == 1 and catch_up.first == last_before + timedelta(seconds=2)
    latest = catch_up.pending - timedelta(seconds=2)
    assert latest - last_before >= timedelta(seconds=4), "at least two runs came due while down"
    wait_for(lambda: len(list_jobs(url, queue="reports")) >= len(jobs) + 3, timeout=15, message="more jobs")
    times = [j["metadata"]["scheduled_time"] for j in list_jobs(url, queue="reports")]
    assert len(times) == len(set(times)), "no scheduled time was enqueued twice"
    fired = sorted(datetime.fromisoformat(t.replace("Z", "+00:00")) for t in times)
    assert [t for t in fired if last_before < t < catch_up.pending] == [latest], (
        f"catchUp Latest fires only the latest of the runs due while down ({catch_up}): {fired}"
    )
    after = [t for t in fired if t > last_before]
    assert after == [latest + timedelta(seconds=2 * i) for i in range(len(after))], "none missing after"

    kubectl("delete", "jt", "every2s")
    count = len(list_jobs(url, queue="reports"))
    time.sleep(3)
    assert len(list_jobs(url, queue="reports")) == count, "no job after the resource is deleted"


def test_webhook_github_delivery_becomes_one_job_and_path_goes_with_the_resource(
    kubectl: Kubectl, start_operator: OperatorFactory, queue_service_process: QueueServiceProcess
) -> None:
    op = start_operator()
    signing_key = "gh-" + uuid.uuid4().hex
    secret(kubectl, "github", "secret", signing_key)
    kubectl.apply(
        trigger_manifest(
            "gh",
            {
                "webhook": {
                    "mode": "payload",
                    "auth": {
                        "type": "hmac",
                        "preset": "github",
                        "secretRef": {"name": "github", "key": "secret"},
                    },
                }
            },
            job={"type": "ci.build", "queue": "ci"},
        )
    )
    status = wait_for(lambda: running(kubectl, "gh"), message="webhook running")
    url = op.webhook_url + status["webhookPath"]
    assert status["webhookPath"] == f"/hooks/{kubectl.namespace}/gh"

    body = json.dumps({"ref": "refs/heads/main", "after": "abc123"}).encode()
    signature = "sha256=" + hmac.new(signing_key.encode(), body, hashlib.sha256).hexdigest()
    delivery = str(uuid.uuid4())
    headers = {
        "Content-Type": "application/json",
        "X-Hub-Signature-256": signature,
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": delivery,
    }
    code, answer = post(url, body, headers)
    assert code == 202, answer
    again, answer2 = post(url, body, headers)
    assert again == 202 and answer2["job_id"] == answer["job_id"], "GitHub's redelivery is the same job"
    bad, _ = post(url, body, {**headers, "X-Hub-Signature-256": "sha256=" + "0" * 64})
    assert bad == 401

    jobs = list_jobs(queue_service_process.url, queue="ci")
    assert len(jobs) == 1
    assert jobs[0]["payload"] == {"ref": "refs/heads/main", "after": "abc123"}
    assert jobs[0]["job_type"] == "ci.build"
    wait_for(
        lambda: status_of(kubectl, "gh").get("jobsCreated") == 1,
        message="jobsCreated 1: the redelivery was the same job, not a second one",
    )

    kubectl("delete", "jt", "gh", "--wait=true")
    assert wait_for(lambda: post(url, body, headers)[0] == 404, message="404 after delete")


def test_file_dropped_in_the_watched_directory_becomes_a_job(
    kubectl: Kubectl,
    start_operator: OperatorFactory,
    queue_service_process: QueueServiceProcess,
    tmp_path: Path,
) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    (incoming / "already-there.csv").write_text("a,b\n")
    start_operator()
    kubectl.apply(
        trigger_manifest(
            "files",
            {"file": {"path": str(incoming), "patterns": ["*.csv"], "settleSeconds": 0.3}},
            job={"type": "import.csv", "queue": "imports"},
        )
    )
    wait_for(lambda: running(kubectl, "files"), message="file trigger running")
    (incoming / "new.csv").write_text("x,y\n1,2\n")
    (incoming / "ignored.txt").write_text("not a csv")
    jobs = wait_for(
        lambda: len(j := list_jobs(queue_service_process.url, queue="imports")) >= 2 and j,
        timeout=15,
        message="2 file jobs",
    )
    time.sleep(1)
    jobs = list_jobs(queue_service_process.url, queue="imports")
    paths = sorted(Path(j["payload"]["file_path"]).name for j in jobs)
    assert paths == ["already-there.csv", "new.csv"]
    assert all(j["job_type"] == "import.csv" for j in jobs)


def test_missing_directory_fails_with_a_clear_message(
    kubectl: Kubectl, start_operator: OperatorFactory, tmp_path: Path
) -> None:
    start_operator()
    missing = tmp_path / "nope"
    kubectl.apply(trigger_manifest("files", {"file": {"path": str(missing)}}))
    s = wait_for(
        lambda: (st := status_of(kubectl, "files")).get("phase") == "Failed" and st, message="Failed"
    )
    assert str(missing) in s["lastError"]


@pytest.mark.services
async def test_amqp_message_becomes_a_job_and_is_acked(
    kubectl: Kubectl,
    start_operator: OperatorFactory,
    queue_service_process: QueueServiceProcess,
    rabbitmq: RabbitMQServer,
) -> None:
    import aio_pika

    queue = f"events-{uuid.uuid4().hex[:8]}"
    secret(kubectl, "mq", "url", rabbitmq.url)
    start_operator()
    kubectl.apply(
        trigger_manifest(
            "orders",
            {
                "amqp": {
                    "urlSecretRef": {"name": "mq", "key": "url"},
                    "queue": queue,
                    "declareQueue": True,
                    "eventTypeField": "event",
                    "jobTypeMapping": {"order.placed": "order.process"},
                }
            },
            job={"type": "order.unknown", "queue": "orders"},
        )
    )
    wait_for(lambda: running(kubectl, "orders"), timeout=30, message="amqp running")
    connection = await aio_pika.connect(rabbitmq.url)
    async with connection:
        channel = await connection.channel()
        for i in range(3):
            await channel.default_exchange.publish(
                aio_pika.Message(
                    json.dumps({"event": "order.placed", "order": i}).encode(),
                    message_id=f"m-{i}",
                    content_type="application/json",
                ),
                routing_key=queue,
            )
        jobs = wait_for(
            lambda: len(j := list_jobs(queue_service_process.url, queue="orders")) == 3 and j,
            timeout=15,
            message="3 amqp jobs",
        )
        assert {j["job_type"] for j in jobs} == {"order.process"}
        declared = await channel.declare_queue(queue, passive=True)
        assert declared.declaration_result.message_count == 0, "every message was acked"
    assert rabbitmq.url.split("@")[0] not in json.dumps(status_of(kubectl, "orders"))


@pytest.mark.services
async def test_database_rows_become_jobs_and_are_marked_queued(
    kubectl: Kubectl,
    start_operator: OperatorFactory,
    queue_service_process: QueueServiceProcess,
    postgres: PostgresServer,
) -> None:
    import asyncpg

    table = f"items_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(postgres.dsn)
    try:
        await conn.execute(
            f"CREATE TABLE {table} (id serial PRIMARY KEY, name text, status text NOT NULL DEFAULT 'pending')"
        )
        await conn.executemany(f"INSERT INTO {table} (name) VALUES ($1)", [("a",), ("b",), ("c",)])
        secret(kubectl, "db", "dsn", postgres.dsn)
        start_operator()
        kubectl.apply(
            trigger_manifest(
                "rows",
                {
                    "databasePoll": {
                        "dsnSecretRef": {"name": "db", "key": "dsn"},
                        "table": table,
                        "intervalSeconds": 0.5,
                        "payloadColumns": ["name"],
                    }
                },
                job={"type": "item.process", "queue": "items"},
            )
        )
        jobs = wait_for(
            lambda: len(j := list_jobs(queue_service_process.url, queue="items")) == 3 and j,
            timeout=30,
            message="3 row jobs",
        )
        assert sorted(j["payload"]["name"] for j in jobs) == ["a", "b", "c"]
        # the poller marks its batch once every job of it is stored: shortly after the jobs show up
        for _ in range(100):
            statuses = {r["status"] for r in await conn.fetch(f"SELECT status FROM {table}")}
            if statuses == {"queued"}:
                break
            await asyncio.sleep(0.1)
        assert statuses == {"queued"}
        assert postgres.dsn not in json.dumps(status_of(kubectl, "rows"))
    finally:
        await conn.close()


def test_webhook_answers_through_a_reconfiguration_and_sees_a_rotated_secret(
    kubectl: Kubectl, start_operator: OperatorFactory, queue_service_process: QueueServiceProcess
) -> None:
    op = start_operator()
    secret(kubectl, "token", "value", "first-token")
    hook = {"webhook": {"auth": {"type": "bearer", "secretRef": {"name": "token", "key": "value"}}}}
    kubectl.apply(trigger_manifest("hook", hook, job={"type": "e2e.hook"}))
    url = op.webhook_url + wait_for(lambda: running(kubectl, "hook"), message="running")["webhookPath"]
    body = json.dumps({"job_type": "e2e.hook", "payload": {}}).encode()

    def send(token: str) -> int:
        return post(url, body, {"Content-Type": "application/json", "Authorization": f"Bearer {token}"})[0]

    codes: list[int] = []
    stop = threading.Event()

    def sender() -> None:
        while not stop.is_set():
            codes.append(send("first-token"))

    thread = threading.Thread(target=sender)
    thread.start()
    try:
        time.sleep(0.5)
        kubectl.apply(trigger_manifest("hook", hook, job={"type": "e2e.hook", "priority": 9}))
        wait_for(lambda: status_of(kubectl, "hook").get("observedGeneration") == 2, message="reconfigured")
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join()
    assert codes and set(codes) == {202}, f"every request answered 202 through the change: {set(codes)}"
    assert any(j["priority"] == 9 for j in list_jobs(queue_service_process.url, job_type="e2e.hook"))

    stopped_before = op.log().count("stopped")
    secret(kubectl, "token", "value", "second-token")
    wait_for(lambda: send("second-token") == 202, message="the rotated token is accepted")
    assert send("first-token") == 401
    assert op.log().count("stopped") == stopped_before, "a rotation needs no rebuild"
