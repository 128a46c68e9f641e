"""Alma's verdict on a load (docs/patron-rules.md §12), against a stand-in Alma Jobs API over real
HTTP: the client, the parsing, and the sensor that follows the job run after an upload."""

import datetime as dt
import email
import email.policy
import json
import os
import time
import zipfile

import dagster as dg
import pytest
from lxml import etree

from patronload_assets import alma_report, settings
from patronload_assets.alma_api import AlmaApiError, AlmaJobs
from patronload_assets.domain import alma_jobs, synthetic
from patronload_assets.resources import OutboxMailer
from patronload_assets.state import InstanceState

from .alma_standin import JOB_ID, KEY, PROFILE_ID, StandInAlma, alma_time, counters, rejection
from .conftest import load


@pytest.fixture
def alma():
    with StandInAlma() as standin:
        yield standin


def _client(standin, **fields) -> AlmaJobs:
    return AlmaJobs(
        api_key=KEY, base_url=standin.base_url, backoff_seconds=0.01, **{"job_id": JOB_ID, **fields}
    )


# -- parsing --------------------------------------------------------------------------------------


def test_a_job_run_is_read_by_its_counters_descriptions_and_tolerates_missing_fields():
    run = alma_jobs.job_run(
        {
            "id": "77",
            "status": {"value": "COMPLETED_FAILED", "desc": "Completed with errors"},
            "submit_time": "2026-11-30T06:10:00.000Z",
            "counter": counters(created=5, updated=1200, unchanged=30000, rejected=3, **{"Users deleted": 2}),
        }
    )
    assert (run.status, run.running, run.succeeded) == ("COMPLETED_FAILED", False, False)
    assert run.counts == {
        "created": 5,
        "updated": 1200,
        "unchanged": 30000,
        "rejected": 3,
        "users_deleted": 2,
    }
    assert run.submitted == dt.datetime(2026, 11, 30, 6, 10, tzinfo=dt.UTC) and run.ended is None
    metadata = run.metadata()
    assert metadata["alma_users_rejected"] == 3 and metadata["alma_users_deleted"] == 2
    assert [alma_jobs.counter_name(desc) for desc in (
        "Number of users created", "Users not changed", "Number of rejected users", "Users failed",
        "New users", "Users deleted", "",
    )] == ["created", "unchanged", "rejected", "rejected", "created", "users_deleted", "unnamed"]  # fmt: skip
    bare = alma_jobs.job_run({"id": "78"})
    assert bare.running and bare.counts == {} and bare.metadata()["alma_users_created"] == 0
    assert alma_jobs.job_run({"id": "79", "status": {"value": "FINALIZING"}}).running


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


def test_rejections_are_the_events_that_did_not_load_a_user():
    events = [
        rejection("AB@MIT.EDU", "Identifier 9000 is already used by another user"),
        {"type": {"value": "USER_UPDATED", "desc": "User updated"}, "entity": {"value": "CD@MIT.EDU"}},
        {
            "type": {"value": "SIS_ERROR"},
            "description": "Invalid user group  31X",
            "entity": {"value": "EF@MIT.EDU"},
        },
        {"description": "no entity at all"},
    ]
    found = alma_jobs.rejections(events)
    assert [(r.primary_id, r.reason) for r in found] == [
        ("AB@MIT.EDU", "Identifier 9000 is already used by another user"),
        ("EF@MIT.EDU", "Invalid user group 31X"),
        ("(not named)", "no entity at all"),
    ]


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
    assert [event["entity"]["value"] for event in events] == [f"U{number}@MIT.EDU" for number in range(250)]
    assert sum(1 for path in alma.requests if "/events?" in path) == 3  # pages of 100
    assert _client(alma, job_id=None, profile_id=PROFILE_ID).sis_job_id() == JOB_ID


