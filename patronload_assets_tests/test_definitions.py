"""The code location: loadable, scheduled, resources chosen by the settings present."""

import datetime as dt

import dagster as dg
import pytest
from dagster._utils.schedules import schedule_execution_time_iterator

from patronload_assets import defs, settings
from patronload_assets.load.schedules import daily_patronload
from patronload_assets.load.timing import DEFAULT_CRON as DAILY_CRON
from patronload_assets.load.timing import DEFAULT_TIMEZONE as TIMEZONE
from patronload_assets.resources.bucket import LocalBucket, S3Bucket
from patronload_assets.resources.warehouse import OracleWarehouse, SqliteWarehouse

PRODUCTION = {
    "DATA_WAREHOUSE_USER": "loader",
    "DATA_WAREHOUSE_PASSWORD": "s3cret-Pa55word",
    "DATA_WAREHOUSE_HOST": "dw.example.edu",
    "DATA_WAREHOUSE_PORT": "1521",
    "DATA_WAREHOUSE_SID": "DWPROD",
    "S3_BUCKET_NAME": "alma-bucket",
    "S3_PREFIX": "alma",
    "STATE_BUCKET_NAME": "patronload-state",
    "SES_RECIPIENT_EMAIL": "a@example.edu,b@example.edu",
    "SES_SEND_FROM_EMAIL": "noreply@example.edu",
}


def test_definitions_are_loadable():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == {
        "staff_rows", "student_rows", "deduplicated_students", "staff_zip", "student_zip",
    }  # fmt: skip
    assert {key.to_user_string() for key in graph.get(dg.AssetKey("staff_zip")).parent_keys} == {"staff_rows"}
    # The students' zip reads the staff rows' identifier columns: a staff identifier is not theirs.
    assert {key.to_user_string() for key in graph.get(dg.AssetKey("student_zip")).parent_keys} == {
        "deduplicated_students", "staff_rows",
    }  # fmt: skip
    assert {key.to_user_string() for key in graph.get(dg.AssetKey("deduplicated_students")).parent_keys} == {
        "staff_rows", "student_rows",
    }  # fmt: skip
    job = defs.resolve_job_def("patronload_job")
    assert len(job.asset_layer.selected_asset_keys) == 5


def test_schedule_runs_daily_at_five_new_york_time_by_default():
    assert daily_patronload.default_status == dg.DefaultScheduleStatus.RUNNING
    assert (daily_patronload.cron_schedule, daily_patronload.execution_timezone) == (DAILY_CRON, TIMEZONE)
    context = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2026, 11, 28, 12, tzinfo=dt.UTC))
    assert daily_patronload.evaluate_tick(context).run_requests
    # The iterator the daemon itself uses to find the next tick.
    ticks = schedule_execution_time_iterator(
        dt.datetime(2026, 11, 28, 12, tzinfo=dt.UTC).timestamp(), daily_patronload.cron_schedule, TIMEZONE
    )
    first, second = next(ticks), next(ticks)
    assert first.isoformat() == "2026-11-29T05:00:00-05:00"
    assert second.isoformat() == "2026-11-30T05:00:00-05:00"
    assert defs.resolve_schedule_def("daily_patronload").job_name == "patronload_job"


def test_nothing_configured_means_the_embedded_defaults():
    resources = settings.resources({})
    assert isinstance(resources["warehouse"], SqliteWarehouse)
    assert isinstance(resources["bucket"], LocalBucket)


def test_production_settings_select_oracle_and_s3_through_env_vars():
    resources = settings.resources(PRODUCTION)
    assert isinstance(resources["warehouse"], OracleWarehouse)
    assert isinstance(resources["bucket"], S3Bucket)
    # The resource holds the variable's name, never its value.
    assert "s3cret-Pa55word" not in repr(resources["warehouse"])
    assert resources["warehouse"].password == dg.EnvVar("DATA_WAREHOUSE_PASSWORD")


def test_cloudconnector_json_selects_oracle():
    warehouse = settings.warehouse_resource({"DATAWAREHOUSE_CLOUDCONNECTOR_JSON": "{}"})
    assert isinstance(warehouse, OracleWarehouse)
    assert warehouse.connector_json == dg.EnvVar("DATAWAREHOUSE_CLOUDCONNECTOR_JSON")


@pytest.mark.parametrize("workspace", ["prod", "stage", "PROD"])
def test_production_workspace_refuses_to_load_without_every_setting(workspace):
    with pytest.raises(settings.ConfigurationError) as raised:
        settings.resources({"WORKSPACE": workspace, "S3_BUCKET_NAME": "x"})
    message = str(raised.value)
    for name in ("DATA_WAREHOUSE_USER", "DATA_WAREHOUSE_PASSWORD", "DATA_WAREHOUSE_HOST", "S3_PREFIX",
                 "SES_RECIPIENT_EMAIL", "SES_SEND_FROM_EMAIL", "DATA_WAREHOUSE_SID",
                 "STATE_BUCKET_NAME"):  # fmt: skip
        assert name in message
    assert "S3_BUCKET_NAME" not in message
    assert settings.resources({**PRODUCTION, "WORKSPACE": workspace})


def test_oracle_connector_json_is_read_at_connect_time():
    warehouse = OracleWarehouse(
        connector_json='{"USER": "u", "PASSWORD": "p", "HOST": "h", "PORT": 1522, "PATH": "SID1"}'
    )
    assert warehouse._settings() == {
        "user": "u", "password": "p", "host": "h", "port": "1522", "sid": "SID1", "service_name": None,
    }  # fmt: skip
