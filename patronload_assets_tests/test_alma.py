"""Alma's verdict on a load (docs/patron-rules.md §12), against a stand-in Alma Jobs API over real
HTTP: the client, the parsing, and the sensor that follows the job run after an upload."""

import csv
import datetime as dt
import email
import email.policy
import io
import json
import os
import subprocess
import sys
import time
import zipfile

import dagster as dg
import pytest
from lxml import etree

from patronload_assets import settings
from patronload_assets.alma import verdict
from patronload_assets.alma.api import AlmaApiError, AlmaJobs
from patronload_assets.domain import alma_jobs
from patronload_assets.institutions.mit import synthetic
from patronload_assets.reports import emails
from patronload_assets.resources.mail import OutboxMailer
from patronload_assets.state.store import InstanceState

from .alma_standin import (
    JOB_ID,
    KEY,
    PROFILE_ID,
    REASON_CODE,
    RUN_STATUSES,
    USER_CODE,
    StandInAlma,
    alma_time,
    counters,
    event,
    rejection,
)
from .conftest import load


@pytest.fixture
def alma():
    with StandInAlma() as standin:
        yield standin


def _client(standin, **fields) -> AlmaJobs:
    return AlmaJobs(
        **{"api_key": KEY, "base_url": standin.base_url, "backoff_seconds": 0.01, "job_id": JOB_ID, **fields}
    )


# -- parsing --------------------------------------------------------------------------------------


def test_a_job_run_is_read_by_its_counters_descriptions_and_tolerates_missing_fields():
    run = alma_jobs.job_run(
        {
            "id": "77",
            "status": {"value": "COMPLETED_WARNING", "desc": "Completed with warnings"},
            "submit_time": "2026-11-30T06:10:00.000Z",
            "alert": [{"value": "alert_general_error", "desc": "Some users were rejected"}, {"value": "x"}],
            "counter": counters(created=5, updated=1200, unchanged=30000, rejected=3, **{"Users deleted": 2}),
        }
    )
    assert (run.status, run.running, run.succeeded) == ("COMPLETED_WARNING", False, False)
    assert run.alerts == ["Some users were rejected", "x"]
    assert run.counts == {
        "records_processed": 31208,
        "users_processed": 31208,
        "created": 5,
        "updated": 1200,
        "unchanged": 30000,
        "rejected": 3,
        "users_deleted": 2,
    }
    assert run.submitted == dt.datetime(2026, 11, 30, 6, 10, tzinfo=dt.UTC) and run.ended is None
    metadata = run.metadata()
    assert metadata["alma_users_rejected"] == 3 and metadata["alma_users_deleted"] == 2
    assert metadata["alma_records_processed"] == 31208 and metadata["alma_job_alerts"] == 2
    assert [alma_jobs.counter_name(desc) for desc in (
        "Total users created successfully", "Total users updated successfully", "Total users unchanged",
        "Total users rejected", "Number of users created", "Users not changed", "Users failed", "New users",
        "Users deleted", "Total records processed", "",
    )] == ["created", "updated", "unchanged", "rejected", "created", "unchanged", "rejected", "created",
           "users_deleted", "records_processed", "unnamed"]  # fmt: skip
    bare = alma_jobs.job_run(
        {"id": "78", "counter": {"type": {"desc": "Total users rejected"}, "value": "7"}}
    )
    assert bare.running and bare.counts == {"rejected": 7} and bare.metadata()["alma_users_created"] == 0
    assert bare.alerts == []
    assert alma_jobs.job_run({"id": "79", "status": {"value": "FINALIZING"}}).running


@pytest.mark.parametrize("status", RUN_STATUSES)
def test_every_published_status_is_at_work_or_an_end(status):
    run = alma_jobs.job_run({"id": "1", "status": {"value": status}})
    assert run.running == (status in ("QUEUED", "PENDING", "INITIALIZING", "RUNNING", "FINALIZING"))
    assert run.running != (status in alma_jobs.ENDED_STATES)
    assert run.succeeded == (status == "COMPLETED_SUCCESS")


