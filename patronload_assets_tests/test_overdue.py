"""Silence is a failure: deadlines, and the overdue report's decisions on a real instance."""

import datetime as dt
import email
import json
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from patronload_assets import defs
from patronload_assets.configuration import ConfigurationError
from patronload_assets.institutions.mit import synthetic
from patronload_assets.load.timing import LoadTiming
from patronload_assets.reports import overdue
from patronload_assets.resources.bucket import LocalBucket
from patronload_assets.resources.institution import InstitutionData
from patronload_assets.resources.mail import OutboxMailer
from patronload_assets.resources.warehouse import SqliteWarehouse

from .conftest import state_resources

NEW_YORK = ZoneInfo("America/New_York")


def at(*args, zone=NEW_YORK) -> dt.datetime:
    return dt.datetime(*args, tzinfo=zone)


# -- settings and deadline arithmetic ------------------------------------------------------------------


def test_defaults_five_in_the_morning_new_york_two_hours():
    timing = LoadTiming.from_environment({})
    assert (timing.cron, timing.timezone, timing.deadline_minutes) == ("0 5 * * *", "America/New_York", 120)
    assert timing.sensor_seconds == 30
    assert LoadTiming.from_environment({"SENSOR_INTERVAL_SECONDS": "5"}).sensor_seconds == 5
    [(scheduled, deadline)] = timing.deadlines_between(at(2026, 11, 30, 6), at(2026, 11, 30, 8))
    assert (scheduled, deadline) == (at(2026, 11, 30, 5), at(2026, 11, 30, 7))


@pytest.mark.parametrize(
    ("cron", "start", "expected_scheduled", "expected_deadline"),
    [
        # Spring forward (2026-03-08, 02:00 -> 03:00): two hours of elapsed time end at 04:30 EDT.
        ("30 1 * * *", at(2026, 3, 8, 1, 0), at(2026, 3, 8, 1, 30), at(2026, 3, 8, 4, 30)),
        # Fall back (2026-11-01, 02:00 -> 01:00): 00:30 EDT plus two hours is 01:30 EST.
        (
            "30 0 * * *",
            at(2026, 11, 1, 0, 0),
            at(2026, 11, 1, 0, 30),
            dt.datetime(2026, 11, 1, 6, 30, tzinfo=dt.UTC),
        ),
        # A deadline past midnight belongs to the scheduled day's load.
        ("30 23 * * *", at(2026, 11, 30, 23, 0), at(2026, 11, 30, 23, 30), at(2026, 12, 1, 1, 30)),
    ],
    ids=["spring forward", "fall back", "past midnight"],
)
def test_deadlines_across_daylight_saving_and_midnight(cron, start, expected_scheduled, expected_deadline):
    timing = LoadTiming(cron, "America/New_York", 120)
    [(scheduled, deadline)] = timing.deadlines_between(start, start + dt.timedelta(hours=6))
    assert scheduled == expected_scheduled
    assert deadline.timestamp() == expected_deadline.timestamp()
    assert deadline.astimezone(dt.UTC) - scheduled.astimezone(dt.UTC) == dt.timedelta(minutes=120)  # elapsed


def test_deadlines_every_few_minutes():
    timing = LoadTiming("*/2 * * * *", "UTC", 1)
    found = timing.deadlines_between(
        at(2026, 11, 30, 12, 0, zone=dt.UTC), at(2026, 11, 30, 12, 7, zone=dt.UTC)
    )
    assert [deadline.minute for _, deadline in found] == [1, 3, 5, 7]
    assert timing.interval(at(2026, 11, 30, 12, 0, zone=dt.UTC)) == dt.timedelta(minutes=2)


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"LOAD_SCHEDULE": "every morning"}, "LOAD_SCHEDULE"),
        ({"LOAD_TIMEZONE": "Mars/Olympus"}, "LOAD_TIMEZONE"),
        ({"LOAD_DEADLINE_MINUTES": "two hours"}, "LOAD_DEADLINE_MINUTES"),
        ({"LOAD_DEADLINE_MINUTES": "0"}, "LOAD_DEADLINE_MINUTES"),
        ({"SENSOR_INTERVAL_SECONDS": "1"}, "SENSOR_INTERVAL_SECONDS"),
        ({"SENSOR_INTERVAL_SECONDS": "half a minute"}, "SENSOR_INTERVAL_SECONDS"),
    ],
)
def test_an_invalid_setting_stops_the_code_location_naming_it(environ, named):
    with pytest.raises(ConfigurationError, match=named):
        LoadTiming.from_environment(environ)


# -- the decisions, on a real instance ------------------------------------------------------------------


@pytest.fixture
def load_job(tmp_path):
    warehouse = synthetic.create_warehouse(tmp_path / "dw.sqlite3", 100, 100)
    job = defs.resolve_job_def("patronload_job")

    def run(instance, warehouse_path=warehouse):
        return job.execute_in_process(
            instance=instance,
            resources={
                "warehouse": SqliteWarehouse(path=str(warehouse_path)),
                "bucket": LocalBucket(directory=str(tmp_path / "bucket")),
                "institution": InstitutionData(),
                **state_resources(),
            },
            raise_on_error=False,
        )

    return run


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def test_no_run_since_the_scheduled_time(load_job):
    with dg.instance_for_test() as instance:
        assert load_job(instance).success  # yesterday's, say: before the scheduled time
        scheduled = now()
        lines = overdue.overdue_lines(instance, scheduled, scheduled + dt.timedelta(minutes=1))
    text = "\n".join(lines)
    assert "No load started since" in text
    assert "staff_zip: 20" in text and "never" not in text  # when each zip last loaded
    assert "dagster-daemon liveness-check" in text and "daily_patronload" in text


