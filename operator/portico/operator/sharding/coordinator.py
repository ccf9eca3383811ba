"""Shard ownership on Leases: each replica announces itself with a membership Lease and holds shard
Leases, aiming for an even share of them.

Every round (four per retry period) a replica lists the Lease set once, then:
- renews its membership and the shards it holds (once per retry period);
- releases surplus shards when more members are alive than when it took them (their triggers are
  stopped and their status flushed first, then the Lease is released, so the next owner starts from
  the written status);
- takes free shards, and shards whose holder stopped renewing for the lease duration, up to its share.

Starting and stopping a shard's triggers happens beside the Lease loop, in order, on a worker task: a
slow hand-over of many triggers never delays the renewals (a shard being handed over stays held and
renewed until its triggers stopped). Expiry is judged by when *this* replica last saw a Lease change,
never by comparing clocks across machines (as `leader.py` does). A replica that cannot renew within
`renew_deadline` drops its shards on its own, before `lease_duration` runs out for the others; a
conflicting write means someone else may hold the shard now, and it is dropped at once.
"""

import asyncio
import contextlib
import hashlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from portico.operator.sharding.leases import LeaseConflict, LeaseRecord, LeaseStore
from portico.operator.sharding.shard_map import (
    DEFAULT_SHARDS,
    member_lease_name,
    shard_lease_name,
    shard_of,
    target_share,
)

logger = logging.getLogger(__name__)

ShardsCallback = Callable[[frozenset[int]], Awaitable[None]]


@dataclass(frozen=True)
class ShardSettings:
    prefix: str = "portico-operator"
    shards: int = DEFAULT_SHARDS
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


async def _ignore(_: frozenset[int]) -> None:
    return None


