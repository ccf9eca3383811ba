"""The port of a trigger that can fire once on demand, outside its own events: what the run-now
annotation asks for (as `kubectl create job --from=cronjob/x` does for a CronJob)."""

from abc import ABC, abstractmethod

from portico.ports.job_creator import Job


class RunsOnDemand(ABC):
    @abstractmethod
    async def run_now(self, token: str) -> Job:
        """Create the trigger's job once, now. The idempotency key derives from `token`, so asking
        twice with the same token returns the same job. Raises `JobCreationError`."""
