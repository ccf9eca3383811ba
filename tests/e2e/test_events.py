"""Kubernetes Events on JobTriggers: identical events aggregate into one with a count, and a trigger
failing in a tight loop cannot flood the API server."""

import asyncio
from typing import Any

from portico.domain.trigger import TriggerRef
from portico.operator.kube import EventRecorder
from tests.conftest import Kubectl
from tests.e2e.conftest import trigger_manifest


def make_trigger(kubectl: Kubectl, name: str) -> TriggerRef:
    kubectl.apply(trigger_manifest(name, {"schedule": {"cron": "0 9 * * *"}}))
    uid = kubectl.json("get", "jt", name)["metadata"]["uid"]
    return TriggerRef(name=name, namespace=kubectl.namespace or "", uid=uid)


def events_of(kubectl: Kubectl, name: str) -> list[dict[str, Any]]:
    return list(kubectl.json("get", "events", "--field-selector", f"involvedObject.name={name}")["items"])


async def test_identical_events_aggregate_and_bursts_are_limited(kube_api: Any, kubectl: Kubectl) -> None:
    recorder = EventRecorder(kube_api, burst=5, refill_seconds=3600, host="test")
    await recorder.start()
    same = make_trigger(kubectl, "same")
    noisy = make_trigger(kubectl, "noisy")
    for _ in range(4):
        recorder.record(same, "Warning", "QueueUnavailable", "the queue service answered 503")
    for i in range(40):
        recorder.record(noisy, "Warning", "JobFailed", f"job {i} failed")
    await recorder.close()

    aggregated = events_of(kubectl, "same")
    assert len(aggregated) == 1
    event = aggregated[0]
    assert (event["type"], event["reason"], event["count"]) == ("Warning", "QueueUnavailable", 4)
    assert event["involvedObject"]["uid"] == same.uid
    assert event["source"]["component"] == "portico-operator"

    assert len(events_of(kubectl, "noisy")) == 5, "only the burst got through"
    assert recorder.dropped == 35


async def test_close_drains_what_is_queued(kube_api: Any, kubectl: Kubectl) -> None:
    recorder = EventRecorder(kube_api)
    await recorder.start()
    ref = make_trigger(kubectl, "t")
    recorder.record(ref, "Normal", "Started", "running")
    await asyncio.wait_for(recorder.close(), 10)
    assert [e["reason"] for e in events_of(kubectl, "t")] == ["Started"]
