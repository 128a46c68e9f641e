"""When the load runs, and when it is overdue: the one place the time of the daily load is set.

``LOAD_SCHEDULE`` (cron), ``LOAD_TIMEZONE`` and ``LOAD_DEADLINE_MINUTES``: the daily schedule
(``schedules.py``) runs at each scheduled time; a load that has not succeeded by the scheduled time
plus the deadline minutes is overdue (``reports/overdue.py``; the zips' freshness policy).
``LOAD_RETRY_MINUTES``: how long after a failure the deployment retries the load (``retries.py``).
``SENSOR_INTERVAL_SECONDS``: how often the report and overdue sensors look (``reports/sensors.py``,
``reports/overdue.py``), so how soon after a run or a deadline its email goes out. Not secrets: the
UI shows them anyway.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dagster as dg
from dagster._utils.schedules import is_valid_cron_string, schedule_execution_time_iterator

from ..configuration import ConfigurationError, number_setting

DEFAULT_CRON, DEFAULT_TIMEZONE, DEFAULT_DEADLINE_MINUTES = "0 5 * * *", "America/New_York", 120
# Dagster's sensor daemon looks at most every 5 seconds; 30 keeps the reports' queries rare.
DEFAULT_SENSOR_SECONDS, FASTEST_SENSOR_SECONDS = 30, 5
# A failed load's first retry starts this long after the failure, the second twice as long after its
# own (retries.py): a bucket or warehouse that is down is rarely back within seconds.
DEFAULT_RETRY_MINUTES = 5


@dataclass(frozen=True)
class LoadTiming:
    cron: str = DEFAULT_CRON
    timezone: str = DEFAULT_TIMEZONE
    deadline_minutes: int = DEFAULT_DEADLINE_MINUTES
    sensor_seconds: int = DEFAULT_SENSOR_SECONDS
    retry_minutes: float = DEFAULT_RETRY_MINUTES

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> LoadTiming:
        """The settings, checked: an invalid one stops the code location, naming it."""
        cron = environ.get("LOAD_SCHEDULE", "").strip() or DEFAULT_CRON
        if not is_valid_cron_string(cron):
            raise ConfigurationError(f"LOAD_SCHEDULE is not a valid cron expression: {cron!r}")
        timezone = environ.get("LOAD_TIMEZONE", "").strip() or DEFAULT_TIMEZONE
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigurationError(f"LOAD_TIMEZONE is not a known time zone: {timezone!r}") from None
        minutes = environ.get("LOAD_DEADLINE_MINUTES", "").strip() or str(DEFAULT_DEADLINE_MINUTES)
        if not minutes.isdecimal() or int(minutes) < 1:
            raise ConfigurationError(f"LOAD_DEADLINE_MINUTES must be a whole number of minutes: {minutes!r}")
        seconds = number_setting(
            environ, "SENSOR_INTERVAL_SECONDS", DEFAULT_SENSOR_SECONDS, least=FASTEST_SENSOR_SECONDS
        )
        retry = number_setting(environ, "LOAD_RETRY_MINUTES", DEFAULT_RETRY_MINUTES, float)
        return cls(cron, timezone, int(minutes), seconds, retry)

    def scheduled_times(self, after: dt.datetime) -> Iterator[dt.datetime]:
        """Scheduled times at or after ``after``, in the schedule's time zone (as the daemon ticks)."""
        yield from schedule_execution_time_iterator(after.timestamp(), self.cron, self.timezone)

    def deadline(self, scheduled: dt.datetime) -> dt.datetime:
        """The scheduled time plus the deadline minutes of elapsed time (daylight saving included)."""
        return (scheduled.astimezone(dt.UTC) + dt.timedelta(minutes=self.deadline_minutes)).astimezone(
            scheduled.tzinfo
        )

    def deadlines_between(
        self, start: dt.datetime, end: dt.datetime
    ) -> list[tuple[dt.datetime, dt.datetime]]:
        """(scheduled time, deadline) of every deadline in ``(start, end]``, oldest first."""
        found = []
        for scheduled in self.scheduled_times(start - dt.timedelta(minutes=self.deadline_minutes)):
            deadline = self.deadline(scheduled)
            if deadline > end:
                break
            if deadline > start:
                found.append((scheduled, deadline))
        return found

    def interval(self, around: dt.datetime) -> dt.timedelta:
        """The time between two scheduled times next to ``around``."""
        times = self.scheduled_times(around)
        first = next(times)
        return next(times) - first


LOAD_TIMING = LoadTiming.from_environment(os.environ)

# The zips are fresh while a load has landed within one schedule interval plus the deadline (26
# hours for the daily load at the defaults); Dagster shows a stale one in red in the lineage.
ZIP_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=LOAD_TIMING.interval(dt.datetime.now(dt.UTC))
    + dt.timedelta(minutes=LOAD_TIMING.deadline_minutes),
    warn_window=LOAD_TIMING.interval(dt.datetime.now(dt.UTC)),
)
