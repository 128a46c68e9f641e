"""Production readiness: instance configuration, the connection test, secrets and patron data."""

import importlib
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config

from patronload_assets import defs
from patronload_assets.institutions.mit import synthetic
from patronload_assets.load import assets
from patronload_assets.resources.bucket import LocalBucket
from patronload_assets.resources.institution import InstitutionData
from patronload_assets.resources.warehouse import SqliteWarehouse

from .conftest import PROJECT_DIR, free_port, leaked, patron_values, state_resources
from .environment import embedded_environment

DAGSTER = Path(sys.executable).parent / "dagster"
INSTANCE_FILES = [PROJECT_DIR / "dagster.yaml", *sorted((PROJECT_DIR / "deploy").glob("*/dagster.yaml"))]
PASSWORD = "Recognisable-Pa55word-4711"


@pytest.mark.parametrize("path", INSTANCE_FILES, ids=lambda path: str(path.relative_to(PROJECT_DIR)))
def test_instance_configuration_is_valid(path, monkeypatch):
    for name in ("DAGSTER_HOME", "DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_DB", "DAGSTER_PG_USERNAME",
                 "DAGSTER_PG_PASSWORD", "STATE_BUCKET_NAME"):  # fmt: skip
        monkeypatch.setenv(name, "5432" if name.endswith("PORT") else "value")
    config, _ = dagster_instance_config(str(path.parent), path.name)  # raises on an invalid file
    for role in ("run_launcher", "run_coordinator", "compute_logs"):
        if role in config:
            configured = getattr(importlib.import_module(config[role]["module"]), config[role]["class"])
            result = process_config(configured.config_type(), config[role].get("config") or {})
            assert result.success, result.errors
    if "postgres" in config.get("storage", {}):
        from dagster_postgres import DagsterPostgresStorage

        result = process_config(DagsterPostgresStorage.config_type(), config["storage"]["postgres"])
        assert result.success, result.errors
    assert config["telemetry"]["enabled"] is False
    assert config["concurrency"]["pools"] == {"granularity": "run", "default_limit": 1}


def test_every_patronload_asset_is_in_the_one_run_pool():
    for definition in dg.load_assets_from_modules([assets]):
        for spec in definition.specs:
            assert definition.get_op_def_for_asset_key(spec.key).pool == assets.POOL


def test_connection_test_job_logs_the_version(tmp_path):
    warehouse = synthetic.create_warehouse(tmp_path / "dw.sqlite3", 10, 10)
    job = defs.resolve_job_def("warehouse_connection_test")
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(
            instance=instance, resources={"warehouse": SqliteWarehouse(path=str(warehouse))}
        )
        assert result.success
        messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any(
        m.startswith("Successfully connected to the embedded SQLite warehouse version: 3.") for m in messages
    )
    assert not result.asset_materializations_for_node("connect_to_warehouse")


@pytest.mark.slow
def test_a_failed_connection_leaves_no_trace_of_the_password(tmp_path):
    home = tmp_path / "home"
    environment = embedded_environment(
        tmp_path,
        home,
        DATA_WAREHOUSE_USER="loader",
        DATA_WAREHOUSE_PASSWORD=PASSWORD,
        DATA_WAREHOUSE_HOST="127.0.0.1",
        DATA_WAREHOUSE_PORT=str(free_port()),  # nothing listens there
        DATA_WAREHOUSE_SID="DWPROD",
    )
    completed = subprocess.run(
        [DAGSTER, "job", "execute", "-m", "patronload_assets", "-j", "warehouse_connection_test"],
        cwd=PROJECT_DIR, env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode != 0
    assert "DPY-" in completed.stdout + completed.stderr  # python-oracledb's own error, e.g. DPY-6005
    assert PASSWORD not in completed.stdout + completed.stderr
    files = [path for path in home.rglob("*") if path.is_file()]
    assert any(path.suffix == ".db" for path in files)  # the run was recorded...
    for path in files:
        assert PASSWORD.encode() not in path.read_bytes(), path  # ...without the password


def test_a_demo_runs_event_log_holds_no_patron_data(tmp_path):
    warehouse = synthetic.create_warehouse(tmp_path / "dw.sqlite3", 300, 300)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            dg.load_assets_from_modules([assets]),
            instance=instance,
            resources={
                "warehouse": SqliteWarehouse(path=str(warehouse)),
                "bucket": LocalBucket(directory=str(tmp_path / "bucket")),
                "institution": InstitutionData(),
                **state_resources(),
            },
        )
        assert result.success
        event_log = "\n".join(
            f"{entry.user_message}\n{entry.dagster_event!r}" for entry in instance.all_logs(result.run_id)
        )
    found = patron_values(warehouse)
    assert len(found) > 100
    assert leaked(found, event_log) == []


def test_the_product_uses_dagsters_public_api_only():
    """``dagster._`` modules change without notice between releases. One use is left, named here:
    timing.py's cron iterator, as Dagster has no public one and the overdue report must see the
    schedule's times (daylight saving included) as the daemon does."""
    import re

    private = sorted(
        str(path.relative_to(PROJECT_DIR))
        for path in (PROJECT_DIR / "patronload_assets").rglob("*.py")
        if re.search(r"\b(from|import) dagster\._", path.read_text(encoding="utf-8"))
    )
    assert private == ["patronload_assets/load/timing.py"]
