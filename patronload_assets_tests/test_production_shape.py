"""The deployment in the shape it ships: deploy/aws/dagster.yaml's instance on a real PostgreSQL
(SSL on), a stand-in S3 over HTTP (moto's server) for Alma's bucket and the state bucket, the
embedded warehouse, `dagster dev` running the daemon, webserver and sensors on the host's folders,
and every run started in a process of its own that cannot see the host's instance storage folder
or temp folder (isolated_runs.py), as each ECS task has a disk of its own."""

import contextlib
import csv
import datetime as dt
import email
import email.policy
import io
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import boto3
import pytest
import yaml
from lxml import etree

from patronload_assets.institutions.example import synthetic as example_synthetic
from patronload_assets.institutions.mit import synthetic

from .alma_standin import JOB_ID, KEY, StandInAlma, alma_time, counters, rejection
from .conftest import (
    DATABASE,
    PASSWORD,
    PROJECT_DIR,
    USER,
    free_port,
    leaked,
    patron_values,
    postgres_binaries,
)
from .environment import embedded_environment
from .test_changes import new_staff_and_moved_students
from .test_daemon import DAGSTER, finished, launch, running_dagster_dev, stop_process_group, wait_for

pytestmark = pytest.mark.slow  # a daemon, a server or a whole install

DEPLOY_INSTANCE = PROJECT_DIR / "deploy" / "aws" / "dagster.yaml"
ALMA_BUCKET, STATE_BUCKET = "shape-alma-bucket", "shape-patronload-state"  # its own, on a shared moto


