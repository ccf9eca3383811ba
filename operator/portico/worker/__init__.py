"""The worker: claims jobs from the queue, runs the `JobHandler` for each, keeps their leases while
they run, and reports the outcome. `Worker` for the library, `portico worker` for the command line."""

from portico.worker.worker import Worker

__all__ = ["Worker"]
