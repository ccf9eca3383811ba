"""Handlers shipped for trying Portico out (`make run` runs `portico worker --handlers
portico.worker.examples:handlers`): they log the job and complete it after a short pause, so a new
user can watch jobs go pending → running → completed. Copy one as the start of a real handler."""

import asyncio
import logging
from typing import Any

from portico.ports.job_creator import Job
from portico.ports.job_handler import ANY_JOB_TYPE, JobHandler, PermanentFailure

logger = logging.getLogger(__name__)

MAX_PAUSE_SECONDS = 60.0


class LogAndComplete(JobHandler):
    """Logs every job it gets and completes it. `payload.sleep_seconds` (at most a minute) makes it
    take that long; `payload.fail: true` makes it fail for good, to see a `failed` job."""

    job_types = (ANY_JOB_TYPE,)

    def __init__(self, default_pause: float = 2.0) -> None:
        self.default_pause = default_pause

    async def handle(self, job: Job) -> Any:
        pause = job.payload.get("sleep_seconds", self.default_pause)
        if not isinstance(pause, int | float) or isinstance(pause, bool) or not pause >= 0:
            raise PermanentFailure("payload.sleep_seconds must be a non-negative number")
        logger.info(
            "handling job %s of type %s from queue %s (attempt %d)",
            job.id,
            job.job_type,
            job.queue_name,
            job.attempts,
            extra={"job_id": job.id, "job_type": job.job_type},
        )
        await asyncio.sleep(min(float(pause), MAX_PAUSE_SECONDS))
        if job.payload.get("fail") is True:
            raise PermanentFailure("the payload asked this job to fail")
        return {"handled_by": "portico.worker.examples", "job_type": job.job_type}


handlers = [LogAndComplete()]
