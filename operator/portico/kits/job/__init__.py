"""The job kit: `JobService`, the `JobCreator` that triggers use, over any `JobQueue`."""

from portico.kits.job.job_service import JobService

__all__ = ["JobService"]