def test_the_run_after_an_upload_is_the_first_submitted_after_it_not_yet_reported():
    upload = dt.datetime(2026, 11, 30, 6, 0, tzinfo=dt.UTC)
    runs = [
        {"id": "1", "submit_time": "2026-11-30T05:59:59Z"},
        {"id": "3", "submit_time": "2026-11-30T08:00:00Z"},
        {"id": "2", "submit_time": "2026-11-30T07:00:00Z"},
        {"id": "4"},
    ]
    assert alma_jobs.first_run_after(runs, upload)["id"] == "2"
    assert alma_jobs.first_run_after(runs, upload, reported=["2"])["id"] == "3"
    assert alma_jobs.first_run_after(runs, upload + dt.timedelta(days=1)) is None


def test_each_event_is_a_rejected_user_named_as_sent_with_alma_s_reason():
    sent = {primary_id.upper(): primary_id for primary_id in ("AB@MIT.EDU", "Cd@MIT.EDU", "EF@MIT.EDU")}
    events = [
        rejection("ab@mit.edu", "Identifier 9000 is already used by another user"),  # echoed in another case
        event("Invalid user group  31X", " EF@MIT.EDU "),  # the user in any position
        event("User Cd@mit.edu could not be updated: expiry date in the past."),  # inside a sentence
        event("ZZ@MIT.EDU", "Unknown user"),  # no user of this load
        {
            "event_id": "9",
            "event_key": {"code": "1", "value": "AB@MIT.EDU"},
            "note": "one object, not a list",
        },
        {"event_id": "10"},  # nothing said
        "not an event",
    ]
    found = alma_jobs.rejections(events, sent)
    assert [(r.primary_id, r.reason) for r in found] == [
        ("AB@MIT.EDU", "Identifier 9000 is already used by another user"),
        ("EF@MIT.EDU", "Invalid user group 31X"),
        ("Cd@MIT.EDU", "User Cd@mit.edu could not be updated: expiry date in the past."),
        ("", "ZZ@MIT.EDU | Unknown user"),
        ("AB@MIT.EDU", "one object, not a list"),
        ("", "(no reason given)"),
    ]
    assert found[0].described() == (
        f"{USER_CODE}=ab@mit.edu; {REASON_CODE}=Identifier 9000 is already used by another user"
    )
    assert (
        found[3].event_id == events[3]["event_id"]
        and found[4].described() == "1=AB@MIT.EDU; note=one object, not a list"
    )


# -- the client -----------------------------------------------------------------------------------


def test_the_client_pages_events_and_retries_429_and_500(alma):
    submitted = dt.datetime.now(dt.UTC)
    alma.add_run("900", submitted, "COMPLETED_SUCCESS", counter=counters(updated=10))
    alma.events["900"] = [rejection(f"U{number}@MIT.EDU", "bad") for number in range(250)]
    client = _client(alma)
    alma.fail_next = [429, 500]
    [listed] = client.job_instances(JOB_ID, submitted.date())
    assert listed["id"] == "900"
    assert sum(1 for path in alma.requests if "/instances?" in path) == 3  # two retried, one answered
    events = list(client.job_events(JOB_ID, "900"))
    assert [found["event_key"][0]["value"] for found in events] == [
        f"U{number}@MIT.EDU" for number in range(250)
    ]
    assert sum(1 for path in alma.requests if "/events?" in path) == 3  # pages of 100
    assert client.job_event_count(JOB_ID, "900") == 250
    assert _client(alma, job_id=None, profile_id=PROFILE_ID).sis_job_id() == JOB_ID


