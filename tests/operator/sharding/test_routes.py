"""The shard label: which watch hands a trigger to which replica."""

from portico.operator.sharding.routes import (
    EVERYWHERE,
    SHARD_LABEL,
    UNROUTED,
    label_value,
    route_of,
    selector,
)


def test_a_trigger_one_replica_runs_carries_its_shard_and_one_every_replica_serves_carries_all() -> None:
    assert label_value(7, everywhere=False) == "7"
    assert label_value(7, everywhere=True) == EVERYWHERE


def test_only_all_and_canonical_shard_numbers_below_the_count_route() -> None:
    assert route_of({SHARD_LABEL: "all"}, 32) == EVERYWHERE
    assert route_of({SHARD_LABEL: "0"}, 32) == 0
    assert route_of({SHARD_LABEL: "31"}, 32) == 31
    for value in ("32", "007", "-1", "+3", "3 ", "", "ALL", "٣"):
        assert route_of({SHARD_LABEL: value}, 32) == UNROUTED, value
    assert route_of({}, 32) == UNROUTED
    assert route_of({"other": "3"}, 32) == UNROUTED


def test_the_unrouted_selector_selects_what_no_other_selects() -> None:
    assert selector(5, 8) == f"{SHARD_LABEL}=5"
    assert selector(EVERYWHERE, 8) == f"{SHARD_LABEL}=all"
    assert selector(UNROUTED, 4) == f"{SHARD_LABEL} notin (all,0,1,2,3)"
    assert selector(frozenset({7, 2}), 8) == f"{SHARD_LABEL} in (2,7)"
