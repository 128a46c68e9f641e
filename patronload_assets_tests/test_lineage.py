"""The whole lineage: a SQLite warehouse, an S3 bucket served by moto over real HTTP."""

import json
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import boto3
import dagster as dg
import pytest
from dagster_aws.s3 import S3Resource

from patronload_assets.institutions.mit import RULES as MIT
from patronload_assets.institutions.mit import synthetic
from patronload_assets.load import assets
from patronload_assets.resources.bucket import LocalBucket, S3Bucket
from patronload_assets.resources.institution import InstitutionData
from patronload_assets.resources.warehouse import SqliteWarehouse
from patronload_assets.state import frames
from patronload_assets.state.store import InstanceState

from .conftest import FIXTURES, PROJECT_DIR, assert_valid_users, state_resources
from .environment import MATERIALIZE_ALL, embedded_environment

ALL_ASSETS = dg.load_assets_from_modules([assets])


@pytest.fixture(scope="module")
def warehouse_path(tmp_path_factory):
    return synthetic.create_warehouse(tmp_path_factory.mktemp("warehouse") / "dw.sqlite3", 600, 900)


@pytest.fixture
def s3(moto_endpoint, aws_environment, request):
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    name = f"alma-{request.node.name.replace('_', '-')[:40].lower()}"
    client.create_bucket(Bucket=name)
    return client, name


def s3_bucket(moto_endpoint, name, cls=S3Bucket):
    return cls(bucket=name, prefix="alma", s3=S3Resource(endpoint_url=moto_endpoint, region_name="us-east-1"))


def materialize(warehouse_path, bucket, raise_on_error=True):
    return dg.materialize(
        ALL_ASSETS,
        resources={
            "warehouse": SqliteWarehouse(path=str(warehouse_path)),
            "bucket": bucket,
            "institution": InstitutionData(),
            **state_resources(),
        },
        raise_on_error=raise_on_error,
    )


def keys(client, name):
    return sorted(item["Key"] for item in client.list_objects_v2(Bucket=name).get("Contents", []))


def users_in(client, name, key, tmp_path):
    path = tmp_path / Path(key).name
    client.download_file(name, key, str(path))
    with zipfile.ZipFile(path) as archive:
        [xml_name] = archive.namelist()
        assert xml_name == Path(key).name.replace(".zip", ".xml")
        return archive.read(xml_name)


def test_whole_lineage_into_s3(warehouse_path, s3, moto_endpoint, users_schema, tmp_path):
    client, name = s3
    result = materialize(warehouse_path, s3_bucket(moto_endpoint, name))
    assert result.success
    stored = keys(client, name)
    assert [key.split("_")[0] for key in stored] == ["alma/staff", "alma/student"]

    primary_ids = {}
    for patron_type in ("staff", "student"):
        [key] = [key for key in stored if key.startswith(f"alma/{patron_type}_")]
        head = client.head_object(Bucket=name, Key=key)
        assert head["ServerSideEncryption"] == "AES256"
        document = assert_valid_users(users_schema, users_in(client, name, key, tmp_path))
        primary_ids[patron_type] = [user.findtext("primary_id").upper() for user in document]
        metadata = result.asset_materializations_for_node(f"{patron_type}_zip")[0].metadata
        assert metadata["keys"].value == [key]
        assert metadata["patrons"].value == len(document)
        assert metadata["zip_bytes"].value == head["ContentLength"]
        assert all(
            code in ("10999999", "10888888", "ZZZ", "99X")
            for code in metadata["unknown_department_codes"].value
        )

    # One record per person across both files: student employees load once, as staff.
    everyone = primary_ids["staff"] + primary_ids["student"]
    assert len(everyone) == len(set(everyone))

    staff_rows = result.output_for_node("staff_rows")
    staff_metadata = result.asset_materializations_for_node("staff_zip")[0].metadata
    left_out = (
        staff_metadata["rejected_missing_kerberos_name"].value
        + staff_metadata["dropped_duplicate_staff"].value
    )
    assert len(primary_ids["staff"]) + left_out == len(staff_rows)
    students = result.asset_materializations_for_node("deduplicated_students")[0].metadata
    assert students["dropped_student_already_staff"].value > 0
    assert students["rows"].value == len(primary_ids["student"])


def test_rows_are_text_exactly_as_stored(warehouse_path, tmp_path):
    result = materialize(warehouse_path, LocalBucket(directory=str(tmp_path)))
    frame = result.output_for_node("staff_rows")
    assert all(str(dtype) == "string[pyarrow]" for dtype in frame.dtypes)  # compact, not Python objects
    values = {value for name in frame.columns for value in frames.column(frame, name)}
    assert all(value is None or isinstance(value, str) for value in values)
    assert any(value == "" for value in values)  # empty stays empty for the domain to judge


def test_new_zip_replaces_stale_ones_and_leaves_processed_ones(warehouse_path, s3, moto_endpoint):
    client, name = s3
    old = {
        "alma/staff_2020-01-01_05.00.00.zip": b"old staff",
        "alma/staff_2019-12-31_05.00.00.zip.processed": b"processed by Alma",
        "alma/student_2020-01-01_05.00.00.zip": b"old student",
        "alma/readme.txt": b"not ours",
    }
    for key, body in old.items():
        client.put_object(Bucket=name, Key=key, Body=body)
    assert materialize(warehouse_path, s3_bucket(moto_endpoint, name)).success
    stored = keys(client, name)
    assert "alma/staff_2020-01-01_05.00.00.zip" not in stored
    assert "alma/student_2020-01-01_05.00.00.zip" not in stored
    assert {"alma/staff_2019-12-31_05.00.00.zip.processed", "alma/readme.txt"} <= set(stored)
    assert len([key for key in stored if key.endswith(".zip")]) == 2


