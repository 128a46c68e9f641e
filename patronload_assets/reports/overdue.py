"""Silence is a failure: a load that has not succeeded by its deadline is reported.

The report sensors only see runs that happen. This sensor looks at the clock: at each deadline
(``schedules.LOAD_TIMING``), unless a full load that began at or after the scheduled time had
succeeded by the deadline, it emails once what is known. The zip assets' freshness checks show the
same in the UI's lineage. Neither can speak while the daemon is down: the deployment restarts a
daemon whose heartbeat stops (``deploy/aws``), and the README says how to watch it from outside.
"""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg

from ..domain.packaging import newest_load_time
from ..load.assets import ZIP_ASSETS, own_run
from ..load.jobs import patronload_job
from ..load.timing import LOAD_TIMING, LoadTiming
from ..resources.bucket import Bucket
from ..resources.mail import Mailer
from . import emails
from .sensors import run_facts, send_or_keep_pending

IN_PROGRESS = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
)


def is_full_load(run: dg.DagsterRun) -> bool:
    """A run of this institution's whole load, whoever started it: the job, or both zips selected
    (the CLI)."""
    selected = set(run.asset_selection or ())
    return own_run(run) and (run.job_name == patronload_job.name or set(ZIP_ASSETS) <= selected)


def _last_loaded(instance: dg.DagsterInstance, key: dg.AssetKey, bucket: Bucket | None) -> str:
    """This instance's last materialization of a zip; else (a new or wiped instance) the time in
    the name of the bucket's newest zip of its type."""
    event = instance.get_latest_materialization_event(key)
    if event:
        return f"{dt.datetime.fromtimestamp(event.timestamp, dt.UTC):%Y-%m-%d %H:%M:%S UTC}"
    patron_type = key.path[-1].removesuffix("_zip")
    newest = newest_load_time(bucket.list_keys(), bucket.prefix, patron_type) if bucket else None
    if newest:
        return f"{newest:%Y-%m-%d %H:%M:%S UTC} (the bucket's newest {patron_type} zip; no record here)"
    return "never"


def overdue_lines(
    instance: dg.DagsterInstance, scheduled: dt.datetime, deadline: dt.datetime, bucket: Bucket | None = None
) -> list[str] | None:
    """``None`` when a full load that began at or after ``scheduled`` succeeded by ``deadline``;
    else what is known, as lines for the report."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(created_after=scheduled - dt.timedelta(days=1)), limit=200
    )
    loads = []
    for record in records:
        began = record.start_time or record.create_timestamp.timestamp()
        if is_full_load(record.dagster_run) and began >= scheduled.timestamp():
            loads.append((began, record))
    loads.sort(key=lambda load: load[0])
    for _, record in loads:
        if (
            record.dagster_run.status == dg.DagsterRunStatus.SUCCESS
            and (record.end_time or 0) <= deadline.timestamp()
        ):
            return None

    when = f"{scheduled:%Y-%m-%d %H:%M %Z}"
    lines = [
        f"The patron load scheduled at {when} had not succeeded by its deadline, {deadline:%H:%M %Z}.",
        "",
    ]
    in_progress = [record for _, record in loads if record.dagster_run.status in IN_PROGRESS]
    finished = [record for _, record in loads if record.dagster_run.status not in IN_PROGRESS]
    if not loads:
        lines.append(f"No load started since {when}.")
    for record in in_progress:
        began = dt.datetime.fromtimestamp(record.start_time or record.create_timestamp.timestamp(), dt.UTC)
        lines.append(
            f"A load is in progress since {began:%Y-%m-%d %H:%M:%S UTC} "
            f"(run {record.dagster_run.run_id}, {record.dagster_run.status.value})."
        )
    if finished:
        last = finished[-1]
        ended = dt.datetime.fromtimestamp(last.end_time or last.create_timestamp.timestamp(), dt.UTC)
        status = last.dagster_run.status
        if status == dg.DagsterRunStatus.SUCCESS:
            lines.append(
                f"The last load (run {last.dagster_run.run_id}) succeeded after the deadline, "
                f"at {ended:%H:%M:%S UTC}."
            )
        else:
            facts = run_facts(instance, last.dagster_run)
            steps = ", ".join(facts.failed_steps) or "none recorded"
            lines.append(
                f"The last load (run {last.dagster_run.run_id}) ended {status.value} at "
                f"{ended:%Y-%m-%d %H:%M:%S UTC}, in step(s) {steps}:"
            )
            lines += [f"  {error}" for error in facts.errors[-3:]] or ["  (no error was recorded)"]
    lines += ["", "Last successful load of each zip (what Alma last received):"]
    for key in ZIP_ASSETS:
        lines.append(f"  {key.to_user_string()}: {_last_loaded(instance, key, bucket)}")
    lines += [
        "",
        "What to do:",
        "  - Is the daemon running? The UI's Deployment > Daemons page shows its heartbeat; from a",
        "    shell, `dagster-daemon liveness-check` (with the deployment's DAGSTER_HOME) fails when not.",
        "  - Is the schedule running? The UI's Automation page: daily_patronload must be Running.",
        "  - A run stuck in the queue or in progress: the UI's Runs page; cancel it if it is stuck.",
        "  - Start the load by hand: Materialize all in the UI's patronload group, or",
        "    `dagster job launch -m patronload_assets -j patronload_job` with the deployment's DAGSTER_HOME.",
    ]
    return lines


def _overdue_sensor(timing: LoadTiming):
    @dg.sensor(
        name="patronload_overdue",
        minimum_interval_seconds=timing.sensor_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Emails once when a load has not succeeded by its deadline "
        "(LOAD_SCHEDULE + LOAD_DEADLINE_MINUTES).",
    )
    def overdue_report(context: dg.SensorEvaluationContext, mailer: Mailer, bucket: Bucket):
        now = dt.datetime.now(dt.UTC)
        state = json.loads(context.cursor) if context.cursor else {}
        # From the first tick on: deadlines before the sensor first ran are history.
        checked = dt.datetime.fromtimestamp(state.get("checked_until", now.timestamp()), dt.UTC)
        pending: dict[str, int] = dict(state.get("pending", {}))  # scheduled time (ISO) -> failed sends
        for scheduled, _ in timing.deadlines_between(checked, now):
            pending.setdefault(scheduled.isoformat(), 0)
        sent = []
        for key in sorted(pending):
            scheduled = dt.datetime.fromisoformat(key)
            deadline = timing.deadline(scheduled)
            lines = overdue_lines(context.instance, scheduled, deadline, bucket)
            if lines is None:
                del pending[key]
                continue
            message = emails.overdue_message(
                scheduled.date(), lines, mailer.workspace, mailer.sender, mailer.recipient_list()
            )
            label = f"{scheduled.astimezone(dt.UTC):%Y%m%dT%H%M%S}-overdue"
            what = f"overdue report for the load scheduled at {key}"
            if send_or_keep_pending(mailer, message, label, pending, key, what, context.log):
                sent.append(key)
        context.update_cursor(json.dumps({"checked_until": now.timestamp(), "pending": pending}))
        return dg.SkipReason(
            f"overdue report(s) sent for {', '.join(sent)}" if sent else "no deadline missed"
        )

    return overdue_report


overdue_report = _overdue_sensor(LOAD_TIMING)
