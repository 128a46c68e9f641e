"""Run reports: one email for every run that materialises a patronload asset.

Two sensors read the instance's run status changes directly, so runs started by the schedule,
the UI or ``dagster asset materialize`` (any code location, same instance) are all seen. They are
plain sensors with a cursor of their own rather than ``run_status_sensor``s: Dagster advances a
run status sensor's cursor even when its function fails, which would drop the email of a run
whose send failed. Here a send that still fails after its retries stays pending in the cursor and
is tried again at the next tick.
"""

import datetime as dt
import json
import logging
import time

import dagster as dg

from ..load import assets, retries
from ..load.jobs import patronload_job, patronload_preview
from ..load.timing import LOAD_TIMING
from ..resources.mail import Mailer
from ..state.store import StateStore
from . import emails

PATRONLOAD_ASSETS = frozenset(
    key.to_user_string() for definition in dg.load_assets_from_modules([assets]) for key in definition.keys
)
# A sensor's first tick (a new instance, or the sensor reset) reports runs finished in the two
# minutes before it, so a run launched as the daemon starts is not missed; older runs are history.
FIRST_TICK_LOOKBACK_SECONDS = 120
RUNS_PER_TICK = 50
PENDING_GIVE_UP_ATTEMPTS = 500  # about a day of ticks: then an ERROR that says the report is lost


def touches_patronload(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    """Whether the run (planned to) materialise any patronload asset of this institution."""
    if not assets.own_run(run):
        return False
    if run.job_name in (patronload_job.name, patronload_preview.name):
        return True
    selected = {key.to_user_string() for key in (run.asset_selection or ())}
    if selected & PATRONLOAD_ASSETS:
        return True
    planned = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED)
    return any(
        entry.dagster_event.asset_key.to_user_string() in PATRONLOAD_ASSETS
        for entry in planned
        if entry.dagster_event and entry.dagster_event.asset_key
    )


