"""What it ships, run as it ships: the image (Dockerfile) built and loading as its own non-root
user; every run of the production shape a container of that image, started by dagster-docker's
DockerRunLauncher (the local stand-in for EcsRunLauncher) over podman's Docker-compatible API.
`make test-deployment` (one test at a time: they share the image), not `make test`."""

import contextlib
import io
import json
import os
import shutil
import string
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

import dagster as dg
import pytest
from lxml import etree

from patronload_assets.institutions.mit import synthetic

from .conftest import PROJECT_DIR, free_port, load

pytestmark = [pytest.mark.slow, pytest.mark.deployment]

IMAGE = "localhost/patronload:test"
IMAGE_HOME = "/opt/dagster/app"  # the image's working folder, its user's own


def engine_environment() -> dict[str, str]:
    """The environment for podman: the project's containers.conf where runc is installed, as
    deploy/image/engine.sh sets it for make image."""
    environment = dict(os.environ)
    if "CONTAINERS_CONF" not in environment and shutil.which("runc"):
        environment["CONTAINERS_CONF"] = str(PROJECT_DIR / "deploy" / "image" / "containers.conf")
    return environment


def podman(*arguments: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        ["podman", *arguments], env=engine_environment(), capture_output=True, text=True, timeout=timeout
    )
    if check and done.returncode != 0:
        pytest.fail(f"podman {' '.join(arguments[:3])} ...: {done.stderr[-3000:]}")
    return done


