"""The JobTrigger watch: against the real API server (list, watch, per-namespace scope, deletions seen by
a re-list), and its pure parts (per-object ordering and coalescing, line splitting, watch errors)."""

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from portico.operator.resource import GROUP, PLURAL, VERSION
from portico.operator.sharding.routes import SHARD_LABEL
from portico.operator.sharding.shard_map import shard_of
from portico.operator.trigger_watch import (
    MAX_EVENT_BYTES,
    JobTriggerWatch,
    ObjectQueue,
    Stream,
    WatchExpired,
    WatchTimings,
    _lines,
)

Seen = list[tuple[str | None, str, str]]


def manifest(name: str, cron: str = "0 0 1 1 *") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "JobTrigger",
        "metadata": {"name": name},
        "spec": {"job": {"type": "watch.test"}, "schedule": {"cron": cron}},
    }


def recorder(seen: Seen) -> Any:
    async def handle(event_type: str | None, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        seen.append((event_type, meta.get("name", ""), meta["uid"]))

    return handle


async def until(condition: Any, within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not condition():
            await asyncio.sleep(0.02)


async def create(api: Any, namespace: str, name: str) -> str:
    obj = await client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, manifest(name)
    )
    return str(obj["metadata"]["uid"])


async def delete(api: Any, namespace: str, name: str) -> None:
    await client.CustomObjectsApi(api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )


async def test_lists_then_watches_adds_changes_and_deletions_in_one_namespace(
    kube_api: Any, namespace: str, control_plane: Any
) -> None:
    other = f"{namespace}-other"
    control_plane.ensure_namespace(other)
    before = await create(kube_api, namespace, "before")
    await create(kube_api, other, "elsewhere")
    seen: Seen = []
    watch = JobTriggerWatch(kube_api, [namespace], recorder(seen))
    watch.start()
    try:
        await until(lambda: seen)
        assert seen == [(None, "before", before)], "an existing object comes from the list"
        later = await create(kube_api, namespace, "later")
        await until(lambda: ("ADDED", "later", later) in seen)
        await client.CustomObjectsApi(kube_api).patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            "later",
            {"spec": {"suspend": True}},
            _content_type="application/merge-patch+json",
        )
        await until(lambda: ("MODIFIED", "later", later) in seen)
        await delete(kube_api, namespace, "before")
        await until(lambda: ("DELETED", "before", before) in seen)
        await create(kube_api, other, "elsewhere-too")
        await create(kube_api, namespace, "last")
        await until(lambda: any(name == "last" for _, name, _ in seen))
        assert not any(name.startswith("elsewhere") for _, name, _ in seen), "only its own namespace"
    finally:
        await watch.stop(grace=5)


async def test_a_relist_reports_what_was_deleted_while_no_watch_was_open(
    kube_api: Any, namespace: str
) -> None:
    stays = await create(kube_api, namespace, "stays")
    goes = await create(kube_api, namespace, "goes")
    seen: Seen = []
    watch = JobTriggerWatch(kube_api, [namespace], recorder(seen))
    watch.start()
    await until(lambda: len(seen) == 2)
    await watch.stop(grace=5)

    await delete(kube_api, namespace, "goes")
    seen.clear()
    watch.start()
    try:
        await until(lambda: len(seen) == 2)
        assert sorted(seen, key=str) == sorted([(None, "stays", stays), ("DELETED", "", goes)], key=str)
    finally:
        await watch.stop(grace=5)


async def test_lists_in_pages_and_watches_every_namespace(kube_api: Any, namespace: str) -> None:
    uids = {await create(kube_api, namespace, f"p{i}") for i in range(7)}
    seen: Seen = []
    watch = JobTriggerWatch(kube_api, [], recorder(seen))
    watch.timings = WatchTimings(page_size=3)
    watch.start()
    try:
        await until(lambda: uids <= {uid for _, _, uid in seen})
        assert all(kind is None for kind, _, uid in seen if uid in uids)
        added = await create(kube_api, namespace, "added")
        await until(lambda: ("ADDED", "added", added) in seen)
    finally:
        await watch.stop(grace=5)