def test_client_errors_name_the_call_and_status_never_the_key(alma):
    wrong = AlmaJobs(api_key="l8xx-wrong-key", base_url=alma.base_url, job_id=JOB_ID, backoff_seconds=0.01)
    with pytest.raises(AlmaApiError) as raised:
        wrong.job_instance(JOB_ID, "1")
    assert str(raised.value) == f"GET /conf/jobs/{JOB_ID}/instances/1: HTTP 401"
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
        settings.alma_resource({"ALMA_API_KEY": "x"})
    with pytest.raises(settings.ConfigurationError, match="ALMA_POLL_MINUTES"):
        settings.alma_resource({"ALMA_API_KEY": "x", "ALMA_SIS_JOB_ID": "1", "ALMA_POLL_MINUTES": "0"})
    resource = settings.alma_resource({"ALMA_API_KEY": "x", "ALMA_SIS_JOB_ID": "1", "ALMA_POLL_MINUTES": "3"})
    assert resource.poll_minutes == 3 and resource.wait_hours == 26


# -- the sensor -----------------------------------------------------------------------------------


class Ticks:
    """The sensor's ticks on one instance, the cursor carried from one to the next."""

    def __init__(self, instance, alma_resource: AlmaJobs, outbox):
        self.instance, self.cursor = instance, None
        self.sensor = alma_report.alma_job_sensor(1)
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

        alma.runs["5001"].update(
            status={"value": "COMPLETED_FAILED", "desc": "Completed with errors"},
            end_time="2026-11-30T07:00:00Z",
            counter=counters(created=4, updated=150, unchanged=40, rejected=120),
        )
        alma.events["5001"] = [
            rejection(f"R{number}@MIT.EDU", f"Identifier {number} in use") for number in range(120)
        ]
        result = ticks()
        [materialization] = result.asset_events
        assert materialization.asset_key == dg.AssetKey("alma_sis_job")
        metadata = {name: value.value for name, value in materialization.metadata.items()}
        assert (metadata["alma_users_created"], metadata["alma_users_updated"]) == (4, 150)
        assert (metadata["alma_users_unchanged"], metadata["alma_users_rejected"]) == (40, 120)
        assert (
            metadata["alma_job_status"] == "COMPLETED_FAILED" and metadata["alma_job_instance_id"] == "5001"
        )
        [message] = _emails(outbox)
        assert message["Subject"] == f"TEST Patronload Alma job {uploaded.date().isoformat()}"
        body = message.get_body(("plain",)).get_content()
        assert "COMPLETED_FAILED" in body and "users rejected: 120" in body and "users created: 4" in body
        [attachment] = list(message.iter_attachments())
        assert attachment.get_filename() == "alma_rejected_users.csv"
        lines = attachment.get_content().splitlines()
        assert (
            lines[0] == "primary_id,reason"
            and len(lines) == 121
            and lines[120] == "R119@MIT.EDU,Identifier 119 in use"
        )
        assert KEY not in body

        # Reported once: later ticks, and runs before the next upload, change nothing.
        alma.add_run("5002", uploaded + dt.timedelta(minutes=30), "COMPLETED_SUCCESS")
        assert ticks().asset_events == [] and ticks().asset_events == []
        assert len(_emails(outbox)) == 1


def test_a_job_that_never_starts_is_reported_at_the_wait_limit(tmp_path, alma):
    warehouse = synthetic.create_warehouse(tmp_path / "dw.sqlite3", 50, 50)
    outbox = tmp_path / "outbox"
    with dg.instance_for_test() as instance:
        ticks = Ticks(instance, _client(alma, wait_hours=2 / 3600), outbox)
        ticks()
        assert load(warehouse, tmp_path / "bucket", instance).success
        assert ticks().asset_events == [] and not list(outbox.glob("*"))
        time.sleep(2.5)
        assert ticks().asset_events == []
        [message] = _emails(outbox)
        assert message["Subject"].endswith(
            "Patronload Alma job " + dt.datetime.now(dt.UTC).date().isoformat() + " not picked up"
        )
        assert "integration profile" in message.get_body(("plain",)).get_content()
        ticks()
        assert len(_emails(outbox)) == 1


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
            "ALMA_POLL_MINUTES": "1",
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
            time.sleep(70)  # another tick: the run is reported once
            assert len(list((tmp_path / "outbox").glob("alma-*.eml"))) == 1
            assert all(KEY not in path.read_text() for path in (tmp_path / "outbox").glob("*.eml"))
