"""The first-day check of Alma's key and job (docs/patron-rules.md §12): ``alma_connection_test``
reads the SIS job, its last three runs and the number of events of the last one, and logs what it
parsed (codes, counts, statuses and times; never a value from an event). A call that fails stops
the run with the call, its HTTP status and Alma's error code: a key without the rights, or a job
that is not USERS/SIS (error 60332 on its events)."""

import datetime as dt

import dagster as dg

from ..domain import alma_jobs
from ..load.assets import OWN_TAGS
from ..load.retries import NEVER_RETRIED
from .api import AlmaApiError, AlmaJobs

SIS_JOB = ("USERS", "SIS")  # the only category and type whose runs' events Alma returns
RUNS_SHOWN = 3
LOOK_BACK_DAYS = 31  # the runs listed: a daily job has run in the last month


def _job_field(record: dict, field: str):
    """A field of a job, or of a run's ``job_info`` (a run names its job too)."""
    info = record.get("job_info") if isinstance(record.get("job_info"), dict) else {}
    return record.get(field) or info.get(field)


def job_kind(job: dict) -> tuple[str, str]:
    """The job's category and type (``USERS``, ``SIS`` for the SIS job); "" where Alma says none."""
    return tuple(alma_jobs.value_of(_job_field(job, field)) for field in ("category", "type"))


def describe_job(job: dict) -> str:
    """The job's id, name, category and type, as Alma lists them."""
    parts = [f"job {_job_field(job, 'id') or '?'}"]
    name = _job_field(job, "name")
    if name:
        parts.append(f"'{name}'")
    parts += [
        f"{field} {value}" for field, value in zip(("category", "type"), job_kind(job), strict=True) if value
    ]
    return ", ".join(parts)


def describe_run(run: alma_jobs.JobRun) -> str:
    """A run's status, times and counters by name: counts only."""
    times = ", ".join(
        f"{label} {moment:%Y-%m-%d %H:%M:%S} UTC"
        for label, moment in (("submitted", run.submitted), ("started", run.started), ("ended", run.ended))
        if moment
    )
    counts = ", ".join(f"{name} {count}" for name, count in sorted(run.counts.items())) or "no counters"
    alerts = f"; {len(run.alerts)} alert(s)" if run.alerts else ""
    return f"run {run.instance_id}: {run.status or 'no status'} ({times or 'no times'}); {counts}{alerts}"


@dg.op(description="Reads Alma's SIS job, its last three runs and the events of the last; logs counts only.")
def check_alma(context: dg.OpExecutionContext, alma: AlmaJobs) -> None:
    job_id = alma.sis_job_id()
    try:
        job = alma.job(job_id)
    except AlmaApiError as error:
        if error.status in (401, 403):  # the key's rights: the check's answer
            raise
        # The job's own record is not among the calls Ex Libris documents for jobs: its runs say the rest.
        context.log.warning(f"the job's own record could not be read ({error}); reading its runs")
        job = {"id": job_id}
    _refuse_other_jobs(job, f"GET /conf/jobs/{job_id}")
    context.log.info(f"Alma answers: {describe_job(job)}")
    since = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=LOOK_BACK_DAYS)
    listed = alma.job_instances(job_id, since)
    listed.sort(key=lambda entry: alma_jobs.parse_time(entry.get("submit_time")) or dt.datetime.min.replace(
        tzinfo=dt.UTC))  # fmt: skip
    context.log.info(f"{len(listed)} run(s) of job {job_id} submitted since {since}")
    details = [alma.job_instance(job_id, str(entry.get("id"))) for entry in listed[-RUNS_SHOWN:]]
    for detail in details:  # a run names its job's kind too (job_info)
        _refuse_other_jobs(detail, f"GET /conf/jobs/{job_id}/instances/{detail.get('id')}")
    runs = [alma_jobs.job_run(detail) for detail in details]
    for run in runs:
        unknown = "" if run.running or run.status in alma_jobs.ENDED_STATES else " (a status not published)"
        context.log.info(describe_run(run) + unknown)
    if runs:
        last = runs[-1]
        events = alma.job_event_count(job_id, last.instance_id)  # 60332 when the job is not USERS/SIS
        context.log.info(f"run {last.instance_id}: {events} event(s) (users Alma rejected)")
    context.log.info("Alma's key reads the SIS job, its runs and their events")


def _refuse_other_jobs(record: dict, call: str) -> None:
    """Stop when Alma says the job is of another category and type than USERS/SIS."""
    kind = job_kind(record)
    if all(kind) and kind != SIS_JOB:
        raise dg.Failure(
            f"{call}: HTTP 200, but the job is {'/'.join(kind)}, not {'/'.join(SIS_JOB)}: "
            "set ALMA_SIS_JOB_ID to the integration profile's SIS synchronize job"
        )


@dg.job(
    description="The operators' first-day check of Alma's API key and SIS job (ALMA_API_KEY).",
    tags={**NEVER_RETRIED, **OWN_TAGS},
)
def alma_connection_test():
    check_alma()
