"""Run reports: the sensors, the outbox, SES through moto, and the retry path."""

import datetime as dt
import email
import email.policy
import gzip
from pathlib import Path

import dagster as dg
import pytest
from dagster._utils.error import serializable_error_info_from_exc_info

from patronload_assets.institutions.mit import synthetic
from patronload_assets.reports import emails
from patronload_assets.reports.sensors import failure_report, success_report
from patronload_assets.resources.mail import OutboxMailer, SesMailer
from patronload_assets.state.store import InstanceState

from .conftest import load


@pytest.fixture(scope="module")
def warehouse_path(tmp_path_factory):
    return synthetic.create_warehouse(tmp_path_factory.mktemp("warehouse") / "dw.sqlite3", 300, 400)


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def tick(sensor, instance, mailer, cursor=None):
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"mailer": mailer, "state": InstanceState()}
    )
    result = sensor(context)
    return context, result


def outbox(directory: Path) -> list[email.message.EmailMessage]:
    return [
        email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        for path in sorted(directory.glob("*.eml"))
    ]


def test_success_report_once_per_run_with_summary_and_log(instance, warehouse_path, tmp_path):
    result = load(warehouse_path, tmp_path / "bucket", instance)
    assert result.success
    mailer = OutboxMailer(
        directory=str(tmp_path / "outbox"), workspace="stage", recipients="a@x.edu, b@x.edu"
    )
    context, _ = tick(success_report, instance, mailer)
    [message] = outbox(tmp_path / "outbox")
    assert message["Subject"] == emails.subject("stage", _run_date(instance, result))
    assert message["Subject"].startswith("STAGE Patronload file creation 20")
    assert message["To"] == "a@x.edu, b@x.edu"
    body = message.get_content()
    staff_key = result.asset_materializations_for_node("staff_zip")[0].metadata["keys"].value[0]
    assert f"key: {staff_key}" in body
    assert "staff_zip:" in body and "student_zip:" in body and "patrons in 1 zip(s)" in body
    assert "dropped_student_already_staff" in body
    assert "staff rows read from the embedded SQLite warehouse" in body  # the run's own INFO log
    # No failure email for a successful run, and no second success email on the next tick.
    tick(failure_report, instance, mailer)
    tick(success_report, instance, mailer, cursor=context.cursor)
    assert len(outbox(tmp_path / "outbox")) == 1


def _run_date(instance, result):
    entries = instance.all_logs(result.run_id)
    return dt.datetime.fromtimestamp(entries[0].timestamp, dt.UTC).date()


def test_failure_report_names_the_failed_step_and_cause(instance, tmp_path):
    garbage = tmp_path / "dw.sqlite3"
    garbage.write_bytes(b"this is not a database, just garbage " * 100)
    result = load(garbage, tmp_path / "bucket", instance)
    assert not result.success
    mailer = OutboxMailer(directory=str(tmp_path / "outbox"))
    tick(success_report, instance, mailer)
    assert outbox(tmp_path / "outbox") == []
    tick(failure_report, instance, mailer)
    [message] = outbox(tmp_path / "outbox")
    assert message["Subject"].startswith("DEV Patronload file creation ") and message["Subject"].endswith(
        " failed"
    )
    body = message.get_content()
    assert "Failed step(s): " in body and "staff_rows" in body and "student_rows" in body
    assert "file is not a database" in body  # the cause, not only "Steps failed"
    assert "Last 30 log lines:" in body


def test_runs_that_touch_no_patronload_asset_get_no_email(instance, tmp_path):
    @dg.asset
    def unrelated():
        return 1

    assert dg.materialize([unrelated], instance=instance).success
    mailer = OutboxMailer(directory=str(tmp_path / "outbox"))
    tick(success_report, instance, mailer)
    tick(failure_report, instance, mailer)
    assert outbox(tmp_path / "outbox") == []


class FlakyOutbox(OutboxMailer):
    """An outbox whose first ``failures`` sends fail, as an unreachable mail service would."""

    failures: int = 0

    def send(self, message, name):
        counter = Path(self.directory) / ".attempts"
        attempts = int(counter.read_text()) if counter.exists() else 0
        counter.parent.mkdir(parents=True, exist_ok=True)
        counter.write_text(str(attempts + 1))
        if attempts < self.failures:
            raise ConnectionError("mail service unreachable")
        return super().send(message, name)