def test_client_errors_name_the_call_and_status_never_the_key(alma):
    wrong = AlmaJobs(api_key="l8xx-wrong-key", base_url=alma.base_url, job_id=JOB_ID, backoff_seconds=0.01)
    with pytest.raises(AlmaApiError) as raised:
        wrong.job_instance(JOB_ID, "1")
    assert str(raised.value).startswith(
        f"GET /conf/jobs/{JOB_ID}/instances/1: HTTP 401 (error UNAUTHORIZED: "
    )
    with pytest.raises(
        AlmaApiError, match=r"GET /conf/jobs/M4321/instances/1/events: HTTP 400 \(error 60332: "
    ):
        _client(alma).job_event_count("M4321", "1")  # a job that is not USERS/SIS
    with pytest.raises(AlmaApiError, match=r"HTTP 400 \(error 402217: Invalid date format\)"):
        _client(alma)._get(f"/conf/jobs/{JOB_ID}/instances", {"submit_date_from": "30/11/2026"})
    with pytest.raises(AlmaApiError, match=r"HTTP 400 \(error 40166410: Invalid status\)"):
        _client(alma)._get(f"/conf/jobs/{JOB_ID}/instances", {"status": "DONE"})
    alma.fail_next = [500] * 5
    with pytest.raises(AlmaApiError, match=r"GET /conf/jobs/S1234/instances: HTTP 500"):
        _client(alma, attempts=5).job_instances(JOB_ID, dt.date.today())
    with pytest.raises(AlmaApiError, match="no scheduled job for integration profile"):
        _client(alma, job_id=None, profile_id="other").sis_job_id()
    gone = AlmaJobs(
        api_key=KEY, base_url="http://127.0.0.1:9", job_id=JOB_ID, attempts=2, backoff_seconds=0.01
    )
    with pytest.raises(AlmaApiError) as refused:
        gone.job_instance(JOB_ID, "1")
    assert KEY not in str(refused.value) and "GET /conf/jobs" in str(refused.value)


def test_the_feature_is_off_without_a_key_and_refuses_a_key_without_a_job():
    assert settings.alma_resource({}) is None
    assert "alma" not in settings.resources({})
    with pytest.raises(settings.ConfigurationError, match="ALMA_SIS_JOB_ID"):
        settings.alma_resource({"ALMA_API_KEY": "x", "WORKSPACE": "prod"})
    assert settings.alma_resource({"ALMA_API_KEY": "x"}) is None  # dev: the key is for patronload_now
    assert settings.alma_users_resource({"ALMA_API_KEY": "x"}).may_send is False  # no explicit base URL
    assert settings.alma_users_resource({"ALMA_API_KEY": "x", "ALMA_API_BASE_URL": "http://sandbox"}).may_send
    with pytest.raises(settings.ConfigurationError, match="ALMA_POLL_MINUTES"):
        settings.alma_resource({"ALMA_API_KEY": "x", "ALMA_SIS_JOB_ID": "1", "ALMA_POLL_MINUTES": "0"})
    resource = settings.alma_resource({"ALMA_API_KEY": "x", "ALMA_SIS_JOB_ID": "1", "ALMA_POLL_MINUTES": "3"})
    assert resource.poll_minutes == 3 and resource.wait_hours == 26


# -- the sensor -----------------------------------------------------------------------------------


class Ticks:
    """The sensor's ticks on one instance, the cursor carried from one to the next."""

    def __init__(self, instance, alma_resource: AlmaJobs, outbox, clock=time.time):
        self.instance, self.cursor = instance, None
        self.sensor = verdict.alma_job_sensor(1, clock)
        self.resources = {
            "alma": alma_resource,
            "mailer": OutboxMailer(directory=str(outbox), workspace="test"),
            "state": InstanceState(),
        }

    def __call__(self) -> dg.SensorResult:
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources=self.resources
        )
        result = self.sensor(context)
        self.cursor = context.cursor
        return result


def _sent(bucket, patron_type: str) -> list[str]:
    """The primary ids of the type's zip in the bucket, as written (parsed here)."""
    [path] = (bucket / "alma").glob(f"{patron_type}_*.zip")
    with zipfile.ZipFile(path) as archive:
        users = etree.fromstring(archive.read(archive.namelist()[0]))
    return [user.findtext("primary_id") for user in users]