@pytest.fixture(scope="module")
def image():
    """The image, built by make image's script (its layers cached between runs)."""
    if not shutil.which("podman"):
        if os.environ.get("CI"):
            pytest.fail("podman is needed for the deployment tests: .ci/run installs it")
        pytest.skip("needs podman (apt-get install podman runc mmdebstrap)")
    started = time.monotonic()
    built = subprocess.run(
        ["sh", str(PROJECT_DIR / "deploy" / "image" / "build.sh")],
        env={**engine_environment(), "IMAGE": IMAGE, "CONTAINER_ENGINE": "podman"},
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    size = podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout.strip()
    print(f"image {IMAGE}: {int(size) / 1e6:.0f} MB, built in {time.monotonic() - started:.0f} s")
    return IMAGE


def users_in(folder: Path) -> dict[str, list[str]]:
    """Primary ids by patron type, parsed from the zips in ``folder``."""
    found = {}
    for path in sorted(folder.rglob("*.zip")):
        with zipfile.ZipFile(path) as archive:
            found[path.name.split("_")[0]] = [
                user.findtext("primary_id")
                for name in archive.namelist()
                for user in etree.parse(io.BytesIO(archive.read(name))).getroot()
            ]
    return found


def test_the_image_loads_the_embedded_warehouse_as_its_own_non_root_user(image, tmp_path):
    """No network, no volume: `dagster definitions validate`, then a whole load of the embedded
    warehouse, inside a container as the image's user; its zips hold the users a load on the host
    writes from the same warehouse."""
    script = (
        "set -e; id -u; export DAGSTER_HOME=$PWD/home; mkdir -p $DAGSTER_HOME; "
        "dagster definitions validate -m patronload_assets; "
        "dagster asset materialize -m patronload_assets --select '*' > load.log 2>&1 || "
        "{ tail -c 3000 load.log; exit 1; }; "
        "python -m patronload_assets.reports.summary"
    )
    name = f"patronload-embedded-{os.getpid()}"
    podman("create", "--name", name, "--network", "none", image, "sh", "-c", script)
    try:
        ran = podman("start", "--attach", name, timeout=900, check=False)
        assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
        assert ran.stdout.splitlines()[0] == "10001", ran.stdout[:200]  # the Dockerfile's user, not root
        podman("cp", f"{name}:{IMAGE_HOME}/.local/bucket", str(tmp_path / "container"))
        podman("cp", f"{name}:{IMAGE_HOME}/.local/warehouse.sqlite3", str(tmp_path / "warehouse.sqlite3"))
    finally:
        podman("rm", "--force", name, check=False)
    in_container = users_in(tmp_path / "container")
    assert sorted(in_container) == ["staff", "student"]

    # The same warehouse loaded on the host, by the code of this checkout.
    with dg.instance_for_test() as instance:
        assert load(tmp_path / "warehouse.sqlite3", tmp_path / "host", instance).success
    on_host = users_in(tmp_path / "host")
    assert len(in_container["staff"]) > 1000 and len(in_container["student"]) > 1000
    assert in_container == on_host
    assert "staff_zip:" in ran.stdout and "student_zip:" in ran.stdout


def test_every_run_a_container_of_the_image(image, podman_api, postgres, moto_endpoint, tmp_path, request):
    """The production-shape loads with dagster-docker's DockerRunLauncher: each run a container of
    the image on the host's network (PostgreSQL, the stand-in S3), with the settings the launcher
    passes and no folder of the host but the embedded warehouse's, read-only (the file that stands
    in for Oracle, which a task reaches over the network)."""
    from .test_production_shape import loads_in_the_production_shape

    def docker_launcher(setting_names: list[str]) -> dict:
        passed = [name for name in setting_names if name != "LOCAL_WAREHOUSE_PATH"]
        return {
            "module": "dagster_docker",
            "class": "DockerRunLauncher",
            "config": {
                "image": image,
                "network": "host",
                "env_vars": [*passed, "LOCAL_WAREHOUSE_PATH=/warehouse/dw.sqlite3"],
                "container_kwargs": {
                    "volumes": {str(tmp_path / "warehouse"): {"bind": "/warehouse", "mode": "ro"}},
                },
            },
        }

    host_tmp = Path(tempfile.mkdtemp(prefix="pl-host-"))
    request.addfinalizer(lambda: shutil.rmtree(host_tmp, ignore_errors=True))
    started = time.monotonic()
    loads_in_the_production_shape(
        docker_launcher, postgres, moto_endpoint, tmp_path, TMPDIR=str(host_tmp), DOCKER_HOST=podman_api
    )
    print(f"production shape, every run a container: {time.monotonic() - started:.0f} s")
    runs = podman(
        "ps", "--all", "--filter", "label=dagster/run_id", "--format", '{{index .Labels "dagster/run_id"}}'
    ).stdout.split()
    assert len(runs) >= 3, runs  # the three runs were containers of the image
    podman("rm", "--force", *runs, check=False)  # the launcher leaves them, as ECS leaves stopped tasks


@pytest.fixture
def podman_api(tmp_path):
    """podman's Docker-compatible API on a socket of the test's own."""
    socket = Path(tempfile.mkdtemp(prefix="pl-podman-")) / "podman.sock"
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{socket}"],
        env=engine_environment(), stdout=subprocess.DEVNULL, stderr=open(tmp_path / "podman.log", "wb"),  # noqa: SIM115
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not socket.exists():
            assert service.poll() is None and time.monotonic() < deadline, (
                tmp_path / "podman.log"
            ).read_text()
            time.sleep(0.2)
        yield f"unix://{socket}"
    finally:
        service.terminate()
        service.wait(timeout=30)
        shutil.rmtree(socket.parent, ignore_errors=True)


IAM_FOLDER = PROJECT_DIR / "deploy" / "aws" / "iam"


# What moto's IAM asks for in place of the action AWS authorizes (moto names most S3 calls by their
# operation). DeleteObjects moto checks on the bucket, AWS as DeleteObject on each key: it goes on
# the bucket-level statement.
MOTO_ACTIONS = {
    "s3:ListBucket": ["s3:ListObjectsV2"],
    "s3:ListBucketMultipartUploads": ["s3:ListMultipartUploads", "s3:DeleteObjects"],
    "s3:GetObject": ["s3:HeadObject"],
    "s3:PutObject": ["s3:CreateMultipartUpload", "s3:UploadPart", "s3:CompleteMultipartUpload"],
}


def run_task_policy(**values: str) -> str:
    """deploy/aws/iam/run-task-policy.json with the deployment's values, relaxed where moto's IAM
    differs from AWS's, and only there: moto's names for the same calls beside AWS's (MOTO_ACTIONS);
    ``*`` for the resource of the SES statement (moto checks SES actions only against
    ``Resource: "*"``); no ``s3:prefix`` condition on a listing (moto passes no condition keys, so
    any condition fails). Every resource ARN of S3 stays as shipped."""
    template = string.Template((IAM_FOLDER / "run-task-policy.json").read_text())
    document = json.loads(template.substitute(values))
    for statement in document["Statement"]:
        actions = _listed(statement["Action"])
        if all(action.startswith("ses:") for action in actions):
            statement["Resource"] = "*"
        statement.pop("Condition", None)
        aliases = [alias for action in actions for alias in MOTO_ACTIONS.get(action, [])]
        statement["Action"] = [*actions, *aliases]
    return json.dumps(document)


def _listed(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


@pytest.fixture
def enforcing_moto(tmp_path):
    """A moto server of the test's own, whose IAM checks start when the test says (reset-auth)."""
    port = free_port()
    log = open(tmp_path / "moto.log", "wb")  # noqa: SIM115 (closed at teardown)
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, (
                    tmp_path / "moto.log"
                ).read_text()
                time.sleep(0.2)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_a_load_with_only_the_run_task_policy_succeeds_and_nothing_outside_its_prefixes(
    isolated, postgres, enforcing_moto, tmp_path, request
):
    """deploy/aws/iam/run-task-policy.json, on an S3 and SES that enforce it: a whole load in the
    production shape with the keys of a user holding only that policy; the same keys denied a
    write outside S3_PREFIX and STATE_PREFIX and any read of another bucket."""
    import boto3
    import psycopg2
    from botocore.exceptions import ClientError

    from .conftest import DATABASE, PASSWORD, USER
    from .test_daemon import finished, launch, running_dagster_dev, wait_for
    from .test_production_shape import isolated_launcher, production_instance

    alma_bucket, state_bucket, other_bucket = "iam-alma", "iam-state", "iam-other-bucket"
    sender = "patronload@example.edu"

    def client(service: str, keys: dict):
        return boto3.client(
            service, endpoint_url=enforcing_moto, region_name="us-east-1",
            aws_access_key_id=keys["AccessKeyId"], aws_secret_access_key=keys["SecretAccessKey"],
        )  # fmt: skip

    root = {"AccessKeyId": "testing", "SecretAccessKey": "testing"}  # before IAM is enforced
    for name in (alma_bucket, state_bucket, other_bucket):
        client("s3", root).create_bucket(Bucket=name)
    client("s3", root).put_object(Bucket=other_bucket, Key="alma/secret.txt", Body=b"not the load's")
    client("ses", root).verify_email_identity(EmailAddress=sender)
    iam = client("iam", root)
    keys = {}
    for user, policy in (
        ("patronload-task", run_task_policy(
            AlmaBucket=alma_bucket, AlmaPrefix="alma", StateBucket=state_bucket, StatePrefix="patronload",
            Region="us-east-1", Account="123456789012", SenderIdentity=sender,
        )),
        ("test-admin", json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"}]})),
    ):  # fmt: skip
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName=user, PolicyDocument=policy)
        keys[user] = iam.create_access_key(UserName=user)["AccessKey"]
    request_auth = urllib.request.Request(  # from now on, every call is checked (a form body is not read)
        f"{enforcing_moto}/moto-api/reset-auth", data=b"0", headers={"Content-Type": "text/plain"}
    )
    urllib.request.urlopen(request_auth, timeout=10).close()
    task_s3, admin_s3 = client("s3", keys["patronload-task"]), client("s3", keys["test-admin"])

    # Enforced: keys moto's IAM does not know are refused, so the checks below can fail.
    with pytest.raises(ClientError) as refused:
        client("s3", root).list_objects_v2(Bucket=alma_bucket)
    assert refused.value.response["Error"]["Code"] == "InvalidAccessKeyId"

    connection = psycopg2.connect(
        host="127.0.0.1", port=postgres, user=USER, password=PASSWORD, dbname="postgres", sslmode="require"
    )
    connection.autocommit = True
    connection.cursor().execute("CREATE DATABASE iam")  # a database of its own: no other test's runs
    connection.close()
    assert DATABASE != "iam"
    host_tmp = Path(tempfile.mkdtemp(prefix="pl-host-"))
    request.addfinalizer(lambda: shutil.rmtree(host_tmp, ignore_errors=True))
    synthetic.create_warehouse(tmp_path / "dw.sqlite3", 500, 700)
    settings = {
        "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(postgres), "DAGSTER_PG_DB": "iam",
        "DAGSTER_PG_USERNAME": USER, "DAGSTER_PG_PASSWORD": PASSWORD,
        "S3_BUCKET_NAME": alma_bucket, "S3_PREFIX": "alma", "S3_ENDPOINT_URL": enforcing_moto,
        "STATE_BUCKET_NAME": state_bucket,
        "SES_SEND_FROM_EMAIL": sender, "SES_RECIPIENT_EMAIL": "library-systems@example.edu",
        "SES_ENDPOINT_URL": enforcing_moto, "SES_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": keys["patronload-task"]["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": keys["patronload-task"]["SecretAccessKey"],
        "AWS_DEFAULT_REGION": "us-east-1",
        "TMPDIR": str(host_tmp), "PYTHONPATH": str(PROJECT_DIR),
    }  # fmt: skip
    instance = production_instance(isolated_launcher(tmp_path / "home", host_tmp), enforcing_moto)
    instance["compute_logs"]["config"]["bucket"] = state_bucket
    with running_dagster_dev(tmp_path, instance, **settings) as (graphql, _):
        run_id = launch(graphql)
        assert wait_for(lambda: finished(graphql, run_id), 300, "the load") == "SUCCESS"

        def sent() -> int:
            statistics = client("ses", keys["test-admin"]).get_send_statistics()["SendDataPoints"]
            return sum(point["DeliveryAttempts"] for point in statistics)

        assert wait_for(sent, 120, "the report, sent through SES", 2) >= 1
    zips = [item["Key"] for item in admin_s3.list_objects_v2(Bucket=alma_bucket)["Contents"]]
    assert sorted(key.split("_")[0] for key in zips) == ["alma/staff", "alma/student"], zips
    state_keys = [item["Key"] for item in admin_s3.list_objects_v2(Bucket=state_bucket)["Contents"]]
    assert any(key.startswith("patronload/compute_logs/") and run_id in key for key in state_keys), (
        state_keys[:20]
    )
    assert "AccessDenied" not in (tmp_path / "dagster-dev.log").read_text(errors="replace")

    # The same keys, outside what the policy grants: each refused.
    denied = {
        "write outside S3_PREFIX": lambda: task_s3.put_object(
            Bucket=alma_bucket, Key="elsewhere.zip", Body=b"x"
        ),
        "write outside STATE_PREFIX": lambda: task_s3.put_object(
            Bucket=state_bucket, Key="other/x", Body=b"x"
        ),
        "read of another bucket": lambda: task_s3.get_object(Bucket=other_bucket, Key="alma/secret.txt"),
        "listing of another bucket": lambda: task_s3.list_objects_v2(Bucket=other_bucket, Prefix="alma/"),
        "deletion of another bucket's object": lambda: task_s3.delete_object(
            Bucket=other_bucket, Key="alma/secret.txt"
        ),
    }
    for what, call in denied.items():
        with pytest.raises(ClientError) as error:
            call()
        assert error.value.response["Error"]["Code"] == "AccessDenied", what
    task_s3.put_object(Bucket=alma_bucket, Key="alma/probe.txt", Body=b"x")  # and within it, allowed
    assert admin_s3.get_object(Bucket=other_bucket, Key="alma/secret.txt")["Body"].read() == b"not the load's"


@contextlib.contextmanager
def running_webserver(folder: Path, environment: dict, *flags: str):
    """``dagster-webserver`` on the project's workspace; its GraphQL client."""
    from dagster_graphql import DagsterGraphQLClient

    from .test_daemon import stop_process_group, wait_for

    port = free_port()
    log = open(folder / f"webserver-{port}.log", "wb")  # noqa: SIM115 (closed at teardown)
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-webserver"), "-w", "workspace.yaml",
         "-h", "127.0.0.1", "-p", str(port), *flags],
        cwd=PROJECT_DIR, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as response:
                return response.status == 200
        except OSError:
            assert process.poll() is None, (folder / f"webserver-{port}.log").read_text()[-3000:]
            return False

    try:
        wait_for(up, 120, "the webserver")
        yield DagsterGraphQLClient("127.0.0.1", port_number=port)
    finally:
        stop_process_group(process)
        log.close()


def test_the_read_only_webserver_refuses_a_launch_of_patronload_now(tmp_path):
    """deploy/aws/webserver-read-only-container.json's command: the same instance and code location
    as the single-sign-on webserver, with --read-only. patronload_now (which creates Alma accounts
    with send: true) is refused there, and accepted by the webserver without the flag; the
    read-only one still shows the runs."""
    from dagster_graphql import DagsterGraphQLClientError

    from .environment import embedded_environment

    command = json.loads((PROJECT_DIR / "deploy" / "aws" / "webserver-read-only-container.json").read_text())
    flags = [flag for flag in command["command"] if flag == "--read-only"]
    assert flags == ["--read-only"], command["command"]
    environment = embedded_environment(
        tmp_path, tmp_path / "home",
        ALMA_API_KEY="not-a-key", ALMA_SIS_JOB_ID="1", ALMA_API_BASE_URL="http://127.0.0.1:9",
    )  # fmt: skip
    launch = {
        "job_name": "patronload_now",
        "repository_location_name": "patronload_assets",
        "repository_name": "__repository__",
        "run_config": {"ops": {"patronload_now": {"config": {"people": ["SOMEONE"], "send": True}}}},
    }
    with (
        running_webserver(tmp_path, environment, *flags) as read_only,
        running_webserver(tmp_path, environment) as signed_on,
    ):
        with pytest.raises(DagsterGraphQLClientError) as refused:
            read_only.submit_job_execution(**launch)
        assert "Unauthorized" in str(refused.value), refused.value
        accepted = signed_on.submit_job_execution(**launch)  # queued: no daemon here starts it
        assert read_only.get_run_status(accepted).value in ("QUEUED", "STARTING", "STARTED", "FAILURE")
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        assert [run.run_id for run in instance.get_runs()] == [accepted]  # nothing from the read-only one
