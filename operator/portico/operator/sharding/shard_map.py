"""Which shard a trigger belongs to, and how many shards each replica should hold.

Pure functions: every replica computes the same answers from the same inputs, with nothing to agree on
but the list of members.
"""

import hashlib
from collections.abc import Iterable

DEFAULT_SHARDS = 32
MAX_SHARDS = 1024


def shard_of(uid: str, shards: int) -> int:
    """The shard of a trigger: a stable hash of its UID (the same in every process and Python version,
    unlike `hash()`), so a trigger keeps its shard for its whole life, renames included."""
    digest = hashlib.blake2b(uid.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def target_share(members: Iterable[str], me: str, shards: int) -> int:
    """How many shards `me` should hold: an even share, the remainder going to the first members in
    sorted order (32 shards over 3 replicas: 11, 11, 10). Zero when `me` is not a member."""
    ordered = sorted(set(members))
    if me not in ordered:
        return 0
    base, extra = divmod(shards, len(ordered))
    return base + (1 if ordered.index(me) < extra else 0)


def shard_lease_name(prefix: str, shard: int) -> str:
    return f"{prefix}-shard-{shard}"


def member_lease_name(prefix: str, slot: int) -> str:
    """Membership Leases are numbered slots, not named after Pods, so that RBAC can list every Lease
    the operator may write by name (`resourceNames`)."""
    return f"{prefix}-member-{slot}"