def _emails(outbox) -> list[email.message.EmailMessage]:
    return [
        email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        for path in sorted(outbox.glob("*.eml"))
    ]


def test_the_sensor_follows_the_run_after_an_upload_and_reports_it_once(tmp_path, alma):
    warehouse = tmp_path / "dw.sqlite3"
    synthetic.create_warehouse(warehouse, 100, 100)
    outbox = tmp_path / "outbox"
    with dg.instance_for_test() as instance:
        ticks = Ticks(instance, _client(alma), outbox)
        assert ticks().asset_events == []  # nothing uploaded yet
        assert load(warehouse, tmp_path / "bucket", instance).success
        uploaded = dt.datetime.now(dt.UTC)

        assert ticks().asset_events == [] and not list(outbox.glob("*"))  # no run of the job yet
        alma.add_run("5000", uploaded - dt.timedelta(hours=3), "COMPLETED_SUCCESS")  # before the upload
        alma.add_run("5001", uploaded + dt.timedelta(seconds=5), "RUNNING")
        alma.fail_next = [429, 500]  # slow down, then a hiccup: retried within the tick
        assert ticks().asset_events == [] and not list(outbox.glob("*"))
        assert json.loads(ticks.cursor)["following"] == "5001"

        sent = _sent(tmp_path / "bucket", "student")[:60] + _sent(tmp_path / "bucket", "staff")[:59]
        alma.runs["5001"].update(
            status={"value": "COMPLETED_WARNING", "desc": "Completed with warnings"},
            end_time="2026-11-30T07:00:00Z",
            alert=[{"value": "alert_sis_rejected", "desc": "Some users were not loaded"}],
            counter=counters(created=4, updated=150, unchanged=40, rejected=120),
        )
        # Alma echoes the primary ids in lower case; one event names nobody this load sent.
        alma.events["5001"] = [
            rejection(primary_id.lower(), f"Identifier {number} in use")
            for number, primary_id in enumerate(sent)
        ] + [event("Record 120 has no primary identifier", "NOBODY@MIT.EDU")]
        result = ticks()
        [materialization] = result.asset_events
        assert materialization.asset_key == dg.AssetKey("alma_sis_job")
        metadata = {name: value.value for name, value in materialization.metadata.items()}
        assert (metadata["alma_users_created"], metadata["alma_users_updated"]) == (4, 150)
        assert (metadata["alma_users_unchanged"], metadata["alma_users_rejected"]) == (40, 120)
        assert (
            metadata["alma_job_status"] == "COMPLETED_WARNING" and metadata["alma_job_instance_id"] == "5001"
        )
        assert (metadata["alma_rejected_users_listed"], metadata["alma_rejected_users_named"]) == (120, 119)
        [message] = _emails(outbox)
        assert (
            message["Subject"] == f"TEST Patronload Alma job {uploaded.date().isoformat()} COMPLETED_WARNING"
        )
        body = message.get_body(("plain",)).get_content()
        assert "COMPLETED_WARNING" in body and "users rejected: 120" in body and "users created: 4" in body
        assert "Alma's alerts on the run:\n  Some users were not loaded" in body
        assert f"  {sent[0]}: Identifier 0 in use" in body  # the primary id as sent, Alma's reason
        [attachment] = list(message.iter_attachments())
        assert attachment.get_filename() == "alma_rejected_users.csv"
        rows = list(csv.DictReader(io.StringIO(attachment.get_content())))
        assert list(rows[0]) == ["primary_id", "reason", "event_id", "values"] and len(rows) == 120
        assert [row["primary_id"] for row in rows[:119]] == sent
        assert rows[0]["values"] == f"{USER_CODE}={sent[0].lower()}; {REASON_CODE}=Identifier 0 in use"
        assert rows[119]["primary_id"] == "" and "NOBODY@MIT.EDU" in rows[119]["values"]
        assert rows[119]["event_id"] == alma.events["5001"][119]["event_id"]
        assert KEY not in body

        # Reported once: later ticks, and runs before the next upload, change nothing.
        alma.add_run("5002", uploaded + dt.timedelta(minutes=30), "COMPLETED_SUCCESS")
        assert ticks().asset_events == [] and ticks().asset_events == []
        assert len(_emails(outbox)) == 1


