"""When a dependency fails: transient errors retried, permanent ones at once and named, and whatever
fails leaves the previous zips or a complete new set (issue "When a dependency fails").

S3 faults are injected between the code and moto's S3 server by the tests' own proxy
(``fault_proxy.py``): SlowDown and 500 answers, and connections reset half-way through a body.
"""

import io
import sqlite3
import zipfile
from collections import Counter

import boto3
import dagster as dg
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from dagster_aws.s3 import S3Resource

from patronload_assets.institutions.mit import synthetic
from patronload_assets.load import assets, retries
from patronload_assets.reports import emails
from patronload_assets.reports.sensors import run_facts
from patronload_assets.resources import faults
from patronload_assets.resources.bucket import S3Bucket
from patronload_assets.resources.institution import InstitutionData
from patronload_assets.resources.warehouse import SqliteWarehouse
from patronload_assets.state.store import BucketState

from .conftest import state_resources
from .fault_proxy import FaultProxy

ALMA_BUCKET, STATE_BUCKET = "fault-alma", "fault-state"
RUN_RETRIES = {"run_retries": {"enabled": True, "max_retries": 2}}  # as both instance files have them
ALL_S3_CALLS = ("put", "create_multipart", "part", "complete", "list", "delete", "get", "head")


# -- transient or not ---------------------------------------------------------------------------


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject"
    )


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (_client_error("SlowDown", 503), True),
        (_client_error("InternalError", 500), True),
        (_client_error("Throttling", 400), True),
        (_client_error("SomethingNew", 502), True),  # any 5xx
        (_client_error("AccessDenied", 403), False),
        (_client_error("NoSuchBucket", 404), False),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), True),
        (ConnectionResetError(104, "Connection reset by peer"), True),
        (TimeoutError("timed out"), True),
        (RuntimeError("DPY-4011: the database or network closed the connection"), True),
        (RuntimeError("ORA-03113: end-of-file on communication channel"), True),
        (RuntimeError("ORA-03135: connection lost contact"), True),
        (RuntimeError("ORA-01033: ORACLE initialization or shutdown in progress"), True),
        (RuntimeError("ORA-01017: invalid username/password; logon denied"), False),
        (RuntimeError("ORA-00942: table or view does not exist"), False),
        (RuntimeError('ORA-00904: "X": invalid identifier'), False),
        (sqlite3.OperationalError("no such table: LIBRARY_STUDENT"), False),
        (sqlite3.OperationalError("database is locked"), True),
        (OSError(28, "No space left on device"), False),
        (ValueError("a bad value"), False),
    ],
)
def test_one_place_says_whether_an_error_may_pass(error, transient):
    assert faults.is_transient(error) is transient
    # and a wrapped one (an upload error around the S3 answer) is judged by its cause
    try:
        try:
            raise error
        except Exception as inner:
            raise RuntimeError("Failed to upload") from inner
    except RuntimeError as outer:
        assert faults.is_transient(outer) is transient


class Clock:
    """A clock the test controls: sleeping moves it, nothing waits."""

    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_transient_errors_are_retried_with_backoff_within_the_time_then_fail_naming_the_dependency():
    clock, tries = Clock(), []

    def call():
        tries.append(clock.now)
        raise RuntimeError("DPY-4011: the database or network closed the connection")

    with pytest.raises(faults.DependencyFailure) as failed:
        faults.retry(call, "the warehouse", "reading LIBRARY_EMPLOYEE", 60, clock=clock, sleep=clock.sleep)
    assert clock.sleeps == [2, 4, 8, 16]  # the next wait (32 s) would pass the minute
    assert len(tries) == 5
    message = str(failed.value)
    assert message.startswith("the warehouse: reading LIBRARY_EMPLOYEE failed after 5 tries (transient)")
    assert "DPY-4011" in message and "What to do:" in message


def test_a_transient_error_that_passes_costs_a_retry_only():
    clock, answers = Clock(), [_client_error("SlowDown", 503), _client_error("InternalError", 500), "done"]

    def call():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert faults.retry(call, "S3", "upload", 60, clock=clock, sleep=clock.sleep) == "done"
    assert clock.sleeps == [2, 4]


