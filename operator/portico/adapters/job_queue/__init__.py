"""Adapters of the `JobQueue` port: the reference queue service over HTTP, and an in-memory queue."""