def test_a_failed_send_is_retried_with_backoff(instance, warehouse_path, tmp_path):
    assert load(warehouse_path, tmp_path / "bucket", instance).success
    mailer = FlakyOutbox(
        directory=str(tmp_path / "outbox"), failures=2, send_attempts=3, backoff_seconds=0.01
    )
    tick(success_report, instance, mailer)
    assert len(outbox(tmp_path / "outbox")) == 1
    assert (tmp_path / "outbox" / ".attempts").read_text() == "3"


def test_a_send_that_still_fails_is_kept_for_the_next_tick(instance, warehouse_path, tmp_path, capfd):
    result = load(warehouse_path, tmp_path / "bucket", instance)
    failing = FlakyOutbox(
        directory=str(tmp_path / "outbox"), failures=99, send_attempts=2, backoff_seconds=0.01
    )
    context, _ = tick(success_report, instance, failing)
    assert outbox(tmp_path / "outbox") == []
    assert result.run_id in context.cursor  # pending, not skipped
    assert f"ERROR - report of run {result.run_id} not sent" in capfd.readouterr().err
    working = OutboxMailer(directory=str(tmp_path / "outbox"))
    context, _ = tick(success_report, instance, working, cursor=context.cursor)
    assert len(outbox(tmp_path / "outbox")) == 1
    assert result.run_id not in context.cursor


def test_ses_sends_the_same_raw_message(moto_endpoint, aws_environment):
    import boto3
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    boto3.client("ses", endpoint_url=moto_endpoint, region_name="us-east-1").verify_email_identity(
        EmailAddress="noreply@example.edu"
    )
    mailer = SesMailer(
        recipients="a@example.edu,b@example.edu",
        sender="noreply@example.edu",
        workspace="prod",
        region_name="us-east-1",
        endpoint_url=moto_endpoint,
    )
    facts = emails.RunFacts("run-1", "patronload_job", _a_moment(), ["2026-11-28 10:00:00 INFO - hello"])
    message = emails.success_message(facts, mailer.workspace, mailer.sender, mailer.recipient_list())
    where = mailer.send(message, "run-1-success")
    assert where.startswith("SES message ")
    [sent] = [
        m for m in ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages if "run-1" in str(m.raw_data)
    ]
    assert set(sent.destinations) == {"a@example.edu", "b@example.edu"}
    received = email.message_from_string(sent.raw_data, policy=email.policy.default)
    assert received["Subject"] == "PROD Patronload file creation 2026-11-28"
    assert "hello" in received.get_content()


def _a_moment():
    return dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC)


def test_error_lines_follow_the_cause_chain():
    try:
        try:
            raise ConnectionError("ORA-12541: TNS:no listener")
        except ConnectionError as inner:
            raise RuntimeError("Error occurred while executing staff_rows") from inner
    except RuntimeError as outer:
        error = serializable_error_info_from_exc_info((type(outer), outer, outer.__traceback__))
    lines = emails.error_lines(error)
    assert "Error occurred while executing staff_rows" in lines[0]
    assert "ORA-12541: TNS:no listener" in lines[-1]


def test_a_long_list_is_attached_gzipped_and_named_so():
    long_list = "primary_id,change,groups\n" + "".join(f"U{n}@MIT.EDU,new,\n" for n in range(150_000))
    assert len(long_list.encode()) > emails.ATTACH_PLAIN_BYTES
    files = {
        "student_changes.csv": long_list,
        "staff_changes.csv": "primary_id,change,groups\nA@MIT.EDU,new,\n",
    }
    message = emails.compose("subject", ["body"], "a@b", ["c@d"], files)
    attached = {part.get_filename(): part for part in message.iter_attachments()}
    assert sorted(attached) == ["staff_changes.csv", "student_changes.csv.gz"]
    assert gzip.decompress(attached["student_changes.csv.gz"].get_content()).decode() == long_list
    lines = emails.changes_lines(
        {"student_zip": {"patrons_new": 150_000, "previous_load": "this instance's last load"}}, files
    )
    assert "  by primary id: the attached student_changes.csv.gz" in lines
