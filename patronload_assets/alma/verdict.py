"""Alma's verdict on a load (docs/patron-rules.md §12): which run of the SIS synchronize job picked
up the zips, and what it did with every user.

``alma_sis_job`` is an external asset downstream of the two zips, so the lineage reads warehouse ->
zips -> Alma. No run materializes it: the ``patronload_alma_job_report`` sensor does, when the job
run that followed an upload has ended, and then emails its status, counts and rejected users. When
no run has picked the files up by ``ALMA_JOB_WAIT_HOURS`` after the upload, it says that instead.
"""

import datetime as dt
import json
import time
from collections.abc import Callable

import dagster as dg

from ..domain import alma_jobs
from ..domain.load import PATRON_TYPES
from ..load.assets import ZIP_ASSETS, asset_key
from ..reports import emails
from ..reports.sensors import send_or_keep_pending
from ..resources.mail import Mailer
from ..state.store import StateStore
from .api import AlmaApiError, AlmaJobs

ALMA_SIS_JOB = asset_key("alma_sis_job")
REPORTED_KEPT = 50  # job runs remembered as reported (each is reported once)
REJECTED_FILE = "alma_rejected_users.csv"
# The user as sent (empty when no value names one), Alma's reason, and everything the event said.
REJECTED_COLUMNS = ("primary_id", "reason", "event_id", "values")

alma_sis_job = dg.AssetSpec(
    ALMA_SIS_JOB,
    deps=ZIP_ASSETS,
    kinds={"alma"},
    group_name="alma",
    description="The run of Alma's SIS synchronize job that picked up the zips: its status and the users "
    "it created, updated, left unchanged and rejected. Materialized by the patronload_alma_job_report "
    "sensor when the run ends, never by a run.",
)


def _uploads(instance: dg.DagsterInstance) -> list[float]:
    """When each zip asset's last load put its zips in the bucket (its ``uploaded_at``: a job run
    submitted from then on can have taken them), as timestamps."""
    found = []
    for key in ZIP_ASSETS:
        event = instance.get_latest_materialization_event(key)
        if event is None:
            continue
        entry = (
            event.asset_materialization.metadata.get("uploaded_at") if event.asset_materialization else None
        )
        uploaded = alma_jobs.parse_time(entry.value) if entry is not None else None
        found.append(uploaded.timestamp() if uploaded else event.timestamp)
    return found


