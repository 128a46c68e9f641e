"""The daily schedule, at the time the settings give (``timing.py``)."""

import dagster as dg

from .jobs import patronload_job
from .timing import LOAD_TIMING

daily_patronload = dg.ScheduleDefinition(
    name="daily_patronload",
    job=patronload_job,
    cron_schedule=LOAD_TIMING.cron,
    execution_timezone=LOAD_TIMING.timezone,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="The daily patron load Alma's integration profile picks up (LOAD_SCHEDULE, LOAD_TIMEZONE).",
)
