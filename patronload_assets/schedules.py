"""When the load runs: every morning, before the library opens."""

import dagster as dg

from .jobs import patronload_job

# The one place the time of the daily load is set.
DAILY_CRON = "0 5 * * *"
TIMEZONE = "America/New_York"

daily_patronload = dg.ScheduleDefinition(
    name="daily_patronload",
    job=patronload_job,
    cron_schedule=DAILY_CRON,
    execution_timezone=TIMEZONE,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="The daily patron load Alma's integration profile picks up.",
)
