"""The daemon path, end to end: a real `dagster dev`, a run launched over GraphQL as the UI does,
and the report emails the sensors leave in the outbox."""

import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from dagster_graphql import DagsterGraphQLClient

from .conftest import PROJECT_DIR, free_port
from .environment import embedded_environment

pytestmark = pytest.mark.slow  # a daemon, a server or a whole install

DAGSTER = Path(sys.executable).parent / "dagster"


SENSOR_SECONDS = 5  # SENSOR_INTERVAL_SECONDS under dagster dev: the fastest the daemon looks


def wait_for(condition, timeout, what, interval=1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@contextlib.contextmanager
def running_dagster_dev(tmp_path, instance: dict | None = None, workspace="workspace.yaml", **settings):
    """`dagster dev` on a fresh instance in ``tmp_path`` (the project's dagster.yaml, or
    ``instance``), the embedded defaults there too; the sensors look every 5 seconds."""
    settings = {"SENSOR_INTERVAL_SECONDS": str(SENSOR_SECONDS), **settings}
    environment = embedded_environment(tmp_path, tmp_path / "home", **settings)
    if instance is not None:
        (tmp_path / "home" / "dagster.yaml").write_text(yaml.safe_dump(instance))
    port = free_port()
    log = open(tmp_path / "dagster-dev.log", "wb")  # noqa: SIM115 (closed at teardown)
    process = subprocess.Popen(
        [DAGSTER, "dev", "-w", str(workspace), "-h", "127.0.0.1", "-p", str(port)],
        cwd=PROJECT_DIR,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # setsid: the whole process group is stopped at the end
    )

    def up():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as response:
                return response.status == 200
        except OSError:
            return process.poll() is not None and pytest.fail(
                (tmp_path / "dagster-dev.log").read_text()[-3000:]
            )

    try:
        wait_for(up, 120, "the web server")
        yield DagsterGraphQLClient("127.0.0.1", port_number=port), environment
    finally:
        stop_process_group(process)
        log.close()


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM to a server started in a session of its own, then SIGKILL: dagster dev may ignore
    the first."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture
def dagster_dev(tmp_path):
    with running_dagster_dev(tmp_path) as (client, _):
        yield client, tmp_path


def launch(client: DagsterGraphQLClient) -> str:
    return client.submit_job_execution(
        "patronload_job", repository_location_name="patronload_assets", repository_name="__repository__"
    )


def finished(client, run_id):
    status = client.get_run_status(run_id).value
    return status if status in ("SUCCESS", "FAILURE", "CANCELED") else None


def read_email(path: Path) -> tuple[str, str]:
    """An .eml file's subject and body text, decoded."""
    import email
    import email.policy

    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    return message["Subject"], message.get_body(("plain",)).get_content()


def emails_of(outbox: Path, run_id: str) -> list[Path]:
    return sorted(outbox.glob(f"*{run_id}*.eml"))


def test_launch_from_the_ui_path_reports_success_then_failure(dagster_dev):
    client, folder = dagster_dev
    outbox = folder / "outbox"

    run_id = launch(client)
    assert wait_for(lambda: finished(client, run_id), 240, "the first run") == "SUCCESS"
    [report] = wait_for(lambda: emails_of(outbox, run_id), 150, "the success report")
    text = report.read_text()
    assert "Patronload file creation" in text and "failed" not in text.split("\n\n")[0]
    zips = sorted(path.name for path in (folder / "bucket").rglob("*.zip"))
    assert len(zips) == 2
    for name in zips:
        assert name in text

    (folder / "dw.sqlite3").write_bytes(b"garbage, not a warehouse " * 200)
    failed_run = launch(client)
    assert wait_for(lambda: finished(client, failed_run), 240, "the second run") == "FAILURE"
    [failure] = wait_for(lambda: emails_of(outbox, failed_run), 150, "the failure report")
    text = failure.read_text()
    assert "failed" in text.split("\n\n")[0]
    assert "_rows" in text and "file is not a database" in text
    # Exactly one email per run, and the old zips are still in the bucket.
    time.sleep(5)
    assert len(list(outbox.glob("*.eml"))) == 2
    assert sorted(path.name for path in (folder / "bucket").rglob("*.zip")) == zips


def test_a_missed_deadline_sends_one_overdue_email_and_a_load_in_time_none(tmp_path):
    """The checked path: a schedule every minute, a two-minute deadline, the schedule stopped. A load
    started just after one scheduled time and done before its deadline gets no email; the next
    scheduled time, which no load followed, gets one, once. Two minutes: the load in time has a
    bound far above its time on a machine half as fast (a test of time never rides on speed)."""
    settings = {"LOAD_SCHEDULE": "* * * * *", "LOAD_DEADLINE_MINUTES": "2", "LOAD_TIMEZONE": "UTC"}
    outbox = tmp_path / "outbox"
    with running_dagster_dev(tmp_path, **settings) as (client, environment):
        stopped = subprocess.run(
            [DAGSTER, "schedule", "stop", "daily_patronload", "-w", "workspace.yaml"],
            cwd=PROJECT_DIR, env=environment, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert stopped.returncode == 0, stopped.stderr[-2000:]

        # The next scheduled time: a load started just after it, done before its deadline.
        now = dt.datetime.now(dt.UTC)
        scheduled = now.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        time.sleep(max(0.0, (scheduled - dt.datetime.now(dt.UTC)).total_seconds()) + 1)
        run_id = launch(client)
        assert wait_for(lambda: finished(client, run_id), 110, "the load in time") == "SUCCESS"

        # The scheduled time after it: no load began since, so its deadline is missed.
        missed = scheduled + dt.timedelta(minutes=1)
        [first] = wait_for(
            lambda: sorted(outbox.glob(f"{missed:%Y%m%dT%H%M%S}-overdue*.eml")), 300, "an overdue email", 2
        )
        text = first.read_text()
        assert "Patronload file creation" in text and "overdue" in text and "No load started since" in text
        time.sleep(3 * SENSOR_SECONDS + 1)  # more sensor ticks: nothing is sent twice
    emails = sorted(path.name for path in outbox.glob("*-overdue*.eml"))
    assert f"{scheduled:%Y%m%dT%H%M%S}-overdue.eml" not in emails, emails
    assert not [name for name in emails if not name.endswith("-overdue.eml")], emails  # none twice


def test_a_load_that_failed_while_the_bucket_was_down_is_retried_by_the_deployment_once_it_is_back(
    tmp_path, moto_endpoint
):
    """Alma's bucket refuses every upload (moto's S3 server behind the tests' fault proxy): the
    load fails and its email says the deployment retries it, and when. The bucket comes back; no
    one launches anything; the retry, after its pause, loads from the failed steps, and its email
    says which try failed and why. One email per outcome."""
    import boto3

    from .fault_proxy import FaultProxy

    bucket = "retry-alma"
    aws = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1", **{
        "aws_access_key_id": "testing", "aws_secret_access_key": "testing"})  # fmt: skip
    s3.create_bucket(Bucket=bucket)
    outbox = tmp_path / "outbox"
    with FaultProxy(moto_endpoint) as proxy:
        proxy.fail(("put", "create_multipart", "part", "complete"), "unavailable", bucket=bucket)
        settings = {
            **aws,
            "S3_BUCKET_NAME": bucket,
            "S3_PREFIX": "alma",
            "S3_ENDPOINT_URL": proxy.url,
            "S3_RETRY_MINUTES": "0.05",
            "LOAD_RETRY_MINUTES": "0.25",  # the retry waits 15 s after the failure
        }
        with running_dagster_dev(tmp_path, **settings) as (client, environment):
            run_id = launch(client)
            assert (
                wait_for(lambda: finished(client, run_id), 240, "the load while the bucket is down")
                == "FAILURE"
            )
            [failure] = wait_for(lambda: emails_of(outbox, run_id), 150, "the failure report")
            subject, text = read_email(failure)
            assert "Patronload file creation" in subject and subject.endswith(" failed, retrying")
            assert "retries this load by itself at about" in text and "(retry 1 of 2)" in text
            assert f"S3 (s3://{bucket}): upload of alma/" in text
            proxy.clear()  # the bucket is back

            def success_of_a_retry():
                for path in outbox.glob("*-success.eml"):
                    if run_id in read_email(path)[1]:
                        return path
                return None

            success = wait_for(success_of_a_retry, 240, "the retry's success report", 2)
            subject, text = read_email(success)
            assert "failed" not in subject
            assert "Succeeded on retry 1; the earlier tries failed:" in text
            assert f"run {run_id} in " in text and "ServiceUnavailable" in text
            # The retry's first step began no earlier than 15 s after the failure: it paused, or
            # the daemon launched it later than that (on a busy machine).
            from unittest import mock

            import dagster as dg

            from patronload_assets.load import retries

            with mock.patch.dict(os.environ, environment), dg.DagsterInstance.get() as instance:
                [retry] = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/parent_run_id": run_id}))
                failed_at = retries.ended_at(instance, run_id).timestamp()
                steps = instance.all_logs(retry.run_id, of_type=dg.DagsterEventType.STEP_START)
                first_step = min(entry.timestamp for entry in steps)
            assert "waiting until" in text or first_step >= failed_at + 15, (failed_at, first_step)
            time.sleep(3 * SENSOR_SECONDS + 1)  # more sensor ticks: nothing is sent twice
    assert len(list(outbox.glob("*.eml"))) == 2
    keys = sorted(item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []))
    assert [key.split("/")[1].split("_")[0] for key in keys] == ["staff", "student"], keys
