"""Sharding: triggers spread over operator replicas by shard Leases, so capacity grows with replicas
and a crash moves only the dead replica's slice."""