def test_a_permanent_error_fails_at_once_with_what_to_do():
    clock = Clock()

    def call():
        raise RuntimeError("ORA-01017: invalid username/password; logon denied")

    with pytest.raises(faults.DependencyFailure) as failed:
        faults.retry(call, "the warehouse", "reading LIBRARY_EMPLOYEE", 900, clock=clock, sleep=clock.sleep)
    assert clock.sleeps == []
    assert "(permanent)" in str(failed.value) and "DATA_WAREHOUSE_PASSWORD" in str(failed.value)


# -- a failed load, retried -------------------------------------------------------------------------


def test_a_retry_waits_until_its_start_time_by_a_clock_the_test_controls():
    import datetime as dt
    from types import SimpleNamespace

    failed_at = dt.datetime(2026, 12, 5, 10, 0, 0, tzinfo=dt.UTC)
    assert retries.retry_start(failed_at, 1, 5) == failed_at + dt.timedelta(minutes=5)
    assert retries.retry_start(failed_at, 2, 5) == failed_at + dt.timedelta(minutes=10)  # doubled
    record = SimpleNamespace(end_time=failed_at.timestamp())
    logged, slept = [], []
    for retry, now, expected in (
        (1, failed_at + dt.timedelta(seconds=20), [280.0]),  # five minutes after the failure
        (2, failed_at + dt.timedelta(minutes=3), [420.0]),  # ten
        (1, failed_at + dt.timedelta(minutes=6), []),  # already past (a later step of the retry)
        (0, failed_at, []),  # a first try never waits
    ):
        slept.clear()
        tags = {retries.RETRY_NUMBER_TAG: str(retry), retries.MAX_RETRIES_TAG: "2"}
        run = SimpleNamespace(tags=tags, parent_run_id="parent" if retry else None)
        context = SimpleNamespace(
            run=run,
            instance=SimpleNamespace(get_run_record_by_id=lambda run_id: record),
            log=SimpleNamespace(info=logged.append),
        )
        retries.pause_before_retry(context, 5, now=lambda now=now: now, sleep=slept.append)
        assert slept == expected
    assert (
        logged[0] == "retry 1 of 2 of run parent: waiting until 10:05:00 UTC (280 s) for the failure to pass"
    )


# -- the warehouse --------------------------------------------------------------------------------


class CutWarehouse(SqliteWarehouse):
    """The embedded warehouse whose first fetch of each view is cut after ``cut_after_rows`` rows,
    as Oracle's connection is when the network drops (DPY-4011)."""

    cut_after_rows: int = 500
    cut_marker_dir: str

    def read_frame(self, sql, repairs, binds=None):
        from pathlib import Path

        marker = Path(self.cut_marker_dir) / str(abs(hash(sql)))
        first = not marker.exists()
        marker.touch()
        if not first:
            return super().read_frame(sql, repairs, binds)
        with self.cursor() as cursor:
            cursor.execute(sql)
            rows = cursor.fetchmany(self.cut_after_rows)
            repairs["rows_of_the_cut_try"] += len(rows)  # thrown away with the try
            raise RuntimeError("DPY-4011: the database or network closed the connection")


def _users_in_bucket(directory) -> Counter:
    """Every primary id in the bucket's zips, counted."""
    from lxml import etree

    found = Counter()
    for path in sorted(directory.rglob("*.zip")):
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                document = etree.parse(io.BytesIO(archive.read(name)))
                found.update(document.getroot().xpath("//primary_id/text()"))
    return found


def _log_lines(instance, run_id) -> list[str]:
    return [entry.user_message for entry in instance.all_logs(run_id) if entry.user_message]


def _local_load(warehouse, bucket_dir, instance=None):
    from patronload_assets.resources.bucket import LocalBucket

    return dg.materialize(
        dg.load_assets_from_modules([assets]),
        instance=instance,
        resources={
            "warehouse": warehouse,
            "bucket": LocalBucket(directory=str(bucket_dir), prefix="alma"),
            "institution": InstitutionData(),
            **state_resources(),
        },
        raise_on_error=False,
    )


