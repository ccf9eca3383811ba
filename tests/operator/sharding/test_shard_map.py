import uuid
from collections import Counter

from portico.operator.sharding.shard_map import shard_of, target_share


def test_the_shard_of_a_uid_is_stable_across_processes() -> None:
    assert shard_of("6f1c1e0a-3f4b-4d7e-9a41-2d2c8f0e5b11", 32) == shard_of(
        "6f1c1e0a-3f4b-4d7e-9a41-2d2c8f0e5b11", 32
    )
    assert [shard_of(f"uid-{i}", 32) for i in range(5)] == [2, 12, 9, 2, 15]


def test_uids_spread_evenly_over_the_shards() -> None:
    counts = Counter(shard_of(str(uuid.uuid4()), 32) for _ in range(32_000))
    assert len(counts) == 32
    assert all(800 <= n <= 1200 for n in counts.values()), counts


def test_shares_are_even_and_cover_every_shard() -> None:
    for replicas in range(1, 40):
        members = [f"replica-{i}" for i in range(replicas)]
        shares = [target_share(members, m, 32) for m in members]
        assert sum(shares) == 32
        assert max(shares) - min(shares) <= 1
    assert sorted(target_share(["a", "b", "c"], m, 32) for m in "abc") == [10, 11, 11]
    assert target_share(["a", "b"], "c", 32) == 0
