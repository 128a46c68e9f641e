import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from lxml import etree

PROJECT_DIR = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def users_schema() -> etree.XMLSchema:
    """The project's schema of the <users> documents it sends."""
    from patronload_assets.domain.checks import PROJECT_XSD

    return etree.XMLSchema(etree.parse(str(PROJECT_XSD)))


def assert_valid_users(schema: etree.XMLSchema, xml: bytes) -> etree._Element:
    """The whole document parsed and validated at once: a path independent of the schema check's."""
    document = etree.fromstring(xml)
    if not schema.validate(document):
        errors = "\n".join(str(error) for error in list(schema.error_log)[:10])
        raise AssertionError(f"not valid against the project's users schema:\n{errors}")
    return document


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint():
    """moto's AWS server on a local port: boto3 talks to it over real HTTP."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws_environment(monkeypatch):
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return os.environ


def staff_row(**values):
    """A cleaned staff row: Jane Doe, JDOE, everything else missing unless given."""
    from patronload_assets.domain.values import clean_row
    from patronload_assets.institutions.mit import rules

    row = dict.fromkeys(rules.STAFF_COLUMNS)
    row.update(KRB_NAME_UPPERCASE="JDOE", LEGAL_FIRST_NAME="Jane", LEGAL_LAST_NAME="Doe")
    row.update(values)
    return clean_row(row)


def student_row(**values):
    """A cleaned student row: Jo Stu, JSTU, everything else missing unless given."""
    from patronload_assets.domain.values import clean_row
    from patronload_assets.institutions.mit import rules

    row = dict.fromkeys(rules.STUDENT_COLUMNS)
    row.update(KRB_NAME_UPPERCASE="JSTU", LEGAL_FIRST_NAME="Jo", LEGAL_LAST_NAME="Stu")
    row.update(values)
    return clean_row(row)


def state_resources(state=None, institution: str = "mit") -> dict:
    """The state store (default: the run's instance's storage folder) and the frames' IO manager
    over it, as the code location has them."""
    from patronload_assets.state.store import FrameIOManager, InstanceState

    state = state or InstanceState()
    return {"state": state, "io_manager": FrameIOManager(state=state, institution=institution)}


def instance_state(instance):
    """The state store of ``instance``, to read what its runs left (outside a run)."""
    from patronload_assets.state.store import InstanceState

    return InstanceState(base_dir=instance.storage_directory())


def load(warehouse_path, bucket_dir, instance=None, run_config=None, **institution):
    """The whole lineage in process, on a SQLite warehouse and a local bucket (prefix ``alma``)."""
    import dagster as dg

    from patronload_assets.load import assets
    from patronload_assets.resources.bucket import LocalBucket
    from patronload_assets.resources.institution import InstitutionData
    from patronload_assets.resources.warehouse import SqliteWarehouse

    return dg.materialize(
        dg.load_assets_from_modules([assets]),
        instance=instance,
        resources={
            "warehouse": SqliteWarehouse(path=str(warehouse_path)),
            "bucket": LocalBucket(directory=str(bucket_dir), prefix="alma"),
            "institution": InstitutionData(**institution),
            **state_resources(institution=institution.get("name", "mit")),
        },
        run_config=run_config,
        raise_on_error=False,
    )


PERSONAL_COLUMNS = {
    "staff": ("EMAIL_ADDRESS", "PREFERRED_FIRST_NAME", "PREFERRED_LAST_NAME", "LEGAL_FIRST_NAME",
              "LEGAL_LAST_NAME", "OFFICE_ADDRESS", "OFFICE_PHONE"),
    "student": ("EMAIL_ADDRESS", "LEGAL_FIRST_NAME", "LEGAL_LAST_NAME", "TERM_STREET1", "TERM_STREET2",
                "TERM_CITY", "TERM_ZIP", "TERM_PHONE1", "TERM_PHONE2", "OFFICE_PHONE"),
}  # fmt: skip


def patron_values(warehouse) -> set[str]:
    """The names, emails, phones and addresses of a warehouse's patrons (five characters or more:
    a state or a short name matches ordinary words)."""
    import sqlite3

    from patronload_assets.institutions.mit import RULES, rules

    found = set()
    with sqlite3.connect(warehouse) as connection:
        for view, columns in PERSONAL_COLUMNS.items():
            names = rules.STAFF_COLUMNS if view == "staff" else rules.STUDENT_COLUMNS
            for row in connection.execute(RULES.query(view)):
                for column in columns:
                    value = (row[names.index(column)] or "").strip()
                    if len(value) >= 5:
                        found.add(value)
    return found


def leaked(values: set[str], text: str) -> list[str]:
    """The values found whole in ``text``: a ZIP code such as 02121 also occurs inside a float
    timestamp (1764515186.02121) or a random temporary folder name, which is no leak."""
    import re

    def whole(value):
        return rf"(?<![0-9A-Za-z.]){re.escape(value)}(?![0-9A-Za-z])"

    return sorted(value for value in values if re.search(whole(value), text))


# -- a throwaway PostgreSQL server, as RDS has it (SSL on) ------------------------------------------
USER, PASSWORD, DATABASE = "dagster", "Pg-Recognisable-5150", "dagster"


def postgres_binaries() -> Path | None:
    initdb = shutil.which("initdb") or next(
        iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[-1:]), None
    )
    return Path(initdb).resolve().parent if initdb else None


def as_server_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the package's postgres user."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


POSTGRES_SERVERS: dict[int, list[str]] = {}  # port -> pg_ctl and its arguments, to stop and start it


def restart_postgres(port: int, down_seconds: float) -> None:
    """Stop the test's PostgreSQL server (connections refused), and start it again ``down_seconds``
    later: an RDS Multi-AZ failover, as the instance sees it."""
    import time

    pg_ctl = POSTGRES_SERVERS[port]
    subprocess.run(as_server_user([*pg_ctl[:3], "-m", "fast", "-w", "stop"]), check=True, capture_output=True)
    time.sleep(down_seconds)
    subprocess.run(as_server_user([*pg_ctl, "-w", "start"]), check=True, capture_output=True)


@pytest.fixture(scope="module")
def postgres():
    binaries = postgres_binaries()
    if binaries is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL's binaries are missing: .ci/run installs the postgresql package")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql); CI installs it")
    # Not under pytest's own temporary folder: that one is its owner's only, and the server may run
    # as another user.
    folder = Path(tempfile.mkdtemp(prefix="patronload-postgres-"))
    data, socket_dir = folder / "data", folder / "socket"
    socket_dir.mkdir()
    (folder / "password").write_text(PASSWORD)
    key, certificate = folder / "server.key", folder / "server.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "1",
         "-keyout", str(key), "-out", str(certificate)],
        check=True, capture_output=True,
    )  # fmt: skip
    key.chmod(0o600)
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        for path in folder.iterdir():
            shutil.chown(path, "postgres")
    initdb = [str(binaries / "initdb"), "-D", str(data), "-U", USER, f"--pwfile={folder / 'password'}",
              "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8"]  # fmt: skip
    subprocess.run(as_server_user(initdb), check=True, capture_output=True)
    port = free_port()
    options = (
        f"-p {port} -k {socket_dir} -c listen_addresses=127.0.0.1 -c ssl=on "
        f"-c ssl_cert_file={certificate} -c ssl_key_file={key}"
    )
    started = subprocess.run(
        as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"),
                        "-w", "start"]),
        capture_output=True, text=True,
    )  # fmt: skip
    if started.returncode != 0:
        pytest.fail(f"PostgreSQL did not start: {started.stderr}\n{(folder / 'log').read_text()[-2000:]}")
    pg_ctl = [str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log")]
    POSTGRES_SERVERS[port] = pg_ctl
    try:
        import psycopg2

        connection = psycopg2.connect(
            host="127.0.0.1", port=port, user=USER, password=PASSWORD, dbname="postgres", sslmode="require"
        )
        connection.autocommit = True  # CREATE DATABASE runs outside a transaction
        connection.cursor().execute(f"CREATE DATABASE {DATABASE}")
        connection.close()
        yield port
    finally:
        subprocess.run(as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]))
        shutil.rmtree(folder, ignore_errors=True)


# -- order: the longest tests first ---------------------------------------------------------------

# Tests that wait minutes on a daemon (sensor ticks, schedules): started first, each on a worker of
# its own, while the other workers take the short tests (make test runs pytest-xdist).
LONGEST_FIRST = (
    "test_postgresql_restarted_in_the_middle_of_a_load_ends_with_the_load_in_the_bucket",
    "test_a_missed_deadline_sends_one_overdue_email_and_a_load_in_time_none",
    "test_a_load_that_failed_while_the_bucket_was_down_is_retried_by_the_deployment_once_it_is_back",
    "test_every_run_in_its_own_task_shares_only_postgresql_and_s3",
    "test_launch_from_the_ui_path_reports_success_then_failure",
    "test_under_dagster_dev_a_load_is_followed_by_alma_s_verdict",
)


def pytest_collection_modifyitems(items):
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.originalname, len(rank)))  # stable: the rest keep their order


def isolation_possible() -> bool:
    """Root, and a private mount namespace (isolated_runs.py: runs that cannot see the host's folders)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "mount", "-t", "tmpfs", "probe", "/mnt"],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.fixture
def isolated():
    if not isolation_possible():
        if os.environ.get("CI"):
            pytest.fail("a private mount namespace is needed (root and unshare --mount): CI runs as root")
        pytest.skip("needs root and unshare --mount for runs that cannot see the host's folders")