async def create_labelled(api: Any, namespace: str, name: str, shard: str | None) -> str:
    body = manifest(name)
    if shard is not None:
        body["metadata"]["labels"] = {SHARD_LABEL: shard}
    obj = await client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body
    )
    return str(obj["metadata"]["uid"])


async def relabel(api: Any, namespace: str, name: str, shard: str | None) -> None:
    await client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        name,
        {"metadata": {"labels": {SHARD_LABEL: shard}}},
        _content_type="application/merge-patch+json",
    )


async def test_sharded_streams_show_a_replica_its_shards_the_shared_and_the_unlabelled_triggers(
    kube_api: Any, namespace: str
) -> None:
    uid = {
        "mine": await create_labelled(kube_api, namespace, "mine", "1"),
        "theirs": await create_labelled(kube_api, namespace, "theirs", "2"),
        "shared": await create_labelled(kube_api, namespace, "shared", "all"),
        "fresh": await create_labelled(kube_api, namespace, "fresh", None),
        "odd": await create_labelled(kube_api, namespace, "odd", "07"),
    }
    seen: Seen = []
    watch = JobTriggerWatch(kube_api, [namespace], recorder(seen), shards=4)
    watch.start()
    watch.watch_shards([1])
    try:
        await until(lambda: len(seen) == 4)
        assert {name for _, name, _ in seen} == {"mine", "shared", "fresh", "odd"}, "not another shard's"
        assert len(watch) == 4

        async def sentinel(name: str) -> None:
            """An unlabelled creation: once it is seen, every earlier event of that stream was."""
            await create_labelled(kube_api, namespace, name, None)
            await until(lambda: any(n == name for _, n, _ in seen))

        await relabel(kube_api, namespace, "fresh", "1")  # its owner labels it: from unlabelled to shard 1
        await until(lambda: ("ADDED", "fresh", uid["fresh"]) in seen)
        await sentinel("s1")
        fresh = [k for k, n, _ in seen if n == "fresh"]
        assert fresh in ([None, "ADDED"], [None, "DELETED", "ADDED"]), "it ends shown, whichever came first"

        await relabel(kube_api, namespace, "shared", "2")  # to a shard another replica holds
        await until(lambda: ("DELETED", "shared", uid["shared"]) in seen)
        await relabel(kube_api, namespace, "theirs", "1")
        await until(lambda: ("ADDED", "theirs", uid["theirs"]) in seen)
        await delete(kube_api, namespace, "mine")
        await until(lambda: ("DELETED", "mine", uid["mine"]) in seen)

        gone = await watch.unwatch_shards([1])
        assert gone == {uid["fresh"], uid["theirs"]}
        assert len(watch) == 2, "odd and s1"
        await relabel(kube_api, namespace, "theirs", "all")
        await until(lambda: ("ADDED", "theirs", uid["theirs"]) in seen[-3:])
        await relabel(kube_api, namespace, "odd", None)
        await sentinel("s2")
        assert [k for k, n, _ in seen if n == "odd"] == [None, "MODIFIED"], "unrouted either way"
    finally:
        await watch.stop(grace=5)


