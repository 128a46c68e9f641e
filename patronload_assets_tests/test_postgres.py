"""The production instance's storage (deploy/aws/dagster.yaml) on a real PostgreSQL server: a
throwaway one, started from the Debian `postgresql` package's binaries with SSL on, as RDS has it."""

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import dagster as dg
import pytest
import yaml

from patronload_assets.domain import synthetic

from .conftest import PROJECT_DIR, free_port, load

DEPLOY_INSTANCE = PROJECT_DIR / "deploy" / "aws" / "dagster.yaml"
USER, PASSWORD, DATABASE = "dagster", "Pg-Recognisable-5150", "dagster"


def postgres_binaries() -> Path | None:
    initdb = shutil.which("initdb") or next(
        iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[-1:]), None
    )
    return Path(initdb).resolve().parent if initdb else None


def as_server_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the package's postgres user."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


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


def test_the_deploy_files_storage_runs_the_load_on_postgresql(postgres, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    deploy = yaml.safe_load(DEPLOY_INSTANCE.read_text())
    (home / "dagster.yaml").write_text(yaml.safe_dump({"storage": deploy["storage"]}))
    for name, value in {
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": str(postgres),
        "DAGSTER_PG_DB": DATABASE,
        "DAGSTER_PG_USERNAME": USER,
        "DAGSTER_PG_PASSWORD": PASSWORD,
    }.items():
        monkeypatch.setenv(name, value)
    warehouse = synthetic.create_warehouse(tmp_path / "dw.sqlite3", 200, 300)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        result = load(warehouse, tmp_path / "bucket", instance)
        assert result.success
        [record] = instance.get_run_records()
        assert record.dagster_run.run_id == result.run_id
        assert instance.get_latest_materialization_event(dg.AssetKey("staff_zip")) is not None

    import psycopg2

    with psycopg2.connect(
        host="127.0.0.1", port=postgres, user=USER, password=PASSWORD, dbname=DATABASE, sslmode="require"
    ) as connection:
        cursor = connection.cursor()
        cursor.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert cursor.fetchone() == (True,)
        cursor.execute("SELECT count(*) FROM runs")
        assert cursor.fetchone() == (1,)
        cursor.execute("SELECT count(*) FROM event_logs WHERE event LIKE %s", (f"%{PASSWORD}%",))
        assert cursor.fetchone() == (0,)  # the password is in no event
    connection.close()
