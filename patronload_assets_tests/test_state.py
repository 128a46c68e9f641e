"""The state store: one interface over the instance's folder and the state bucket (moto's S3 server
over HTTP), so that a run whose task has a disk of its own finds what earlier runs left."""

import datetime as dt
import os

import boto3
import dagster as dg
import pandas as pd
import pyarrow as pa
import pytest
from dagster_aws.s3 import S3Resource

from patronload_assets.domain import changes
from patronload_assets.institutions.mit import synthetic
from patronload_assets.load import assets
from patronload_assets.resources.bucket import S3Bucket
from patronload_assets.resources.institution import InstitutionData
from patronload_assets.resources.warehouse import SqliteWarehouse
from patronload_assets.state.store import BucketState, InstanceState

from .conftest import state_resources

STATE_BUCKET, ALMA_BUCKET = "patronload-state", "alma-bucket"


@pytest.fixture
def s3(moto_endpoint, aws_environment):
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    for name in (STATE_BUCKET, ALMA_BUCKET):
        client.create_bucket(Bucket=name)
    yield client
    for name in (STATE_BUCKET, ALMA_BUCKET):
        listed = client.list_objects_v2(Bucket=name).get("Contents", [])
        if listed:
            client.delete_objects(Bucket=name, Delete={"Objects": [{"Key": item["Key"]} for item in listed]})
        client.delete_bucket(Bucket=name)


def bucket_state(moto_endpoint, **fields) -> BucketState:
    s3 = S3Resource(endpoint_url=moto_endpoint, region_name="us-east-1")
    return BucketState(bucket=S3Bucket(bucket=STATE_BUCKET, prefix="patronload/", s3=s3, **fields))


@pytest.fixture(params=["instance folder", "state bucket"])
def store(request, tmp_path):
    if request.param == "instance folder":
        return InstanceState(base_dir=str(tmp_path / "storage"))
    request.getfixturevalue("s3")
    return bucket_state(request.getfixturevalue("moto_endpoint"))


def test_frames_round_trip_and_read_only_the_columns_asked(store):
    frame = pd.DataFrame({"A": ["1", None, "3"], "B": ["x", "y", "z"]}).astype(pd.ArrowDtype(pa.string()))
    assert store.write_frame("staff_rows", frame) > 0
    assert store.read_frame("staff_rows").equals(frame)
    only = store.read_frame("staff_rows", ["B"])
    assert list(only.columns) == ["B"] and only["B"].tolist() == ["x", "y", "z"]
    with pytest.raises(FileNotFoundError, match="no frame student_rows"):
        store.read_frame("student_rows")


def test_report_files_are_read_back_by_run_and_expire_after_the_retention(store):
    store.write_report_file("run-1", "staff_changes.csv", ("primary_id", "change"), [("A@MIT.EDU", "new")])
    store.write_report_file("run-12", "staff_changes.csv", ("primary_id", "change"), [("B@MIT.EDU", "new")])
    assert store.read_report_files("run-1") == {"staff_changes.csv": "primary_id,change\nA@MIT.EDU,new\n"}
    assert store.read_report_files("run-2") == {}
    now = dt.datetime.now(dt.UTC)
    assert store.remove_expired_reports(now + dt.timedelta(days=29)) == []
    assert store.read_report_files("run-1")
    expired = store.remove_expired_reports(now + dt.timedelta(days=31))
    assert expired == ["reports/run-1/staff_changes.csv", "reports/run-12/staff_changes.csv"]
    assert store.read_report_files("run-1") == store.read_report_files("run-12") == {}


def test_a_baseline_round_trips_with_its_count(store):
    assert store.read_baseline("staff") is None
    fingerprints = changes.Fingerprints()
    for number in range(5):
        fingerprints.add(f"<primary_id>u{number}@mit.edu</primary_id>".encode(), range(len(changes.GROUPS)))
    moment = dt.datetime(2026, 12, 1, 5, tzinfo=dt.UTC)
    store.write_baseline("staff", changes.Baseline(fingerprints, moment, ["alma/staff_x.zip"]))
    baseline = store.read_baseline("staff")
    assert (len(baseline.fingerprints), baseline.load_time, baseline.keys) == (
        5,
        moment,
        ["alma/staff_x.zip"],
    )
    assert baseline.fingerprints.primary_ids[0] == "u0@mit.edu"  # as sent


def test_the_instance_folder_is_its_owners_only(tmp_path):
    store = InstanceState(base_dir=str(tmp_path))
    store.write_report_file("run-1", "x.csv", ("a",), [("1",)])
    assert oct(os.stat(tmp_path / "patronload").st_mode & 0o777) == "0o700"
    assert oct(os.stat(tmp_path / "patronload" / "reports" / "run-1" / "x.csv").st_mode & 0o777) == "0o600"


def test_every_state_object_is_requested_encrypted(s3, moto_endpoint):
    kms = boto3.client("kms", endpoint_url=moto_endpoint, region_name="us-east-1")
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    for store, expected in ((bucket_state(moto_endpoint), "AES256"),
                            (bucket_state(moto_endpoint, kms_key_id=key_id), "aws:kms")):  # fmt: skip
        store.write_report_file(f"run-{expected}", "x.csv", ("a",), [("1",)])
        head = s3.head_object(Bucket=STATE_BUCKET, Key=f"patronload/reports/run-{expected}/x.csv")
        assert head["ServerSideEncryption"] == expected


def test_student_zip_alone_on_another_instance_reads_its_inputs_from_the_state_bucket(
    s3, moto_endpoint, tmp_path
):
    """What a task of its own sees: a new instance (no disk in common) and the state bucket."""
    from patronload_assets.resources.bucket import S3Bucket as AlmaBucket

    warehouse = synthetic.create_warehouse(tmp_path / "dw.sqlite3", 100, 150)
    alma = AlmaBucket(
        bucket=ALMA_BUCKET, prefix="alma", s3=S3Resource(endpoint_url=moto_endpoint, region_name="us-east-1")
    )

    def materialize(selection):
        with dg.instance_for_test() as instance:  # each run its own instance: nothing shared on disk
            return dg.materialize(
                dg.load_assets_from_modules([assets]),
                instance=instance,
                selection=selection,
                resources={
                    "warehouse": SqliteWarehouse(path=str(warehouse)),
                    "bucket": alma,
                    "institution": InstitutionData(),
                    **state_resources(bucket_state(moto_endpoint)),
                },
                raise_on_error=False,
            )

    assert materialize("*").success
    alone = materialize("student_zip")
    assert alone.success
    [materialization] = alone.asset_materializations_for_node("student_zip")
    assert materialization.metadata["previous_load"].value.startswith("the last load")
    assert materialization.metadata["patrons_unchanged"].value == materialization.metadata["patrons"].value