def run_facts(
    instance: dg.DagsterInstance, run: dg.DagsterRun, state: StateStore | None = None
) -> emails.RunFacts:
    """What the run's event log says (INFO+ lines, asset metadata, failed steps and errors), and
    with ``state`` the files it left there for its report."""
    entries = instance.all_logs(run.run_id)
    started = dt.datetime.fromtimestamp(entries[0].timestamp if entries else time.time(), dt.UTC)
    facts = emails.RunFacts(
        run.run_id, run.job_name, started, log_lines=[], preview=run.job_name == patronload_preview.name
    )
    facts.files = state.read_report_files(run.run_id) if state is not None else {}
    for entry in entries:
        event = entry.dagster_event
        if entry.level >= logging.INFO and entry.user_message:
            stamp = dt.datetime.fromtimestamp(entry.timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
            level = logging.getLevelName(entry.level)
            step = f" {entry.step_key}" if entry.step_key else ""
            facts.log_lines.append(f"{stamp} {level}{step} - {entry.user_message.splitlines()[0]}")
        if event is None:
            continue
        if event.event_type in (
            dg.DagsterEventType.ASSET_MATERIALIZATION,
            dg.DagsterEventType.ASSET_OBSERVATION,
        ):
            # a load's materializations, or a preview's observations of what a load would send
            recorded = (
                event.step_materialization_data.materialization
                if event.is_step_materialization
                else event.asset_observation_data.asset_observation
            )
            facts.assets[recorded.asset_key.to_user_string()] = {
                name: value.value for name, value in recorded.metadata.items()
            }
        elif event.event_type == dg.DagsterEventType.STEP_FAILURE:
            facts.failed_steps.append(event.step_key)
            facts.errors += emails.error_lines(event.event_specific_data.error)
        elif event.event_type == dg.DagsterEventType.RUN_FAILURE and not facts.failed_steps:
            error = getattr(event.event_specific_data, "error", None)
            facts.errors += emails.error_lines(error) if error else [event.message or "run failed"]
    facts.retrying = retries.will_retry(run)
    facts.retry_lines = _retry_lines(instance, run)
    return facts


def _retry_lines(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[str]:
    """A failed run: whether the deployment retries it, and when. A success after retries: which
    tries failed, and why."""
    if run.status == dg.DagsterRunStatus.FAILURE:
        return retries.failure_lines(instance, run, LOAD_TIMING.retry_minutes)
    earlier = retries.earlier_tries(instance, run)
    if not earlier:
        return []
    lines = [f"Succeeded on retry {retries.retry_number(run)}; the earlier tries failed:"]
    for tried_run in earlier:
        tried = run_facts(instance, tried_run)
        steps = ", ".join(tried.failed_steps) or "the run itself"
        lines.append(
            f"  run {tried_run.run_id} in {steps}: {tried.errors[-1] if tried.errors else 'no error'}"
        )
    return lines


def deliver(mailer: Mailer, message, name: str, log) -> str:
    """Send, retrying with exponential backoff a bounded number of times; raise the last error."""
    for attempt in range(1, mailer.send_attempts + 1):
        try:
            return mailer.send(message, name)
        except Exception as error:
            if attempt == mailer.send_attempts:
                raise
            delay = mailer.backoff_seconds * 2 ** (attempt - 1)
            log.warning(f"sending {name} failed ({type(error).__name__}: {error}); retrying in {delay:g}s")
            time.sleep(delay)
    raise AssertionError("unreachable")


def send_or_keep_pending(
    mailer: Mailer, message, label: str, pending: dict, key: str, what: str, log
) -> bool:
    """Send with retries; on success drop ``key`` from ``pending``, else count a failed tick there
    (a failed send inside a sensor is not retried by Dagster: the cursor keeps it for the next tick,
    until about a day of ticks has failed)."""
    try:
        where = deliver(mailer, message, label, log)
    except Exception as error:
        pending[key] += 1
        lost = pending[key] >= PENDING_GIVE_UP_ATTEMPTS
        log.error(
            f"{what} not sent ({type(error).__name__}: {error}); "
            + ("giving up after many ticks" if lost else "will try again at the next tick")
        )
        if lost:
            del pending[key]
        return False
    del pending[key]
    log.info(f"{what} sent: {where}")
    return True


def _report_sensor(name: str, event_type: dg.DagsterEventType, failed: bool, description: str):
    @dg.sensor(
        name=name,
        minimum_interval_seconds=LOAD_TIMING.sensor_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=description,
    )
    def report_sensor(context: dg.SensorEvaluationContext, mailer: Mailer, state: StateStore):
        cursor = json.loads(context.cursor) if context.cursor else {}
        after, pending = cursor.get("after"), dict(cursor.get("pending", {}))
        instance = context.instance
        if after is None:
            records_filter = dg.RunStatusChangeRecordsFilter(
                event_type, after_timestamp=time.time() - FIRST_TICK_LOOKBACK_SECONDS
            )
            latest = instance.fetch_run_status_changes(dg.RunStatusChangeRecordsFilter(event_type), limit=1)
            baseline = latest.records[0].storage_id if latest.records else 0
        else:
            records_filter = dg.RunStatusChangeRecordsFilter(event_type, after_storage_id=after)
            baseline = after
        changes = instance.fetch_run_status_changes(records_filter, limit=RUNS_PER_TICK, ascending=True)
        for record in changes.records:
            baseline = max(baseline, record.storage_id)
            run = instance.get_run_by_id(record.event_log_entry.run_id)
            if run is not None and touches_patronload(instance, run):
                pending.setdefault(run.run_id, 0)

        sent = []
        for run_id in list(pending):
            run = instance.get_run_by_id(run_id)
            if run is None:  # deleted from the instance: nothing left to report
                del pending[run_id]
                continue
            facts = run_facts(instance, run, state)
            compose = emails.failure_message if failed else emails.success_message
            message = compose(facts, mailer.workspace, mailer.sender, mailer.recipient_list())
            label = f"{facts.started:%Y%m%dT%H%M%S}-{run_id}-{'failure' if failed else 'success'}"
            if not send_or_keep_pending(
                mailer, message, label, pending, run_id, f"report of run {run_id}", context.log
            ):
                continue
            sent.append(run_id)
            if failed:
                _report_to_sentry(facts, mailer.workspace)
        context.update_cursor(json.dumps({"after": baseline, "pending": pending}))
        if sent:
            return dg.SkipReason(f"reported run(s) {', '.join(sent)}")
        return dg.SkipReason(f"nothing to report; {len(pending)} report(s) pending")

    return report_sensor


def _report_to_sentry(facts: emails.RunFacts, workspace: str) -> None:
    """With SENTRY_DSN set (read by sentry_sdk itself), a failed load is an error event."""
    try:
        import sentry_sdk
    except ImportError:
        return
    if sentry_sdk.get_client().is_active():
        with sentry_sdk.new_scope() as scope:
            scope.set_tag("workspace", workspace)
            scope.set_tag("run_id", facts.run_id)
            sentry_sdk.capture_message(
                f"patronload run failed in {', '.join(facts.failed_steps) or 'run'}: "
                f"{facts.errors[-1] if facts.errors else 'unknown error'}",
                level="error",
            )


success_report = _report_sensor(
    "patronload_success_report",
    dg.DagsterEventType.RUN_SUCCESS,
    failed=False,
    description="Emails the run's report after every successful patronload run.",
)
failure_report = _report_sensor(
    "patronload_failure_report",
    dg.DagsterEventType.RUN_FAILURE,
    failed=True,
    description="Emails the failed step and its cause after every failed patronload run.",
)