def test_a_job_that_never_starts_is_reported_at_the_wait_limit(tmp_path, alma):
    warehouse = synthetic.create_warehouse(tmp_path / "dw.sqlite3", 50, 50)
    outbox = tmp_path / "outbox"
    fixed = [None]  # the test's clock: the machine's until set, then only what the test says

    def clock():
        return time.time() if fixed[0] is None else fixed[0]

    with dg.instance_for_test() as instance:
        ticks = Ticks(instance, _client(alma, wait_hours=1), outbox, clock)
        ticks()
        assert load(warehouse, tmp_path / "bucket", instance).success
        # Set from the moment the load recorded for its upload: however slow the machine, no tick
        # sees more time pass than the test says.
        uploaded = min(verdict._uploads(instance))  # the wait counts from the first zip in place
        fixed[0] = uploaded + 1
        assert ticks().asset_events == [] and not list(outbox.glob("*"))
        fixed[0] = uploaded + 3599  # just within the hour: nothing yet
        assert ticks().asset_events == [] and not list(outbox.glob("*"))
        fixed[0] = uploaded + 3600 + 60
        assert ticks().asset_events == []
        [message] = _emails(outbox)
        load_date = dt.datetime.fromtimestamp(uploaded, dt.UTC).date().isoformat()
        assert message["Subject"].endswith(f"Patronload Alma job {load_date} not picked up")
        assert "integration profile" in message.get_body(("plain",)).get_content()
        ticks()
        assert len(_emails(outbox)) == 1


@pytest.mark.slow
def test_under_dagster_dev_a_load_is_followed_by_alma_s_verdict(tmp_path):
    """The daemon path: a real `dagster dev` with the stand-in configured, a load launched as the UI
    does, the stand-in's job run picking up the files: one email, and alma_sis_job materialized."""
    from .test_daemon import finished, launch, running_dagster_dev, wait_for

    bucket = tmp_path / "bucket"

    def a_run_picks_up_the_files(standin: StandInAlma) -> None:
        zips = sorted(bucket.rglob("student_*.zip"))
        if zips and "6001" not in standin.runs:
            with zipfile.ZipFile(zips[0]) as archive:
                users = etree.fromstring(archive.read(archive.namelist()[0]))
            rejected = [user.findtext("primary_id") for user in users[:2]]
            standin.add_run(
                "6001",
                dt.datetime.now(dt.UTC),
                "COMPLETED_FAILED",
                end_time=alma_time(dt.datetime.now(dt.UTC)),
                counter=counters(created=3, updated=500, unchanged=20, rejected=2),
            )
            standin.events["6001"] = [
                rejection(primary_id, "Identifier already in use") for primary_id in rejected
            ]
            standin.rejected = rejected

    with StandInAlma() as alma:
        alma.on_list = a_run_picks_up_the_files
        settings = {
            "ALMA_API_KEY": KEY,
            "ALMA_API_BASE_URL": alma.base_url,
            "ALMA_SIS_JOB_ID": JOB_ID,
            "ALMA_POLL_MINUTES": "0.1",  # a tick every 6 seconds
        }
        with running_dagster_dev(tmp_path, **settings) as (client, environment):
            run_id = launch(client)
            assert wait_for(lambda: finished(client, run_id), 240, "the load") == "SUCCESS"
            [verdict] = wait_for(
                lambda: sorted((tmp_path / "outbox").glob("alma-6001*.eml")), 200, "Alma's verdict", 2
            )
            message = email.message_from_bytes(verdict.read_bytes(), policy=email.policy.default)
            assert "Patronload Alma job" in message["Subject"]
            body = message.get_body(("plain",)).get_content()
            assert "users updated: 500" in body and "users rejected: 2" in body
            [attachment] = list(message.iter_attachments())
            assert [line.split(",")[0] for line in attachment.get_content().splitlines()[1:]] == alma.rejected

            os.environ["DAGSTER_HOME"] = environment["DAGSTER_HOME"]
            with dg.DagsterInstance.from_config(environment["DAGSTER_HOME"]) as instance:
                event = wait_for(
                    lambda: instance.get_latest_materialization_event(dg.AssetKey("alma_sis_job")),
                    60,
                    "the asset",
                )
                metadata = event.asset_materialization.metadata
                assert (
                    metadata["alma_users_rejected"].value == 2 and metadata["alma_users_created"].value == 3
                )
            time.sleep(21)  # two more ticks (the daemon looks every 5 s): the run is reported once
            assert len(list((tmp_path / "outbox").glob("alma-*.eml"))) == 1
            assert all(KEY not in path.read_text() for path in (tmp_path / "outbox").glob("*.eml"))