class UploadFailsForStaff(S3Bucket):
    """The real bucket, but the staff upload is cut off as a network failure would."""

    def upload(self, path, key):
        if "/staff_" in key:
            raise ConnectionError("connection reset while uploading")
        super().upload(path, key)


def test_failed_upload_leaves_the_previous_zip_in_place(warehouse_path, s3, moto_endpoint):
    client, name = s3
    client.put_object(Bucket=name, Key="alma/staff_2020-01-01_05.00.00.zip", Body=b"yesterday's staff")
    result = materialize(
        warehouse_path, s3_bucket(moto_endpoint, name, UploadFailsForStaff), raise_on_error=False
    )
    assert not result.success
    [failure] = [event for event in result.all_events if event.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "staff_zip"
    assert "connection reset" in str(failure.step_failure_data.error)
    body = client.get_object(Bucket=name, Key="alma/staff_2020-01-01_05.00.00.zip")["Body"].read()
    assert body == b"yesterday's staff"
    assert [key for key in keys(client, name) if "/staff_" in key] == ["alma/staff_2020-01-01_05.00.00.zip"]


def test_department_table_conflict_fails_the_run_naming_the_codes(warehouse_path, tmp_path):
    result = dg.materialize(
        ALL_ASSETS,
        resources={
            "warehouse": SqliteWarehouse(path=str(warehouse_path)),
            "bucket": LocalBucket(directory=str(tmp_path)),
            "institution": InstitutionData(
                staff_departments_path=str(FIXTURES / "staff_departments_conflicting.json")
            ),
            **state_resources(),
        },
        raise_on_error=False,
    )
    assert not result.success
    errors = [str(event.step_failure_data.error) for event in result.all_events if event.is_step_failure]
    assert any("10004533" in error for error in errors)
    assert not list(tmp_path.rglob("staff_*.zip"))


@pytest.mark.slow
def test_command_line_materialize_with_settings(tmp_path):
    """What operators and the daily check run: `dagster asset materialize`, settings in the environment."""
    environment = embedded_environment(
        tmp_path,
        tmp_path / "home",
        S3_PREFIX="incoming/alma",
        STUDENT_DEPARTMENTS_PATH=str(FIXTURES / "student_departments_with_none.json"),
    )
    completed = subprocess.run(
        [Path(sys.executable).parent / MATERIALIZE_ALL[0], *MATERIALIZE_ALL[1:]],
        cwd=PROJECT_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    zips = sorted((tmp_path / "bucket" / "incoming" / "alma").glob("*.zip"))
    assert [path.name.split("_")[0] for path in zips] == ["staff", "student"]
    assert (tmp_path / "dw.sqlite3").exists()
    with zipfile.ZipFile(zips[1]) as archive:
        students = archive.read(archive.namelist()[0])
    # Course 6 is "UH" in the table given by path, another category in the shipped one.
    assert json.loads((FIXTURES / "student_departments_with_none.json").read_text())["6"] == "UH"
    shipped = PROJECT_DIR / "patronload_assets" / "institutions" / "mit" / "student_departments.json"
    assert json.loads(shipped.read_text())["6"] != "UH"
    assert b">UH</statistic_category>" in students


def test_frames_between_assets_are_arrow_files_readable_by_their_owner_only(warehouse_path, tmp_path):
    storage = tmp_path / "storage"
    result = dg.materialize(
        ALL_ASSETS,
        resources={
            "warehouse": SqliteWarehouse(path=str(warehouse_path)),
            "bucket": LocalBucket(directory=str(tmp_path / "bucket")),
            "institution": InstitutionData(),
            **state_resources(InstanceState(base_dir=str(storage))),
        },
    )
    assert result.success
    root = storage / "patronload"
    assert oct(root.stat().st_mode & 0o777) == "0o700"
    folder = root / "frames"
    stored = sorted(path.name for path in folder.iterdir())
    assert stored == ["deduplicated_students.arrow", "staff_rows.arrow", "student_rows.arrow"]
    for path in folder.iterdir():
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        assert path.read_bytes()[:6] == b"ARROW1"
    with sqlite3.connect(warehouse_path) as connection:
        expected = [row[0] for row in connection.execute(MIT.query("staff"))]
    assert frames.column(result.output_for_node("staff_rows"), "MIT_ID") == expected


def test_uploads_use_the_kms_key_when_one_is_set(s3, moto_endpoint, tmp_path):
    client, name = s3
    key_id = boto3.client("kms", endpoint_url=moto_endpoint, region_name="us-east-1").create_key()[
        "KeyMetadata"
    ]["KeyId"]
    bucket = S3Bucket(
        bucket=name,
        prefix="alma",
        kms_key_id=key_id,
        s3=S3Resource(endpoint_url=moto_endpoint, region_name="us-east-1"),
    )
    path = tmp_path / "staff_2026-01-01_05.00.00.zip"
    path.write_bytes(b"PK\x05\x06" + b"\x00" * 18)
    bucket.upload(path, "alma/staff_2026-01-01_05.00.00.zip")
    head = client.head_object(Bucket=name, Key="alma/staff_2026-01-01_05.00.00.zip")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"].endswith(key_id)


def test_records_of_kept_positions_across_batches():
    rows = [(str(index), None if index % 3 else "") for index in range(45_000)]  # three Arrow batches
    frame = frames.frame_from_batches(["A", "B"], [rows[:25_000], rows[25_000:]], repairs=None)
    keep = list(range(0, 45_000, 7))
    assert [record["A"] for record in frames.records(frame, keep=keep)] == [str(p) for p in keep]
    assert [record["B"] for record in frames.records(frame, keep=[0, 1])] == ["", None]
    assert sum(1 for _ in frames.records(frame)) == 45_000
