"""Times as Kubernetes writes them in status and Events."""

from datetime import UTC, datetime


def rfc3339(moment: datetime) -> str:
    """`2026-11-29T09:00:00Z`: UTC, whole seconds, the form `metav1.Time` uses."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
