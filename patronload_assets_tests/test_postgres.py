"""The production instance's storage (deploy/aws/dagster.yaml) on a real PostgreSQL server: a
throwaway one, started from the Debian `postgresql` package's binaries with SSL on, as RDS has it."""

import dagster as dg
import pytest
import yaml

from patronload_assets.institutions.mit import synthetic

from .conftest import DATABASE, PASSWORD, PROJECT_DIR, USER, load

pytestmark = pytest.mark.slow  # a daemon, a server or a whole install

DEPLOY_INSTANCE = PROJECT_DIR / "deploy" / "aws" / "dagster.yaml"


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