async def test_shards_taken_together_share_a_stream_and_giving_some_up_lists_the_rest_again(
    kube_api: Any, namespace: str
) -> None:
    by_shard: dict[int, set[str]] = {}
    for i in range(12):
        uid = await create_labelled(kube_api, namespace, f"t{i}", None)
        await relabel(kube_api, namespace, f"t{i}", str(shard_of(uid, 4)))
        by_shard.setdefault(shard_of(uid, 4), set()).add(uid)
    seen: Seen = []
    watch = JobTriggerWatch(kube_api, [namespace], recorder(seen), shards=4)
    watch.start()
    watch.watch_shards([0, 1])
    try:
        held = by_shard.get(0, set()) | by_shard.get(1, set())
        await until(lambda: {uid for _, _, uid in seen} == held)
        assert len(watch._tasks) == 3, "the shared, the unlabelled and one for both shards"
        seen.clear()
        gone = await watch.unwatch_shards([1])
        assert gone == by_shard.get(1, set())
        await until(lambda: {uid for kind, _, uid in seen if kind is None} == by_shard.get(0, set()))
        assert len(watch) == len(by_shard.get(0, set()))
        if by_shard.get(0):
            name = next(n for _, n, uid in seen if uid in by_shard[0])
            await delete(kube_api, namespace, name)
            await until(lambda: any(kind == "DELETED" and n == name for kind, n, _ in seen))
    finally:
        await watch.stop(grace=5)


# --- pure parts ----------------------------------------------------------------------------------


def obj(uid: str, version: str = "1") -> dict[str, Any]:
    return {"metadata": {"uid": uid, "name": uid, "namespace": "ns", "resourceVersion": version}}


async def test_an_objects_events_run_in_order_and_only_the_newest_waits() -> None:
    gate = asyncio.Event()
    handled: list[tuple[str | None, str, str]] = []

    async def handle(event_type: str | None, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        if meta["resourceVersion"] == "1":
            await gate.wait()
        handled.append((event_type, meta["uid"], meta["resourceVersion"]))

    queue = ObjectQueue(handle)
    queue.put(None, obj("a", "1"))
    queue.put("MODIFIED", obj("b", "1"))
    await asyncio.sleep(0)
    queue.put("MODIFIED", obj("a", "2"))
    queue.put("MODIFIED", obj("a", "3"))
    queue.put("MODIFIED", obj("c", "5"))
    await until(lambda: ("MODIFIED", "c", "5") in handled)
    assert handled == [("MODIFIED", "c", "5")], "other objects do not wait for a busy one"
    gate.set()
    await until(lambda: len(handled) == 4)
    assert [h for h in handled if h[1] == "a"] == [(None, "a", "1"), ("MODIFIED", "a", "3")]
    assert len(queue) == 0


async def test_a_failing_event_is_logged_and_the_next_one_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handled: list[str] = []

    async def handle(event_type: str | None, body: dict[str, Any]) -> None:
        if body["metadata"]["resourceVersion"] == "1":
            raise RuntimeError("boom")
        handled.append(body["metadata"]["resourceVersion"])

    queue = ObjectQueue(handle)
    with caplog.at_level(logging.ERROR):
        queue.put(None, obj("a", "1"))
        await until(lambda: len(queue) == 0)
        queue.put("MODIFIED", obj("a", "2"))
        await until(lambda: handled == ["2"])
    assert "error handling a watch event of JobTrigger ns/a" in caplog.text


async def test_close_waits_for_the_grace_then_cancels() -> None:
    finished: list[str] = []

    async def handle(event_type: str | None, body: dict[str, Any]) -> None:
        uid = body["metadata"]["uid"]
        await asyncio.sleep(0.05 if uid == "quick" else 60)
        finished.append(uid)

    queue = ObjectQueue(handle)
    queue.put(None, obj("quick"))
    queue.put(None, obj("stuck"))
    await asyncio.sleep(0)
    queue.put("MODIFIED", obj("quick", "2"))
    await queue.close(grace=0.5)
    assert finished == ["quick"], "a started event finishes; one still waiting is dropped"
    assert len(queue) == 0


class Chunks:
    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks

    async def iter_any(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


async def test_lines_are_joined_across_chunks_and_bounded() -> None:
    stream: Any = Chunks(b'{"a":', b'1}\n{"b"', b":2}\n\n", b'{"c":3}')
    assert [line async for line in _lines(stream)] == [b'{"a":1}', b'{"b":2}', b'{"c":3}']
    huge: Any = Chunks(b"x" * (MAX_EVENT_BYTES + 1))
    with pytest.raises(ValueError, match="longer than"):
        [line async for line in _lines(huge)]


async def test_watch_errors_bookmarks_and_unknown_events() -> None:
    seen: Seen = []
    async with client.ApiClient() as api:
        watch = JobTriggerWatch(api, ["ns"], recorder(seen))
    stream = Stream("ns")
    expired = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}
    with pytest.raises(WatchExpired):
        watch._dispatch(stream, expired)
    with pytest.raises(ApiException) as failed:
        watch._dispatch(stream, {"type": "ERROR", "object": {"code": 500, "reason": "InternalError"}})
    assert failed.value.status == 500
    bookmark = {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "42"}}}
    assert watch._dispatch(stream, bookmark) == "42"
    assert watch._dispatch(stream, {"type": "SOMETHING", "object": obj("x", "43")}) == "43"
    assert not watch._homes and len(watch.queue) == 0