def test_a_warehouse_connection_cut_mid_fetch_costs_a_retry_not_the_load(tmp_path):
    path = synthetic.create_warehouse(tmp_path / "dw.sqlite3", 300, 400)
    markers = tmp_path / "markers"
    markers.mkdir()
    with dg.instance_for_test() as instance:
        cut = _local_load(
            CutWarehouse(path=str(path), cut_marker_dir=str(markers)), tmp_path / "cut", instance
        )
        retried = [line for line in _log_lines(instance, cut.run_id) if "retrying in" in line]
    clean = _local_load(SqliteWarehouse(path=str(path)), tmp_path / "clean")
    assert cut.success and clean.success
    assert len(retried) == 2 and all("DPY-4011" in line for line in retried)  # one per view
    cut_users, clean_users = _users_in_bucket(tmp_path / "cut"), _users_in_bucket(tmp_path / "clean")
    assert cut_users == clean_users and set(cut_users.values()) == {1}  # every user once
    for name in ("staff_rows", "student_rows"):
        [materialization] = cut.asset_materializations_for_node(name)
        assert "rows_of_the_cut_try" not in materialization.metadata  # the cut try's rows are gone


def test_a_missing_view_fails_at_once_naming_it(tmp_path):
    path = synthetic.create_warehouse(tmp_path / "dw.sqlite3", 50, 50)
    with sqlite3.connect(path) as connection:
        kind = connection.execute("select type from sqlite_master where name = 'LIBRARY_STUDENT'").fetchone()[
            0
        ]
        connection.execute(f"drop {kind} LIBRARY_STUDENT")
    with dg.instance_for_test(overrides=RUN_RETRIES) as instance:
        result = _local_load(SqliteWarehouse(path=str(path)), tmp_path / "bucket", instance)
        lines = _log_lines(instance, result.run_id)
        run = instance.get_run_by_id(result.run_id)
        next_lines = retries.failure_lines(instance, run, 5)
    assert not result.success
    # it will not pass by waiting: the instance does not retry it, and the email says why
    assert (
        not retries.will_retry(run) and run.tags[retries.NOT_RETRIED_TAG] == "student_rows: OperationalError"
    )
    assert next_lines[0].startswith("Not retried: the error will not pass by waiting (student_rows:")
    [failure] = [event for event in result.all_events if event.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "student_rows"
    message = " ".join(emails.error_lines(failure.event_specific_data.error))
    assert "reading LIBRARY_STUDENT (sql/mit/student.sql) failed (permanent)" in message
    assert "no such table: LIBRARY_STUDENT" in message
    assert lines and not any("retrying in" in line for line in lines)


# -- S3 ------------------------------------------------------------------------------------------


@pytest.fixture
def buckets(moto_endpoint, aws_environment):
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    for name in (ALMA_BUCKET, STATE_BUCKET):
        client.create_bucket(Bucket=name)
    yield client
    for name in (ALMA_BUCKET, STATE_BUCKET):
        for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
            client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
        listed = client.list_objects_v2(Bucket=name).get("Contents", [])
        if listed:
            client.delete_objects(Bucket=name, Delete={"Objects": [{"Key": item["Key"]} for item in listed]})
        client.delete_bucket(Bucket=name)


def _s3_load(endpoint, warehouse, instance, retry_minutes=0.1, attempts=3):
    """The whole load with both buckets at ``endpoint``: files of 32 KiB and more go up in parts."""
    s3 = S3Resource(endpoint_url=endpoint, region_name="us-east-1", max_attempts=attempts)
    common = {"s3": s3, "retry_minutes": retry_minutes, "multipart_bytes": 32 << 10}
    state = BucketState(bucket=S3Bucket(bucket=STATE_BUCKET, prefix="patronload/", **common))
    return dg.materialize(
        dg.load_assets_from_modules([assets]),
        instance=instance,
        resources={
            "warehouse": SqliteWarehouse(path=str(warehouse)),
            "bucket": S3Bucket(bucket=ALMA_BUCKET, prefix="alma", **common),
            "institution": InstitutionData(),
            **state_resources(state),
        },
        raise_on_error=False,
    )


def _zips(client) -> dict[str, bytes]:
    listed = client.list_objects_v2(Bucket=ALMA_BUCKET).get("Contents", [])
    return {
        item["Key"]: client.get_object(Bucket=ALMA_BUCKET, Key=item["Key"])["Body"].read() for item in listed
    }


def _users(zips: dict[str, bytes]) -> dict[str, list[bytes]]:
    """Each type's users as written (one ``<user>`` element's bytes each), sorted."""
    from lxml import etree

    found: dict[str, list[bytes]] = {}
    for key, data in zips.items():
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for name in archive.namelist():
                root = etree.fromstring(archive.read(name))
                found.setdefault(key.split("/")[-1].split("_")[0], []).extend(
                    etree.tostring(user) for user in root
                )
    return {kind: sorted(users) for kind, users in found.items()}


def _open_uploads(client) -> list[str]:
    return [
        upload["Key"]
        for name in (ALMA_BUCKET, STATE_BUCKET)
        for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", [])
    ]


def test_slowdown_500_and_resets_on_every_kind_of_s3_call_still_load_the_same_users(
    buckets, moto_endpoint, tmp_path
):
    warehouse = synthetic.create_warehouse(tmp_path / "dw.sqlite3", 400, 500)
    with dg.instance_for_test() as instance:
        assert _s3_load(moto_endpoint, warehouse, instance).success
    without_faults = _users(_zips(buckets))
    with FaultProxy(moto_endpoint) as proxy, dg.instance_for_test() as instance:
        for number, kind in enumerate(ALL_S3_CALLS):  # the first call of each kind, then a share of all
            proxy.fail(kind, ("slowdown", "internal", "reset")[number % 3], times=1)
        proxy.fail(ALL_S3_CALLS, "slowdown", every=3)
        proxy.fail(ALL_S3_CALLS, "internal", every=5)
        proxy.fail(ALL_S3_CALLS, "reset", every=4)
        result = _s3_load(proxy.url, warehouse, instance, attempts=5)
        assert result.success
    faulted_kinds = {kind for kind, _ in proxy.faulted}
    assert faulted_kinds >= set(ALL_S3_CALLS), (proxy.seen, proxy.faulted)
    assert {fault for _, fault in proxy.faulted} == {"slowdown", "internal", "reset"}
    zips = _zips(buckets)
    assert sorted(key.split("/")[-1].split("_")[0] for key in zips) == ["staff", "student"]  # one set each
    assert _users(zips) == without_faults
    assert _open_uploads(buckets) == []


def test_a_bucket_that_refuses_every_upload_keeps_the_previous_zips_and_names_s3_in_the_email(
    buckets, moto_endpoint, tmp_path
):
    warehouse = synthetic.create_warehouse(tmp_path / "dw.sqlite3", 300, 300)
    with dg.instance_for_test() as instance:
        assert _s3_load(moto_endpoint, warehouse, instance).success
    previous = _zips(buckets)
    with sqlite3.connect(warehouse) as connection:  # new people: a load would change the set
        connection.execute("update LIBRARY_EMPLOYEE set EMAIL_ADDRESS = 'changed@example.edu'")
    with FaultProxy(moto_endpoint) as proxy, dg.instance_for_test(overrides=RUN_RETRIES) as instance:
        proxy.fail(("put", "create_multipart", "part", "complete"), "unavailable", bucket=ALMA_BUCKET)
        result = _s3_load(proxy.url, warehouse, instance, retry_minutes=0.05, attempts=2)
        assert not result.success
        run = instance.get_run_by_id(result.run_id)
        facts = run_facts(instance, run)
    assert retries.will_retry(run) and retries.NOT_RETRIED_TAG not in run.tags  # it may pass: retried
    assert _zips(buckets) == previous  # each type's previous zip, untouched
    assert _open_uploads(buckets) == []
    assert sorted(facts.failed_steps) == ["staff_zip", "student_zip"]
    message = emails.failure_message(facts, "prod", "from@example.edu", ["to@example.edu"])
    body = message.get_content()
    assert f"S3 (s3://{ALMA_BUCKET}): upload of alma/staff_" in body
    assert "ServiceUnavailable" in body and "(transient)" in body
    # the baseline did not move: the next load still compares with the previous one
    state = BucketState(
        bucket=S3Bucket(bucket=STATE_BUCKET, prefix="patronload/", s3=S3Resource(endpoint_url=moto_endpoint))
    )
    assert state.read_baseline("staff").keys == [key for key in previous if "/staff_" in key]


# -- a disk that fills ----------------------------------------------------------------------------

DISK_FULL_SCRIPT = """
import json, sys
from pathlib import Path
import dagster as dg
from patronload_assets.reports import emails
from patronload_assets.institutions.mit import synthetic
from patronload_assets_tests.conftest import load

folder = Path(sys.argv[1])
outcome = {}
with dg.instance_for_test(temp_dir=str(folder / "home")) as instance:
    small = synthetic.create_warehouse(folder / "small.sqlite3", 40, 40)
    outcome["first"] = load(small, folder / "bucket", instance).success
    outcome["first_keys"] = sorted(p.name for p in (folder / "bucket").rglob("*.zip"))
    large = synthetic.create_warehouse(folder / "large.sqlite3", 3000, 3000)
    result = load(large, folder / "bucket", instance)
    outcome["second"] = result.success
    outcome["errors"] = [
        " ".join(emails.error_lines(event.event_specific_data.error))
        for event in result.all_events if event.event_type_value == "STEP_FAILURE"
    ]
    outcome["keys"] = sorted(p.name for p in (folder / "bucket").rglob("*.zip"))
    scratch = Path(instance.storage_directory()) / "patronload_scratch"
    outcome["scratch_left"] = sorted(p.name for p in scratch.iterdir())
print(json.dumps(outcome))
"""


@pytest.mark.slow
def test_a_disk_that_fills_in_the_zip_step_names_the_folder_and_the_bytes_it_lacked(tmp_path):
    """The zip steps' build folder on a 96 KiB tmpfs (a private mount namespace, as a task's small
    disk): a first small load fits; a larger one fails naming the folder and about how many bytes
    it lacked, each type keeps its previous zip, and the build folder is left empty."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    from .conftest import PROJECT_DIR

    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare for a tmpfs of its own (CI has both)")
    scratch = tmp_path / "home" / "storage" / "patronload_scratch"
    scratch.mkdir(parents=True)
    command = f'mount -t tmpfs -o size=96k tmpfs {scratch} && exec {sys.executable} -c "$SCRIPT" {tmp_path}'
    finished = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", command],
        cwd=PROJECT_DIR, env={**os.environ, "SCRIPT": DISK_FULL_SCRIPT}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr[-3000:]
    outcome = json.loads(finished.stdout.strip().splitlines()[-1])
    assert outcome["first"] and len(outcome["first_keys"]) == 2
    assert not outcome["second"]
    assert outcome["keys"] == outcome["first_keys"]  # each type's previous zip, alone
    assert outcome["scratch_left"] == []
    assert outcome["errors"], outcome
    for error in outcome["errors"]:
        assert f"no space left in the build folder {scratch}/" in error, error
        assert "more bytes were needed" in error and "Give the step more disk" in error


# -- SES -------------------------------------------------------------------------------------------


def test_ses_throttling_the_first_sends_still_delivers_the_report_once(moto_endpoint, aws_environment):
    import datetime as dt
    import logging

    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    from patronload_assets.reports.sensors import deliver
    from patronload_assets.resources.mail import SesMailer

    boto3.client("ses", endpoint_url=moto_endpoint, region_name="us-east-1").verify_email_identity(
        EmailAddress="throttled@example.edu"
    )
    facts = emails.RunFacts("run-throttled", "patronload_job", dt.datetime(2026, 12, 5, tzinfo=dt.UTC), [])
    with FaultProxy(moto_endpoint) as proxy:
        proxy.fail("ses", "throttling", times=2)
        mailer = SesMailer(
            recipients="a@example.edu", sender="throttled@example.edu", region_name="us-east-1",
            endpoint_url=proxy.url,
        )  # fmt: skip
        message = emails.success_message(facts, mailer.workspace, mailer.sender, mailer.recipient_list())
        where = deliver(mailer, message, "run-throttled-success", logging.getLogger("test"))
    assert where.startswith("SES message ")
    assert proxy.faulted == Counter({("ses", "throttling"): 2}) and proxy.seen["ses"] == 3
    sent = [
        m
        for m in ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages
        if "run-throttled" in str(m.raw_data)
    ]
    assert len(sent) == 1  # once: a throttled send is not a sent one


# -- SIGTERM, as ECS stops a task ---


def test_sigterm_between_two_zips_of_a_set_removes_the_part_already_uploaded(tmp_path):
    """A set of two zips; SIGTERM arrives as the second goes up: the first is removed again, the
    previous set stays alone, and the step ends with the interruption."""
    import datetime as dt
    import logging
    import os
    import signal
    from types import SimpleNamespace

    from patronload_assets.resources.bucket import LocalBucket

    class StoppedMidSet(LocalBucket):
        def upload(self, path, key):
            if key.endswith("_2.zip"):
                os.kill(os.getpid(), signal.SIGTERM)  # what ECS sends the task
            super().upload(path, key)

    bucket = StoppedMidSet(directory=str(tmp_path / "bucket"), prefix="alma")
    (tmp_path / "bucket" / "alma").mkdir(parents=True)
    (tmp_path / "bucket" / "alma" / "staff_2026-12-04_05.00.00.zip").write_bytes(b"previous")
    zips = []
    for number in (1, 2):
        path = tmp_path / f"staff_{number}.zip"
        path.write_bytes(b"new")
        name = f"staff_2026-12-05_05.00.00_{number}.zip"
        zips.append(SimpleNamespace(path=path, name=name, size=3, patrons=1))
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(assets.Terminated):
        moment = dt.datetime(2026, 12, 5, 5, tzinfo=dt.UTC)
        assets.put_in_place(logging.getLogger("test"), bucket, "staff", zips, moment)
    left = sorted(path.name for path in (tmp_path / "bucket" / "alma").iterdir())
    assert left == ["staff_2026-12-04_05.00.00.zip"]
    assert signal.getsignal(signal.SIGTERM) is before  # the step's own handling is back


@pytest.mark.slow
def test_sigterm_during_the_zip_upload_leaves_the_previous_zips_and_the_next_load_succeeds(
    buckets, moto_endpoint, tmp_path
):
    """The whole load from the command line, its process group sent SIGTERM (what ECS sends) while
    an upload to Alma's bucket is in progress (held by the proxy): the run ends, each type keeps
    its previous zip (no part of a new set, no upload left open), and the next load succeeds."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from .environment import MATERIALIZE_ALL, embedded_environment

    warehouse = synthetic.create_warehouse(tmp_path / "dw.sqlite3", 200, 200)
    with dg.instance_for_test() as instance:
        assert _s3_load(moto_endpoint, warehouse, instance).success
    previous = _zips(buckets)
    dagster = str(Path(sys.executable).parent / "dagster")

    def materialize(endpoint: str) -> subprocess.Popen:
        environment = embedded_environment(
            tmp_path, tmp_path / "home",
            S3_BUCKET_NAME=ALMA_BUCKET, S3_PREFIX="alma", S3_ENDPOINT_URL=endpoint, S3_RETRY_MINUTES="0.05",
            STATE_BUCKET_NAME=STATE_BUCKET, AWS_DEFAULT_REGION="us-east-1",
        )  # fmt: skip
        environment["LOCAL_WAREHOUSE_PATH"] = str(warehouse)
        return subprocess.Popen(
            [dagster, *MATERIALIZE_ALL[1:]], cwd=tmp_path, env=environment, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "load.log", "ab"),  # noqa: SIM115
        )  # fmt: skip

    with FaultProxy(moto_endpoint) as proxy:
        proxy.fail(("put", "create_multipart", "part"), "stall", bucket=ALMA_BUCKET)
        proxy.stall_seconds = 8  # a slow upload in flight: the step's clean-up waits for it to end
        process = materialize(proxy.url)
        try:
            assert proxy.stalled.wait(180), (tmp_path / "load.log").read_text()[-3000:]
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=60)  # ECS sends SIGKILL 30 s later; this one ends within it
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    assert process.returncode != 0
    assert _zips(buckets) == previous, "each type keeps its previous zip"
    assert _open_uploads(buckets) == []

    again = materialize(moto_endpoint)
    assert again.wait(timeout=300) == 0, (tmp_path / "load.log").read_text()[-3000:]
    zips = _zips(buckets)
    assert sorted(key.split("/")[-1].split("_")[0] for key in zips) == ["staff", "student"]
    assert not set(zips) & set(previous)  # the new set, alone