def alma_job_sensor(poll_minutes: float, clock: Callable[[], float] = time.time):
    """The sensor; ``clock`` (seconds since the epoch) is the tests' to set, to pass a wait limit
    without waiting."""

    @dg.sensor(
        name="patronload_alma_job_report",
        minimum_interval_seconds=max(1, round(60 * poll_minutes)),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="After each upload, follows the run of Alma's SIS job that picks the zips up; when it "
        "ends, materializes alma_sis_job and emails Alma's counts and rejected users.",
    )
    def alma_job_report(
        context: dg.SensorEvaluationContext, alma: AlmaJobs, mailer: Mailer, state: StateStore
    ):
        followed = json.loads(context.cursor) if context.cursor else {}
        now = clock()
        wait_seconds = alma.wait_hours * 3600
        uploads = _uploads(context.instance)
        if "last_upload" not in followed:  # the first tick: follow only an upload still within the wait
            recent = [moment for moment in uploads if moment > now - wait_seconds]
            followed = {"last_upload": max(uploads, default=0.0), "waiting": min(recent, default=None)}
        new = [moment for moment in uploads if moment > followed["last_upload"]]
        if new:
            followed["last_upload"] = max(new)
            if followed.get("waiting") is None:
                followed["waiting"] = min(new)
        reported, pending = followed.setdefault("reported", []), followed.setdefault("pending", {})
        messages = followed.setdefault("messages", {})
        asset_events = []

        if followed.get("waiting") is not None:
            since = dt.datetime.fromtimestamp(followed["waiting"], dt.UTC)
            try:
                finished = _follow(context, alma, state, followed, since)
            except AlmaApiError as error:
                context.log.error(f"Alma's verdict not read this tick: {error}")
                followed["last_error"] = str(error)
                finished = None
            if finished is not None:
                run, rejected = finished
                named = sum(1 for rejection in rejected if rejection.primary_id)
                asset_events.append(
                    dg.AssetMaterialization(
                        ALMA_SIS_JOB,
                        metadata={
                            **run.metadata(),
                            "alma_rejected_users_listed": len(rejected),
                            "alma_rejected_users_named": named,
                        },
                    )
                )
                label = f"alma-{run.instance_id}"
                state.write_report_file(
                    label, REJECTED_FILE, REJECTED_COLUMNS,
                    ((r.primary_id, r.reason, r.event_id, r.described()) for r in rejected),
                )  # fmt: skip
                messages[label] = {
                    "kind": "verdict",
                    "load_date": since.date().isoformat(),
                    "alerts": run.alerts,
                    **run.metadata(),
                }
                pending[label] = 0
                reported[:] = [*reported, run.instance_id][-REPORTED_KEPT:]
                later = followed["last_upload"] > (run.submitted or since).timestamp()
                followed["waiting"] = followed["last_upload"] if later else None
                followed.pop("following", None)
                followed.pop("last_error", None)
                context.log.info(f"Alma's job run {run.instance_id} ended {run.status}: {_counts(run)}")
            elif now - followed["waiting"] > wait_seconds:
                label = f"alma-unpicked-{int(followed['waiting'])}"
                messages[label] = {
                    "kind": "not_picked_up",
                    "load_date": since.date().isoformat(),
                    "uploaded": since.isoformat(),
                    "wait_hours": alma.wait_hours,
                    "last_error": followed.pop("last_error", ""),
                    "following": followed.pop("following", ""),
                }
                pending[label] = 0
                followed["waiting"] = None
                context.log.error(
                    f"no run of Alma's SIS job ended within {alma.wait_hours:g} h of the upload"
                )

        sent = []
        for label in list(pending):
            message = _message(state, messages[label], label, mailer)
            if send_or_keep_pending(
                mailer, message, label, pending, label, f"Alma job report {label}", context.log
            ):
                sent.append(label)
            if label not in pending:
                messages.pop(label, None)
        context.update_cursor(json.dumps(followed))
        reason = f"reported {', '.join(sent)}" if sent else (
            "waiting for Alma's SIS job" if followed.get("waiting") is not None else "no upload to follow"
        )  # fmt: skip
        return dg.SensorResult(asset_events=asset_events, skip_reason=None if asset_events else reason)

    return alma_job_report


def _follow(context, alma: AlmaJobs, state: StateStore, followed: dict, since: dt.datetime):
    """The run that picked up the upload of ``since``, once it has ended, with its rejected users;
    ``None`` while none has started or it still runs."""
    job_id = alma.sis_job_id()
    if followed.get("following"):
        instance = alma.job_instance(job_id, followed["following"])
    else:
        runs = alma.job_instances(job_id, (since - dt.timedelta(days=1)).date())
        instance = alma_jobs.first_run_after(runs, since, followed["reported"])
        if instance is None:
            return None
        if instance.get("status") is None or instance.get("counter") is None:  # a list entry: the run in full
            instance = alma.job_instance(job_id, str(instance.get("id")))
    run = alma_jobs.job_run(instance)
    if run.running:
        followed["following"] = run.instance_id
        context.log.info(f"Alma's job run {run.instance_id} is {run.status or 'starting'}")
        return None
    try:
        rejected = alma_jobs.rejections(alma.job_events(job_id, run.instance_id), sent_primary_ids(state))
    except AlmaApiError as error:  # the events are a bonus: the counts still go out
        context.log.warning(f"the rejected users of job run {run.instance_id} could not be read: {error}")
        rejected = []
    return run, rejected


def sent_primary_ids(state: StateStore) -> dict[str, str]:
    """The primary ids the last load of each type sent (its baseline), by their upper case."""
    sent: dict[str, str] = {}
    for patron_type in PATRON_TYPES:
        baseline = state.read_baseline(patron_type)
        if baseline is not None:
            sent.update((primary_id.upper(), primary_id) for primary_id in baseline.fingerprints.primary_ids)
    return sent


def _counts(run: alma_jobs.JobRun) -> str:
    return ", ".join(f"{name} {run.counts.get(name, 0)}" for name in alma_jobs.COUNTERS)


def _message(state: StateStore, facts: dict, label: str, mailer: Mailer):
    files = state.read_report_files(label)
    return emails.alma_job_message(facts, files, mailer.workspace, mailer.sender, mailer.recipient_list())