async def test_a_watch_the_server_ends_is_reopened_from_where_it_was(kube_api: Any, namespace: str) -> None:
    first = await create(kube_api, namespace, "first")
    seen: Seen = []
    watch = JobTriggerWatch(kube_api, [namespace], recorder(seen), WatchTimings(server_timeout=1))
    watch.start()
    try:
        await until(lambda: seen == [(None, "first", first)])
        await asyncio.sleep(1.5)
        second = await create(kube_api, namespace, "second")
        await until(lambda: ("ADDED", "second", second) in seen)
        assert seen == [(None, "first", first), ("ADDED", "second", second)], "no second list"
    finally:
        await watch.stop(grace=5)


async def test_the_watch_is_held_back_while_limit_objects_are_in_hand() -> None:
    gate = asyncio.Event()

    async def handle(event_type: str | None, body: dict[str, Any]) -> None:
        await gate.wait()

    queue = ObjectQueue(handle, limit=2)
    queue.put(None, obj("a"))
    await asyncio.wait_for(queue.room(), timeout=1)
    queue.put(None, obj("b"))
    waiting = asyncio.create_task(queue.room())
    await asyncio.sleep(0.05)
    assert not waiting.done(), "two objects in hand: no room for a third"
    gate.set()
    await asyncio.wait_for(waiting, timeout=1)


async def test_a_forbidden_watch_says_what_to_grant_and_recovers_once_granted(
    control_plane: Any, kube_api: Any, namespace: str, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from kubernetes_asyncio import config

    kubeconfig = control_plane.service_account_kubeconfig(namespace, "watcher", tmp_path / "kubeconfig")
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    seen: Seen = []
    async with client.ApiClient(configuration) as api:
        watch = JobTriggerWatch(
            api, [namespace], recorder(seen), WatchTimings(backoff_initial=0.2, backoff_max=0.4)
        )
        with caplog.at_level(logging.WARNING, logger="portico.operator.trigger_watch"):
            watch.start()
            try:
                await until(lambda: "403" in caplog.text)
                assert f"needs get, list and watch on {PLURAL}.{GROUP}" in caplog.text
                assert "Bearer" not in caplog.text and "token" not in caplog.text.lower()
                rules = [{"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["get", "list", "watch"]}]
                control_plane.request(
                    "POST",
                    f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles",
                    {
                        "apiVersion": "rbac.authorization.k8s.io/v1",
                        "kind": "Role",
                        "metadata": {"name": "w"},
                        "rules": rules,
                    },
                )
                control_plane.request(
                    "POST",
                    f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
                    {
                        "apiVersion": "rbac.authorization.k8s.io/v1",
                        "kind": "RoleBinding",
                        "metadata": {"name": "w"},
                        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "w"},
                        "subjects": [{"kind": "ServiceAccount", "name": "watcher", "namespace": namespace}],
                    },
                )
                uid = await create(kube_api, namespace, "granted")
                await until(lambda: any(u == uid for _, _, u in seen), within=15)
            finally:
                await watch.stop(grace=5)