def new_buckets(moto_endpoint: str, *names: str):
    """The buckets, made on the stand-in S3; a client of it."""
    s3 = boto3.client(
        "s3", endpoint_url=moto_endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip
    for name in names:
        s3.create_bucket(Bucket=name)
    return s3


def isolated_launcher(home, host_tmp) -> dict:
    """Every run in a process of its own that cannot see the host's instance storage or temp folder."""
    return {
        "module": "patronload_assets_tests.isolated_runs",
        "class": "IsolatedRunLauncher",
        "config": {"hidden": [str(home / "storage"), str(host_tmp)]},
    }


def production_instance(run_launcher: dict, moto_endpoint) -> dict:
    """deploy/aws/dagster.yaml as it ships, but for where runs start (``run_launcher`` here, an ECS
    task there) and the stand-in S3's address for the step logs."""
    instance = yaml.safe_load(DEPLOY_INSTANCE.read_text())
    instance["run_launcher"] = run_launcher
    instance["compute_logs"]["config"]["endpoint_url"] = moto_endpoint
    return instance


def ended(client, run_id: str, environment: dict, folder) -> str:
    """The run's end status, and on anything but success the errors its event log holds and the end
    of what the run processes printed."""
    status = wait_for(lambda: finished(client, run_id), 300, f"run {run_id}")
    if status == "SUCCESS":
        return status
    import dagster as dg

    with mock.patch.dict(os.environ, environment), dg.DagsterInstance.get() as instance:
        errors = [entry.user_message[:3000] for entry in instance.all_logs(run_id) if entry.level >= 40]
    printed = (folder / "dagster-dev.log").read_text(errors="replace")[-5000:]
    return f"{status}: {errors}\n{printed}"


def bucket_users(client, patron_type: str) -> list[str]:
    """Primary ids of the type's newest zip in Alma's bucket, parsed here."""
    keys = [item["Key"] for item in client.list_objects_v2(Bucket=ALMA_BUCKET)["Contents"]]
    [key] = [key for key in keys if key.startswith(f"alma/{patron_type}_")]
    data = client.get_object(Bucket=ALMA_BUCKET, Key=key)["Body"].read()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [
            user.findtext("primary_id")
            for name in archive.namelist()
            for user in etree.fromstring(archive.read(name))
        ]


def report_of(outbox, run_id) -> email.message.EmailMessage:
    [path] = sorted(outbox.glob(f"*{run_id}-success.eml"))
    return email.message_from_bytes(path.read_bytes(), policy=email.policy.default)


def attachments(message) -> dict[str, list[dict]]:
    return {
        part.get_filename(): list(csv.DictReader(io.StringIO(part.get_content())))
        for part in message.iter_attachments()
    }


def test_every_run_in_its_own_task_shares_only_postgresql_and_s3(
    isolated, postgres, moto_endpoint, tmp_path, request
):
    # The host's temp folder: short, as the sockets of multiprocessing's forkserver live in it and a
    # Unix socket's path holds at most 107 bytes (pytest-xdist's tmp_path can be longer).
    host_tmp = Path(tempfile.mkdtemp(prefix="pl-host-"))
    request.addfinalizer(lambda: shutil.rmtree(host_tmp, ignore_errors=True))
    launcher = isolated_launcher(tmp_path / "home", host_tmp)
    loads_in_the_production_shape(lambda _: launcher, postgres, moto_endpoint, tmp_path, TMPDIR=str(host_tmp))


def loads_in_the_production_shape(
    run_launcher: Callable[[list[str]], dict], postgres, moto_endpoint, tmp_path, **host_settings
):
    """Two loads and a change report, student_zip alone, the overdue report and Alma's verdict,
    every run started by ``run_launcher(names of the load's settings)``; then what the state bucket
    and PostgreSQL hold. The warehouse is the file ``warehouse/dw.sqlite3`` in ``tmp_path``, alone in
    its folder; ``host_settings`` reach dagster dev only."""
    home = tmp_path / "home"
    (tmp_path / "warehouse").mkdir()
    warehouse = synthetic.create_warehouse(tmp_path / "warehouse" / "dw.sqlite3", 400, 600)
    s3 = new_buckets(moto_endpoint, ALMA_BUCKET, STATE_BUCKET)

    def a_run_picks_up_the_files(standin: StandInAlma) -> None:
        listed = s3.list_objects_v2(Bucket=ALMA_BUCKET).get("Contents", [])
        if any(item["Key"].startswith("alma/student_") for item in listed) and "7001" not in standin.runs:
            standin.rejected = bucket_users(s3, "student")[:2]
            now = dt.datetime.now(dt.UTC)
            standin.add_run("7001", now, "COMPLETED_SUCCESS", end_time=alma_time(now),
                            counter=counters(created=5, updated=900, unchanged=3, rejected=2))  # fmt: skip
            standin.events["7001"] = [
                rejection(user, "Identifier already in use") for user in standin.rejected
            ]

    settings = {
        "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(postgres), "DAGSTER_PG_DB": DATABASE,
        "DAGSTER_PG_USERNAME": USER, "DAGSTER_PG_PASSWORD": PASSWORD,
        "S3_BUCKET_NAME": ALMA_BUCKET, "S3_PREFIX": "alma", "S3_ENDPOINT_URL": moto_endpoint,
        "STATE_BUCKET_NAME": STATE_BUCKET,
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        "ALMA_API_KEY": KEY, "ALMA_SIS_JOB_ID": JOB_ID, "ALMA_POLL_MINUTES": "0.1",
        # A deadline every minute, one minute late: with the schedule stopped, a missed one is reported.
        "LOAD_SCHEDULE": "* * * * *", "LOAD_DEADLINE_MINUTES": "1", "LOAD_TIMEZONE": "UTC",
        "LOCAL_WAREHOUSE_PATH": str(warehouse),
    }  # fmt: skip
    outbox = tmp_path / "outbox"
    with StandInAlma() as alma:
        alma.on_list = a_run_picks_up_the_files
        settings["ALMA_API_BASE_URL"] = alma.base_url
        instance = production_instance(run_launcher(sorted(settings)), moto_endpoint)
        dev_settings = {**settings, **host_settings, "PYTHONPATH": str(PROJECT_DIR)}
        with running_dagster_dev(tmp_path, instance, **dev_settings) as (client, environment):
            stopped = subprocess.run(
                [DAGSTER, "schedule", "stop", "daily_patronload", "-w", "workspace.yaml"],
                cwd=PROJECT_DIR, env=environment, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert stopped.returncode == 0, stopped.stderr[-2000:]

            # A first load, every run in a task of its own.
            first = launch(client)
            assert (status := ended(client, first, environment, tmp_path)) == "SUCCESS", status
            wait_for(lambda: sorted(outbox.glob(f"*{first}-success.eml")), 120, "the first report", 2)

            # The warehouse changes: seven new staff, 20 students with a new email address.
            changed = new_staff_and_moved_students(warehouse, set(bucket_users(s3, "student")))
            second = launch(client)
            assert (status := ended(client, second, environment, tmp_path)) == "SUCCESS", status
            report = wait_for(lambda: sorted(outbox.glob(f"*{second}-success.eml")), 120, "its report", 2)
            assert report
            attached = attachments(report_of(outbox, second))
            assert {row["primary_id"]: row["change"] for row in attached["staff_changes.csv"]} == {
                f"ZZNEW{number}@MIT.EDU": "new" for number in range(7)
            }
            assert {row["primary_id"]: row["groups"] for row in attached["student_changes.csv"]} == {
                f"{name.upper()}@MIT.EDU": "email" for name in changed
            }

            # student_zip alone: its inputs come from the state bucket, not from a disk it never had.
            alone = client.submit_job_execution(
                "patronload_job", repository_location_name="patronload_assets",
                repository_name="__repository__", asset_selection=["student_zip"],
            )  # fmt: skip
            assert (status := ended(client, alone, environment, tmp_path)) == "SUCCESS", status

            # The sensors in the code server still send the overdue report and Alma's verdict.
            wait_for(lambda: sorted(outbox.glob("*-overdue*.eml")), 180, "an overdue report", 2)
            [verdict] = wait_for(lambda: sorted(outbox.glob("alma-7001*.eml")), 200, "Alma's verdict", 2)
            message = email.message_from_bytes(verdict.read_bytes(), policy=email.policy.default)
            assert "users rejected: 2" in message.get_body(("plain",)).get_content()

    # Each run's step logs are in the state bucket, and so is everything the runs shared.
    state_keys = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=STATE_BUCKET)
        for item in page.get("Contents", [])
    ]
    for run_id in (first, second, alone):
        assert [key for key in state_keys if run_id in key and key.startswith("patronload/compute_logs/")]
    assert {"patronload/frames/staff_rows.arrow", "patronload/baselines/student.arrow"} <= set(state_keys)
    assert f"patronload/reports/{second}/student_changes.csv" in state_keys
    for key in state_keys:  # every object encrypted at rest, as requested by the writer
        assert s3.head_object(Bucket=STATE_BUCKET, Key=key).get("ServerSideEncryption") == "AES256", key
    # Nothing of the load stayed on the host's disk: it was never there.
    assert not (home / "storage" / "patronload").exists()

    # No patron value in PostgreSQL: run history, event logs, asset metadata, sensor cursors.
    dump = subprocess.run(
        [str(postgres_binaries() / "pg_dump"), "--data-only", "-h", "127.0.0.1", "-p", str(postgres),
         "-U", USER, DATABASE],
        env={**os.environ, "PGPASSWORD": PASSWORD, "PGSSLMODE": "require"},
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert first in dump and "student_zip" in dump  # the dump holds the runs
    values = patron_values(warehouse)
    assert len(values) > 100
    assert leaked(values, dump) == []


def test_postgresql_restarted_in_the_middle_of_a_load_ends_with_the_load_in_the_bucket(
    isolated, postgres, moto_endpoint, tmp_path, request
):
    """The instance's PostgreSQL stops while the zip steps run and is back 20 s later (a Multi-AZ
    failover takes 30 to 120 s; the test keeps it short): the load ends in success, by itself or
    through the deployment's retry, with one zip per type in Alma's bucket; each run gets one email,
    and a failure that was retried says so."""
    import psycopg2

    from .conftest import restart_postgres

    host_tmp, home = Path(tempfile.mkdtemp(prefix="pl-host-")), tmp_path / "home"
    request.addfinalizer(lambda: shutil.rmtree(host_tmp, ignore_errors=True))
    synthetic.create_warehouse(tmp_path / "dw.sqlite3", 20_000, 20_000)
    alma_bucket, state_bucket = "restart-alma-bucket", "restart-patronload-state"
    s3 = new_buckets(moto_endpoint, alma_bucket, state_bucket)
    connection = psycopg2.connect(
        host="127.0.0.1", port=postgres, user=USER, password=PASSWORD, dbname="postgres", sslmode="require"
    )
    connection.autocommit = True
    connection.cursor().execute("CREATE DATABASE restarted")  # a database of its own: no other test's runs
    connection.close()
    settings = {
        "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(postgres), "DAGSTER_PG_DB": "restarted",
        "DAGSTER_PG_USERNAME": USER, "DAGSTER_PG_PASSWORD": PASSWORD,
        "S3_BUCKET_NAME": alma_bucket, "S3_PREFIX": "alma", "S3_ENDPOINT_URL": moto_endpoint,
        "STATE_BUCKET_NAME": state_bucket, "LOAD_RETRY_MINUTES": "0.1",
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        "TMPDIR": str(host_tmp), "PYTHONPATH": str(PROJECT_DIR),
    }  # fmt: skip
    outbox = tmp_path / "outbox"
    instance = production_instance(isolated_launcher(home, host_tmp), moto_endpoint)
    instance["compute_logs"]["config"]["bucket"] = state_bucket
    with running_dagster_dev(tmp_path, instance, **settings) as (client, environment):
        run_id = launch(client)

        def zip_steps_running():
            listed = s3.list_objects_v2(Bucket=state_bucket, Prefix="patronload/frames/").get("Contents", [])
            return any(item["Key"].endswith("deduplicated_students.arrow") for item in listed)

        wait_for(zip_steps_running, 300, "the zip steps", 0.2)
        restart_postgres(postgres, 20)

        def a_success_email():
            return sorted(outbox.glob("*-success.eml"))

        [success] = wait_for(a_success_email, 600, "the load's success, by itself or by its retry", 2)
        time.sleep(15)  # more sensor ticks: nothing is sent twice
    emails = sorted(path.name for path in outbox.glob("*.eml"))
    text = email.message_from_bytes(success.read_bytes(), policy=email.policy.default)
    body = text.get_body(("plain",)).get_content()
    failures = [name for name in emails if name.endswith("-failure.eml")]
    if failures:  # the run failed for PostgreSQL, and the deployment's retry loaded
        assert "Succeeded on retry" in body and run_id in body, body[:2000]
        for name in failures:
            failed = email.message_from_bytes((outbox / name).read_bytes(), policy=email.policy.default)
            assert failed["Subject"].endswith("failed, retrying"), failed["Subject"]
    assert len(emails) == len(failures) + 1, emails  # one email per run
    keys = sorted(item["Key"] for item in s3.list_objects_v2(Bucket=alma_bucket)["Contents"])
    assert [key.split("/")[1].split("_")[0] for key in keys] == ["staff", "student"], keys
    print(f"PostgreSQL restart: {len(failures)} failed run(s) before the success; emails {emails}")


CONSORTIUM_ALMA_BUCKET, CONSORTIUM_STATE_BUCKET = "consortium-alma-bucket", "consortium-patronload-state"
MEMBERS = {"mit": synthetic, "example": example_synthetic}


@contextlib.contextmanager
def code_server(name: str, environment: dict[str, str], own: dict[str, str], folder: Path):
    """A code location of one institution from the same code (an ECS service of the same image, in
    production): its own settings, and the same ones in the container context its runs get."""
    port = free_port()
    context = json.dumps({"ecs": {"env_vars": [f"{key}={value}" for key, value in own.items()]}})
    log = open(folder / f"code-server-{name}.log", "wb")  # noqa: SIM115 (closed at teardown)
    process = subprocess.Popen(
        [DAGSTER, "api", "grpc", "-m", "patronload_assets", "-h", "127.0.0.1", "-p", str(port),
         "--location-name", f"patronload_{name}", "--container-context", context],
        cwd=PROJECT_DIR, env={**environment, **own}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip

    def listening():
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0 or (
                process.poll() is not None and pytest.fail((folder / f"code-server-{name}.log").read_text())
            )

    try:
        wait_for(listening, 120, f"the {name} code server", 0.5)
        yield {"grpc_server": {"host": "127.0.0.1", "port": port, "location_name": f"patronload_{name}"}}
    finally:
        stop_process_group(process)
        log.close()


@pytest.mark.deployment  # in make test-deployment: make test stays within its six minutes
def test_a_consortium_two_institutions_loading_at_once_each_in_its_own_prefix_with_its_own_report(
    isolated, postgres, moto_endpoint, tmp_path, request
):
    """Two institutions on one deployment (one PostgreSQL, one S3, one daemon), each a code location
    of its own: both loads launched at once run at the same time (a pool each), every run in a task
    of its own; each lands in its own prefix, under its own asset keys, with its own report, and
    neither reads or writes the other's state."""
    import dagster as dg
    import psycopg2

    host_tmp = Path(tempfile.mkdtemp(prefix="pl-host-"))
    request.addfinalizer(lambda: shutil.rmtree(host_tmp, ignore_errors=True))
    connection = psycopg2.connect(
        host="127.0.0.1", port=postgres, user=USER, password=PASSWORD, dbname="postgres", sslmode="require"
    )
    connection.autocommit = True
    connection.cursor().execute("CREATE DATABASE consortium")  # no other test's runs
    connection.close()
    s3 = new_buckets(moto_endpoint, CONSORTIUM_ALMA_BUCKET, CONSORTIUM_STATE_BUCKET)
    shared = {
        "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(postgres), "DAGSTER_PG_DB": "consortium",
        "DAGSTER_PG_USERNAME": USER, "DAGSTER_PG_PASSWORD": PASSWORD,
        "S3_BUCKET_NAME": CONSORTIUM_ALMA_BUCKET, "STATE_BUCKET_NAME": CONSORTIUM_STATE_BUCKET,
        "S3_ENDPOINT_URL": moto_endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "PYTHONPATH": str(PROJECT_DIR),
        "SENSOR_INTERVAL_SECONDS": "5", "LOCAL_OUTBOX_DIR": str(tmp_path / "outbox"),
    }  # fmt: skip
    own = {
        name: {
            "INSTITUTION": name,
            "CONSORTIUM": "true",
            "S3_PREFIX": name,
            "STATE_PREFIX": f"patronload/{name}/",
            "SES_RECIPIENT_EMAIL": f"library-systems@{name}.test",
            "LOCAL_WAREHOUSE_PATH": str(module.create_warehouse(tmp_path / name / "dw.sqlite3", 400, 600)),
        }  # fmt: skip
        for name, module in MEMBERS.items()
    }
    environment = embedded_environment(tmp_path / "servers", None, **shared)
    instance = production_instance(isolated_launcher(tmp_path / "home", host_tmp), moto_endpoint)
    instance["compute_logs"]["config"]["bucket"] = CONSORTIUM_STATE_BUCKET
    with contextlib.ExitStack() as servers:
        locations = [
            servers.enter_context(code_server(name, environment, own[name], tmp_path)) for name in own
        ]
        workspace = tmp_path / "workspace.yaml"
        workspace.write_text(yaml.safe_dump({"load_from": locations}))
        dev = running_dagster_dev(tmp_path, instance, workspace=workspace, TMPDIR=str(host_tmp), **shared)
        with dev as (client, dev_environment):
            # The pools as a deployment has them after its first load (a new instance creates a
            # pool's limit only as a run using it is dequeued: two first runs could both start).
            with mock.patch.dict(os.environ, dev_environment), dg.DagsterInstance.get() as dagster:
                for pool in ("patronload", "patronload_mit", "patronload_example"):
                    dagster.event_log_storage.set_concurrency_slots(pool, 1)
            runs = {
                name: client.submit_job_execution(
                    "patronload_job",
                    repository_location_name=f"patronload_{name}",
                    repository_name="__repository__",
                )  # fmt: skip
                for name in own
            }
            for run_id in runs.values():
                assert (status := ended(client, run_id, dev_environment, tmp_path)) == "SUCCESS", status
            outbox = tmp_path / "outbox"
            reports = {
                name: wait_for(
                    lambda r=run_id: sorted(outbox.glob(f"*{r}-success.eml")), 120, f"{name}'s report", 2
                )
                for name, run_id in runs.items()
            }
            time.sleep(12)  # two more sensor ticks: neither location reports the other's run
            with mock.patch.dict(os.environ, dev_environment), dg.DagsterInstance.get() as dagster:
                records = {name: dagster.get_run_record_by_id(run_id) for name, run_id in runs.items()}
                keys = {name: dagster.get_latest_materialization_event(dg.AssetKey([name, "staff_zip"]))
                        for name in own}  # fmt: skip
                unprefixed = dagster.get_latest_materialization_event(dg.AssetKey("staff_zip"))

    # At the same time: each run began before the other ended (one pool each, not one for all).
    mit, example = records["mit"], records["example"]
    assert mit.start_time < example.end_time and example.start_time < mit.end_time
    assert all(keys.values()) and unprefixed is None  # mit/staff_zip and example/staff_zip
    # Each in its own prefix, its own users.
    alma_keys = [item["Key"] for item in s3.list_objects_v2(Bucket=CONSORTIUM_ALMA_BUCKET)["Contents"]]
    assert sorted(key.split("_")[0] for key in alma_keys) == [
        "example/staff",
        "example/student",
        "mit/staff",
        "mit/student",
    ]
    for key in alma_keys:
        data = s3.get_object(Bucket=CONSORTIUM_ALMA_BUCKET, Key=key)["Body"].read()
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            ids = [user.findtext("primary_id") for name in archive.namelist()
                   for user in etree.fromstring(archive.read(name))]  # fmt: skip
        assert ids and all(
            primary_id.endswith("@MIT.EDU") if key.startswith("mit/") else primary_id.isdigit()
            for primary_id in ids
        ), key
    # Each its own report, once, to its own recipients, naming its own keys only.
    every_report = sorted(path.name for path in (tmp_path / "outbox").glob("*.eml"))
    assert len(every_report) == 2, every_report
    for name, [path] in reports.items():
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        body = message.get_body(("plain",)).get_content()
        other = "example" if name == "mit" else "mit"
        assert message["To"] == f"library-systems@{name}.test"
        assert f"{name}/staff_" in body and f"{other}/staff_" not in body
    # Each its own state: every object a load left is under its institution's state prefix.
    state_keys = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=CONSORTIUM_STATE_BUCKET)
        for item in page.get("Contents", [])
        if not item["Key"].startswith("patronload/compute_logs/")
    ]
    for name in own:
        mine = [key for key in state_keys if key.startswith(f"patronload/{name}/")]
        assert {
            f"patronload/{name}/baselines/staff.arrow",
            f"patronload/{name}/frames/{name}__staff_rows.arrow",
        } <= set(mine)
    assert all(key.startswith(("patronload/mit/", "patronload/example/")) for key in state_keys), state_keys