class ShardCoordinator:
    def __init__(
        self,
        store: LeaseStore,
        identity: str,
        settings: ShardSettings,
        *,
        on_acquired: ShardsCallback = _ignore,
        on_released: ShardsCallback = _ignore,
    ) -> None:
        self.store = store
        self.identity = identity
        self.settings = settings
        self.on_acquired = on_acquired
        self.on_released = on_released
        self.owned: frozenset[int] = frozenset()
        """The shards whose triggers this replica runs (or is handing over)."""
        self.members: tuple[str, ...] = ()
        self.target = 0
        self.transitions = 0
        """Shards taken or given up so far (a churn signal for the metrics)."""
        self._held: dict[int, LeaseRecord] = {}
        self._renewed: dict[int, float] = {}
        self._releasing: set[int] = set()
        self._member: LeaseRecord | None = None
        self._member_renewed = 0.0
        self._member_since: float | None = None
        self._observed: dict[str, tuple[str | None, str | None]] = {}
        self._observed_at: dict[str, float] = {}
        self._records: dict[str, LeaseRecord] = {}
        self._changes: asyncio.Queue[tuple[str, frozenset[int]]] = asyncio.Queue()
        self._writing = asyncio.Lock()
        """The Lease loop's writes and the worker's releases never interleave."""
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self.poll_period = max(0.05, settings.retry_period / 4)
        self._offset = int.from_bytes(hashlib.blake2b(identity.encode(), digest_size=4).digest(), "big")

    def owns(self, shard: int) -> bool:
        return shard in self.owned

    def owns_uid(self, uid: str) -> bool:
        return shard_of(uid, self.settings.shards) in self.owned

    def shard_of(self, uid: str) -> int:
        return shard_of(uid, self.settings.shards)

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    async def start(self) -> None:
        if self._task is None:
            self._worker = asyncio.create_task(self._work(), name="shard-handovers")
            self._task = asyncio.create_task(self._run(), name="shard-leases")

    async def close(self, *, release: bool = True) -> None:
        """Stop: finish the hand-overs under way, give every shard up (their triggers stop first) and,
        if `release`, free the Leases so the other replicas take them within one round instead of after
        the lease duration."""
        if self._task is not None:
            # The round under way finishes: a write cancelled in flight may have reached the server,
            # leaving this replica with a stale resourceVersion it could not release with.
            self._stopping.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=self.settings.renew_deadline)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        if self._worker is not None:
            await self._changes.join()
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        # Leave the members first: the others raise their shares at once and take each shard as soon
        # as it is freed, instead of a round after the last one.
        member, self._member = self._member, None
        if release and member is not None:
            with contextlib.suppress(Exception):
                await self.store.write(member.name, None, 1, member)
        await self._give_up(sorted(self._held), release=release)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._round()
            except Exception as exc:
                logger.warning("shard leases: %s", exc)
                self._drop_overdue()
            delay = self.poll_period * random.uniform(1.0, 1.2)
            expiry = self._next_expiry()
            early = expiry is not None and expiry - self._now() < delay
            if early and expiry is not None:
                delay = max(0.0, expiry - self._now()) + 0.005
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if early and not self._stopping.is_set():
                try:
                    await self._take_expired()
                except Exception as exc:
                    logger.warning("shard leases: %s", exc)

    def _next_expiry(self) -> float | None:
        """When the next Lease held by another replica expires, by what this replica saw."""
        times = [
            self._observed_at[r.name] + r.duration
            for r in self._records.values()
            if r.holder not in (None, self.identity) and r.name in self._observed_at
        ]
        future = [t for t in times if t >= self._now()]
        return min(future) if future else None

    async def _take_expired(self) -> None:
        """At the moment a Lease expires, take it with the version seen last, without listing first:
        if its holder renewed meanwhile the version moved and the write fails, so this is as safe as a
        fresh read and a round trip faster (a crash's shards run again sooner)."""
        async with self._writing:
            now = self._now()
            members = self._alive_members(self._records, now)
            target = target_share(members, self.identity, self.settings.shards)
            settled = (
                self._member_since is not None and now - self._member_since >= self.settings.retry_period
            )
            active = [s for s in self._held if s not in self._releasing]
            if len(active) < target and settled:
                await self._acquire(self._records, now, target - len(active))

    async def _work(self) -> None:
        while True:
            kind, shards = await self._changes.get()
            try:
                if kind == "acquired":
                    still = shards & self.owned
                    if still:
                        await self._notify(self.on_acquired, still)
                elif kind == "release":
                    await self._give_up(sorted(shards), release=True)
                else:
                    await self._notify(self.on_released, shards)
            finally:
                self._changes.task_done()

    async def _round(self) -> None:
        records = {r.name: r for r in await self.store.list()}
        self._records = records
        async with self._writing:
            now = self._now()
            for record in records.values():
                seen = (record.holder, record.renew_time)
                if self._observed.get(record.name) != seen:
                    self._observed[record.name] = seen
                    self._observed_at[record.name] = now
            await self._keep_membership(records, now)
            await self._renew(records, now)
            self.members = self._alive_members(records, now)
            self.target = target_share(self.members, self.identity, self.settings.shards)
            settled = (
                self._member_since is not None and now - self._member_since >= self.settings.retry_period
            )
            active = [s for s in sorted(self._held) if s not in self._releasing]
            if len(active) > self.target:
                surplus = frozenset(active[self.target :])
                self._releasing |= surplus
                self._changes.put_nowait(("release", surplus))
            elif len(active) < self.target and settled:
                await self._acquire(records, now, self.target - len(active))

    def _free(self, record: LeaseRecord | None, now: float) -> bool:
        if record is None or record.holder is None:
            return True
        if record.holder == self.identity:
            return True  # an earlier run of this replica (same identity) held it
        return now > self._observed_at.get(record.name, now) + record.duration

    def _alive_members(self, records: dict[str, LeaseRecord], now: float) -> tuple[str, ...]:
        prefix = f"{self.settings.prefix}-member-"
        alive = {
            r.holder
            for r in records.values()
            if r.name.startswith(prefix) and r.holder is not None and not self._free(r, now)
        }
        if self._member is not None:
            alive.add(self.identity)
        return tuple(sorted(h for h in alive if h is not None))

    async def _keep_membership(self, records: dict[str, LeaseRecord], now: float) -> None:
        s = self.settings
        if self._member is not None:
            current = records.get(self._member.name)
            if current is not None and current.holder not in (None, self.identity):
                logger.warning("membership Lease %s taken by %s", current.name, current.holder)
                self._member, self._member_since = None, None
            elif now - self._member_renewed >= s.retry_period:
                with contextlib.suppress(LeaseConflict):
                    self._member = await self.store.write(
                        self._member.name, self.identity, s.lease_duration, current
                    )
                    self._member_renewed = now
            if self._member is not None and now - self._member_renewed > s.renew_deadline:
                self._member, self._member_since = None, None
            return
        mine = [
            r
            for r in records.values()
            if r.holder == self.identity and r.name.startswith(f"{s.prefix}-member-")
        ]
        slots = [mine[0].name] if mine else []
        slots += [
            member_lease_name(s.prefix, i)
            for i in range(s.shards)
            if self._free(records.get(member_lease_name(s.prefix, i)), now)
        ]
        for name in slots:
            try:
                self._member = await self.store.write(
                    name, self.identity, s.lease_duration, records.get(name)
                )
            except LeaseConflict:
                continue
            self._member_renewed = now
            self._member_since = now
            logger.info("joined the shard members as %s (Lease %s)", self.identity, name)
            return
        logger.warning("no free membership Lease: more replicas than shards (%d)", s.shards)

    async def _renew(self, records: dict[str, LeaseRecord], now: float) -> None:
        s = self.settings
        lost: list[int] = []

        async def renew(shard: int) -> None:
            current = records.get(shard_lease_name(s.prefix, shard))
            if current is None or current.holder != self.identity:
                lost.append(shard)
                return
            if now - self._renewed.get(shard, 0.0) < s.retry_period:
                return
            try:
                self._held[shard] = await self.store.write(
                    current.name, self.identity, s.lease_duration, current
                )
                self._renewed[shard] = now
            except LeaseConflict:
                lost.append(shard)
            except Exception as exc:
                logger.warning("could not renew shard %d: %s", shard, exc)

        await asyncio.gather(*(renew(shard) for shard in list(self._held)))
        if lost:
            logger.warning("lost shards %s to another replica", sorted(lost))
            self._lose(lost)
        self._drop_overdue()

    def _drop_overdue(self) -> None:
        now = self._now()
        overdue = [s for s in self._held if now - self._renewed.get(s, now) > self.settings.renew_deadline]
        if overdue:
            logger.warning("could not renew shards %s in time: giving them up", sorted(overdue))
            self._lose(overdue)

    def _lose(self, shards: list[int]) -> None:
        """Stop counting these shards as ours at once (another replica may hold them soon), and stop
        their triggers on the worker."""
        for shard in shards:
            self._held.pop(shard, None)
            self._renewed.pop(shard, None)
            self._releasing.discard(shard)
        self.owned = self.owned - frozenset(shards)
        self.transitions += len(shards)
        self._changes.put_nowait(("lost", frozenset(shards)))

    async def _acquire(self, records: dict[str, LeaseRecord], now: float, wanted: int) -> None:
        """Take up to `wanted` free or expired shards, writing a batch at a time (one round trip, not
        one per shard: after a crash every survivor wants its part of the orphans at once)."""
        s = self.settings
        order = [(self._offset + i) % s.shards for i in range(s.shards)]
        candidates = [
            shard
            for shard in order
            if shard not in self._held and self._free(records.get(shard_lease_name(s.prefix, shard)), now)
        ]
        gained: list[int] = []

        async def take(shard: int) -> None:
            name = shard_lease_name(s.prefix, shard)
            try:
                self._held[shard] = await self.store.write(
                    name, self.identity, s.lease_duration, records.get(name)
                )
            except LeaseConflict:
                return
            self._renewed[shard] = now
            gained.append(shard)

        while candidates and len(gained) < wanted:
            batch, candidates = candidates[: wanted - len(gained)], candidates[wanted - len(gained) :]
            await asyncio.gather(*(take(shard) for shard in batch))
        if gained:
            self.owned = self.owned | frozenset(gained)
            self.transitions += len(gained)
            logger.info("took shards %s (%d of %d held)", sorted(gained), len(self._held), s.shards)
            self._changes.put_nowait(("acquired", frozenset(gained)))

    async def _give_up(self, shards: list[int], *, release: bool) -> None:
        """Stop running the shards' triggers (they stay held and renewed meanwhile), then, if
        `release`, free their Leases."""
        shards = [s for s in shards if s in self._held]
        if not shards:
            return
        await self._notify(self.on_released, frozenset(shards))
        async with self._writing:
            records = [self._held.pop(s) for s in shards if s in self._held]
            for s in shards:
                self._renewed.pop(s, None)
                self._releasing.discard(s)
            self.owned = self.owned - frozenset(shards)
            self.transitions += len(shards)
            if release:
                await self._release(records)
        logger.info("gave up shards %s (%d of %d held)", shards, len(self._held), self.settings.shards)

    async def _release(self, records: list[LeaseRecord]) -> None:
        """Free the Leases; one whose version moved (a renewal that raced) is re-read and freed if it is
        still ours. One that cannot be freed expires after the lease duration."""
        results = await asyncio.gather(
            *(self.store.write(r.name, None, 1, r) for r in records), return_exceptions=True
        )
        failed = [
            r.name for r, result in zip(records, results, strict=True) if isinstance(result, BaseException)
        ]
        if not failed:
            return
        try:
            current = {r.name: r for r in await self.store.list() if r.name in failed}
            for record in current.values():
                if record.holder == self.identity:
                    await self.store.write(record.name, None, 1, record)
        except Exception as exc:
            logger.warning("could not release %s: %s", failed, exc)

    @staticmethod
    async def _notify(callback: ShardsCallback, shards: frozenset[int]) -> None:
        try:
            await callback(shards)
        except Exception:
            logger.exception("error handling a change of shards %s", sorted(shards))