def test_a_wiped_instance_tells_the_last_loads_from_the_bucket(load_job, tmp_path):
    with dg.instance_for_test() as instance:
        assert load_job(instance).success
    [staff] = (tmp_path / "bucket").glob("staff_*.zip")
    staff.rename(staff.with_name(staff.name + ".processed"))  # as Alma renames what it took
    with dg.instance_for_test() as wiped:
        scheduled = now()
        lines = overdue.overdue_lines(
            wiped,
            scheduled,
            scheduled + dt.timedelta(minutes=1),
            LocalBucket(directory=str(tmp_path / "bucket")),
        )
    when = dt.datetime.strptime(staff.name[len("staff_") : -len(".zip")], "%Y-%m-%d_%H.%M.%S")
    assert f"  staff_zip: {when:%Y-%m-%d %H:%M:%S} UTC (the bucket's newest staff zip" in "\n".join(lines)


def test_a_run_in_progress(load_job):
    with dg.instance_for_test() as instance:
        scheduled = now() - dt.timedelta(seconds=5)
        run = instance.create_run_for_job(
            defs.resolve_job_def("patronload_job"), status=dg.DagsterRunStatus.STARTED
        )
        lines = overdue.overdue_lines(instance, scheduled, now())
    text = "\n".join(lines)
    assert "A load is in progress since" in text and run.run_id in text
    assert "staff_zip: never" in text


def test_a_failed_run_says_which_step_and_why(load_job, tmp_path):
    broken = tmp_path / "broken.sqlite3"
    broken.write_bytes(b"not a database " * 100)
    with dg.instance_for_test() as instance:
        scheduled = now() - dt.timedelta(seconds=1)
        result = load_job(instance, broken)
        assert not result.success
        lines = overdue.overdue_lines(instance, scheduled, now())
    text = "\n".join(lines)
    assert f"The last load (run {result.run_id}) ended FAILURE" in text
    assert "_rows" in text and "file is not a database" in text


def test_a_success_before_the_deadline_is_no_news_and_after_it_is(load_job):
    with dg.instance_for_test() as instance:
        scheduled = now() - dt.timedelta(seconds=1)
        result = load_job(instance)
        assert result.success
        assert overdue.overdue_lines(instance, scheduled, now() + dt.timedelta(seconds=1)) is None
        late = overdue.overdue_lines(instance, scheduled, scheduled + dt.timedelta(microseconds=1))
        # A load that began before the scheduled time is not this load.
        earlier = overdue.overdue_lines(instance, now(), now() + dt.timedelta(minutes=1))
    assert f"The last load (run {result.run_id}) succeeded after the deadline" in "\n".join(late)
    assert "No load started since" in "\n".join(earlier)


# -- the sensor: one email per missed deadline ----------------------------------------------------------


def test_one_email_per_missed_deadline_and_none_before_the_first_tick(tmp_path):
    timing = LoadTiming("* * * * *", "UTC", 1)  # a deadline every minute
    sensor = overdue._overdue_sensor(timing)
    mailer = OutboxMailer(directory=str(tmp_path / "outbox"), workspace="stage")
    bucket = LocalBucket(directory=str(tmp_path / "bucket"))
    with dg.instance_for_test() as instance:

        def tick(cursor):
            context = dg.build_sensor_context(
                instance=instance, cursor=cursor, resources={"mailer": mailer, "bucket": bucket}
            )
            sensor(context)
            return context.cursor

        cursor = tick(None)  # the first tick: deadlines before it are history
        assert not list((tmp_path / "outbox").glob("*.eml"))
        state = json.loads(cursor)
        state["checked_until"] -= 180  # three minutes ago: three deadlines missed since
        cursor = tick(json.dumps(state))
        first = sorted((tmp_path / "outbox").glob("*.eml"))
        assert len(first) in (3, 4)  # a deadline may fall between the two clocks read
        tick(cursor)  # later ticks never repeat a deadline
        assert sorted((tmp_path / "outbox").glob("*.eml")) == first
    message = email.message_from_bytes(first[0].read_bytes())
    assert message["Subject"].startswith("STAGE Patronload file creation ") and message["Subject"].endswith(
        " overdue"
    )
    assert "No load started since" in message.get_payload(decode=True).decode()


def test_a_send_that_fails_stays_pending_for_the_next_tick(tmp_path):
    class Unreachable(OutboxMailer):
        def send(self, message, name):
            raise ConnectionError("mail server unreachable")

    timing = LoadTiming("* * * * *", "UTC", 1)
    sensor = overdue._overdue_sensor(timing)
    with dg.instance_for_test() as instance:
        start = json.dumps({"checked_until": now().timestamp() - 90, "pending": {}})
        context = dg.build_sensor_context(
            instance=instance,
            cursor=start,
            resources={
                "mailer": Unreachable(directory=str(tmp_path), send_attempts=1, backoff_seconds=0),
                "bucket": LocalBucket(directory=str(tmp_path / "bucket")),
            },
        )
        sensor(context)
        pending = json.loads(context.cursor)["pending"]
        assert pending and all(attempts == 1 for attempts in pending.values())
        retry = dg.build_sensor_context(
            instance=instance,
            cursor=context.cursor,
            resources={
                "mailer": OutboxMailer(directory=str(tmp_path / "out")),
                "bucket": LocalBucket(directory=str(tmp_path / "bucket")),
            },
        )
        sensor(retry)
        assert json.loads(retry.cursor)["pending"] == {}
        assert len(list((tmp_path / "out").glob("*overdue.eml"))) >= len(pending)


def test_the_zips_carry_a_freshness_policy():
    graph = defs.resolve_asset_graph()
    for key in overdue.ZIP_ASSETS:
        policy = graph.get(key).freshness_policy
        assert policy is not None and policy.fail_window.to_timedelta() == dt.timedelta(hours=26)
