"""A failed load is tried again by the deployment itself (docs/patron-rules.md §10).

The instance's run retries (``run_retries`` in both instance files; ``dagster/max_retries`` and
``dagster/retry_strategy: FROM_FAILURE`` on the load's job) re-execute a failed run from its failed
steps, at most twice; the frames in the state store make that possible on a task of its own. This
module adds what Dagster's retries lack:

- **only what may pass is retried**: a step that fails for a reason that will not pass by waiting
  (a blocking check, a wrong password, a missing view; :mod:`faults`) tags its run so that the
  instance does not retry it;
- **a pause before each retry**: the daemon retries at once, but a bucket or a warehouse that is
  down is rarely back within seconds. A retry's first step waits until ``LOAD_RETRY_MINUTES`` after
  the failure (doubled for the second retry) before it starts;
- **what the emails say**: whether a failed run will be retried and when, that it was the last try,
  or, for a success after retries, which tries failed and why.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

import dagster as dg

from ..resources import faults

MAX_RETRIES = 2
MAX_RETRIES_TAG = "dagster/max_retries"
RETRY_STRATEGY_TAG = "dagster/retry_strategy"
RETRY_NUMBER_TAG = "dagster/retry_number"
WILL_RETRY_TAG = "dagster/will_retry"  # set by the instance when it stores a run's failure
RETRY_ON_STEP_FAILURE_TAG = "dagster/retry_on_asset_or_op_failure"
NOT_RETRIED_TAG = "patronload/not_retried"  # why a run's failure will not pass by retrying

# The load's job: retried from its failed steps. Jobs that must not run twice by themselves (a send
# to Alma's Users API, the operators' checks, a dry run) carry NEVER_RETRIED.
LOAD_RETRIES = {MAX_RETRIES_TAG: str(MAX_RETRIES), RETRY_STRATEGY_TAG: "FROM_FAILURE"}
NEVER_RETRIED = {MAX_RETRIES_TAG: "0"}


def retry_number(run: dg.DagsterRun) -> int:
    """0 for a first try; 1 and 2 for the instance's automatic retries."""
    text = run.tags.get(RETRY_NUMBER_TAG, "0")
    return int(text) if text.isdecimal() else 0


def max_retries(run: dg.DagsterRun) -> int:
    text = run.tags.get(MAX_RETRIES_TAG, str(MAX_RETRIES))
    return int(text) if text.isdecimal() else 0


def will_retry(run: dg.DagsterRun) -> bool:
    return run.tags.get(WILL_RETRY_TAG, "").lower() == "true"


def retry_delay(retry: int, minutes: float) -> dt.timedelta:
    """How long after a failure its retry number ``retry`` (1, 2...) starts: ``minutes``, doubled
    for each retry after the first."""
    return dt.timedelta(minutes=minutes * 2 ** max(0, retry - 1))


def retry_start(failed_at: dt.datetime, retry: int, minutes: float) -> dt.datetime:
    return failed_at + retry_delay(retry, minutes)


def ended_at(instance: dg.DagsterInstance, run_id: str) -> dt.datetime | None:
    record = instance.get_run_record_by_id(run_id)
    if record is None or record.end_time is None:
        return None
    return dt.datetime.fromtimestamp(record.end_time, dt.UTC)


def pause_before_retry(
    context: dg.OpExecutionContext,
    minutes: float,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """In a retry, wait until its start time (the failure plus its delay); at once otherwise, and in
    the steps after the first (the time is then past)."""
    run = context.run
    retry = retry_number(run)
    if retry == 0 or run.parent_run_id is None:
        return
    failed_at = ended_at(context.instance, run.parent_run_id)
    if failed_at is None:
        return
    start = retry_start(failed_at, retry, minutes)
    wait = (start - now()).total_seconds()
    if wait > 0:
        context.log.info(
            f"retry {retry} of {max_retries(run)} of run {run.parent_run_id}: waiting until "
            f"{start:%H:%M:%S} UTC ({wait:.0f} s) for the failure to pass"
        )
        sleep(wait)


def not_retried_if_permanent(context: dg.AssetExecutionContext, error: BaseException) -> None:
    """A step failing for a reason that will not pass by waiting marks its run not to be retried."""
    if isinstance(error, Exception) and not faults.is_transient(error):
        reason = f"{context.asset_key.to_user_string()}: {faults.short(error)}"
        context.instance.add_run_tags(
            context.run.run_id, {RETRY_ON_STEP_FAILURE_TAG: "false", NOT_RETRIED_TAG: reason[:200]}
        )


def failure_lines(instance: dg.DagsterInstance, run: dg.DagsterRun, minutes: float) -> list[str]:
    """What happens next, for a failed run's email."""
    retry, most = retry_number(run), max_retries(run)
    if will_retry(run):
        failed_at = ended_at(instance, run.run_id) or dt.datetime.now(dt.UTC)
        start = retry_start(failed_at, retry + 1, minutes)
        return [
            f"Next: the deployment retries this load by itself at about {start:%H:%M} UTC "
            f"(retry {retry + 1} of {most}), from the failed step(s). Nothing to do unless that fails too."
        ]
    if run.tags.get(NOT_RETRIED_TAG):
        return [
            f"Not retried: the error will not pass by waiting ({run.tags[NOT_RETRIED_TAG]}). Correct the "
            "cause, then launch the load again (the UI's Re-execute from failure, or the job)."
        ]
    if retry > 0:
        return [
            f"This was the last try (retry {retry} of {most}): no more automatic retries. Correct the "
            "cause, then launch the load again (the UI's Re-execute from failure, or the job)."
        ]
    if most == 0:
        return []
    return ["Not retried automatically (a run launched from the command line, or retries are off)."]


def earlier_tries(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[dg.DagsterRun]:
    """The failed runs this one retried, oldest first."""
    if run.parent_run_id is None or retry_number(run) == 0:
        return []
    group = instance.get_run_group(run.run_id)
    runs = {other.run_id: other for other in (group[1] if group else [])}
    chain, parent = [], runs.get(run.parent_run_id)
    while parent is not None:
        chain.append(parent)
        parent = runs.get(parent.parent_run_id) if parent.parent_run_id else None
    return list(reversed(chain))