# -- the first-day check ----------------------------------------------------------------------------


def _first_day(alma, **fields):
    from patronload_assets.alma.first_day import alma_connection_test

    with dg.instance_for_test() as instance:
        result = alma_connection_test.execute_in_process(
            instance=instance, resources={"alma": _client(alma, **fields)}, raise_on_error=False
        )
        lines = [entry.user_message for entry in instance.all_logs(result.run_id)]
    return result, "\n".join(lines)


def test_the_first_day_check_reports_the_job_s_last_runs_without_a_value_of_an_event(alma):
    now = dt.datetime.now(dt.UTC)
    for number, status in enumerate(
        ("COMPLETED_SUCCESS", "COMPLETED_FAILED", "COMPLETED_SUCCESS", "RUNNING")
    ):
        alma.add_run(
            f"70{number}", now - dt.timedelta(days=4 - number), status,
            end_time=alma_time(now - dt.timedelta(days=4 - number, minutes=-9)),
            counter=counters(created=number, updated=100 + number, rejected=2),
        )  # fmt: skip
    alma.events["703"] = [rejection("SECRET@MIT.EDU", "Identifier 4711 is held by Jane Roe")] * 2
    result, log = _first_day(alma, job_id=None, profile_id=PROFILE_ID)
    assert result.success, log[-2000:]
    assert f"job {JOB_ID}, 'SIS synchronize', category USERS, type SIS" in log
    assert "4 run(s) of job" in log
    assert "run 700" not in log  # the last three only
    assert "run 701: COMPLETED_FAILED (submitted " in log and "created 1, " in log and "updated 101" in log
    assert "run 703: RUNNING" in log and "run 703: 2 event(s)" in log
    assert "SECRET" not in log and "4711" not in log and "Jane Roe" not in log and KEY not in log


def test_the_first_day_check_fails_naming_the_call_when_the_job_is_not_users_sis_or_the_key_wrong(alma):
    alma.add_run("800", dt.datetime.now(dt.UTC), "COMPLETED_SUCCESS")
    result, _ = _first_day(alma, job_id="M4321")
    assert not result.success
    [failure] = [event for event in result.all_events if event.is_step_failure]
    assert "GET /conf/jobs/M4321: HTTP 200, but the job is ACQUISITIONS/OTHER, not USERS/SIS" in str(
        failure.step_failure_data.error
    )
    result, _ = _first_day(alma, api_key="l8xx-no-rights")
    [failure] = [event for event in result.all_events if event.is_step_failure]
    assert f"GET /conf/jobs/{JOB_ID}: HTTP 401" in str(failure.step_failure_data.error)


def test_with_a_key_the_code_location_loads_every_alma_job(tmp_path):
    """Definitions are made at import: checked in a fresh interpreter with the key set."""
    environment = {**os.environ, "ALMA_API_KEY": KEY, "ALMA_SIS_JOB_ID": JOB_ID, "WORKSPACE": "dev"}
    environment.pop("DAGSTER_HOME", None)
    code = (
        "import dagster as dg; from patronload_assets import defs; dg.Definitions.validate_loadable(defs); "
        "print(sorted(job.name for job in defs.resolve_all_job_defs()))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )  # not the project root: an instance made without DAGSTER_HOME lives in the working folder
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "'alma_connection_test'" in completed.stdout and "'patronload_now'" in completed.stdout


@pytest.mark.parametrize("status", sorted(alma_jobs.ENDED_STATES))
def test_every_end_but_success_says_its_status_in_the_subject(status):
    run = alma_jobs.job_run(
        {"id": "9", "status": {"value": status}, "alert": {"value": "a1", "desc": "Alma's alert"},
         "counter": counters(updated=3)}
    )  # fmt: skip
    facts = {"kind": "verdict", "load_date": "2026-12-01", "alerts": run.alerts, **run.metadata()}
    message = emails.alma_job_message(facts, {}, "test", "a@b", ["c@d"])
    expected = "TEST Patronload Alma job 2026-12-01" + ("" if status == "COMPLETED_SUCCESS" else f" {status}")
    assert message["Subject"] == expected
    assert "Alma's alerts on the run:\n  Alma's alert" in message.get_body().get_content()


def test_the_first_day_check_reads_the_runs_when_the_job_s_own_record_is_refused(alma):
    alma.job_record = False
    alma.add_run("900", dt.datetime.now(dt.UTC), "COMPLETED_SUCCESS", counter=counters(updated=7))
    result, log = _first_day(alma)
    assert result.success, log[-2000:]
    assert f"GET /conf/jobs/{JOB_ID}: HTTP 400 (error 402213" in log and "run 900: COMPLETED_SUCCESS" in log


def test_alma_s_error_list_is_read_in_json_and_in_xml():
    from patronload_assets.alma.api import alma_errors

    json_body = b'{"errorsExist": true, "errorList": {"error": {"errorCode": "401861", "errorMessage": "x"}}}'
    xml_body = (
        b'<web_service_result xmlns="http://com/exlibris/urm/general/xmlbeans"><errorsExist>true</errorsExist>'
        b"<errorList><error><errorCode>401861</errorCode><errorMessage>User  not found</errorMessage></error>"
        b"</errorList></web_service_result>"
    )
    assert alma_errors(json_body) == [("401861", "x")]  # one object where a list is expected
    assert alma_errors(xml_body) == [("401861", "User not found")]
    assert alma_errors(b"<html>gateway</html>") == alma_errors(b"not json") == []


def test_a_timeout_on_the_jobs_and_users_calls_is_retried_and_a_created_user_not_created_twice(alma):
    """Answers held past the client's wait (the stand-in carries a call out, then holds its answer):
    a read is tried again; a create whose answer was lost is looked up, not sent again."""
    from patronload_assets.alma.api import AlmaUsers

    submitted = dt.datetime.now(dt.UTC)
    alma.add_run("901", submitted, "COMPLETED_SUCCESS", counter=counters(updated=1))
    client = _client(alma, timeout_seconds=1)
    alma.stall_next = [3]
    [listed] = client.job_instances(JOB_ID, submitted.date())
    assert listed["id"] == "901"
    assert sum(1 for path in alma.requests if "/instances?" in path) == 2  # timed out, then answered

    users = AlmaUsers(api_key=KEY, base_url=alma.base_url, timeout_seconds=1, backoff_seconds=0.01)
    body = b'<?xml version="1.0" encoding="UTF-8"?><user><primary_id>LATE@MIT.EDU</primary_id></user>'
    alma.stall_next = [3]
    users.create_user(body, "LATE@MIT.EDU")
    assert len(alma.created) == 1  # the lost answer's user, looked up and found: not sent twice
    posts = [path for path in alma.requests if path.startswith("POST /almaws/v1/users")]
    assert len(posts) == 1 and users.has_user("LATE@MIT.EDU")
