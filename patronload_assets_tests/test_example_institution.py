"""The example institution (patronload_assets/institutions/example/rules.md): rules that differ from
MIT's where real institutions differ, through the same engine with no change to it."""

import datetime as dt
import sqlite3
import zipfile

import dagster as dg
import pytest
from lxml import etree

from patronload_assets import institutions, settings
from patronload_assets.configuration import ConfigurationError
from patronload_assets.domain.institution import RunContext
from patronload_assets.institutions.example import RULES as EXAMPLE
from patronload_assets.institutions.example import rules, synthetic

from .conftest import load

RUN_DATE = dt.date(2026, 12, 5)


def staff(**values):
    return {**dict.fromkeys(rules.STAFF_COLUMNS), "CAMPUS_ID": "10000001", **values}


def student(**values):
    return {**dict.fromkeys(rules.STUDENT_COLUMNS), "CAMPUS_ID": "10000002", **values}


@pytest.mark.parametrize(
    ("end", "expiry", "purge"),
    [("2027-06-30", "2027-06-30Z", "2028-06-30Z"), (None, "2028-10-31Z", "2029-10-31Z"),
     ("30/06/2027", "2028-10-31Z", "2029-10-31Z"), ("2026-01-31", "2026-01-31Z", "2027-01-31Z")],
)  # fmt: skip
def test_an_employee_expires_at_the_appointment_end_or_october_31_two_years_out(end, expiry, purge):
    context = RunContext(RUN_DATE, {}, {})
    fields = rules.staff_fields(staff(APPOINTMENT_END_DATE=end), context)
    assert (fields["expiry_date"], fields["purge_date"]) == (expiry, purge)
    assert context.counts[rules.DATE_UNREADABLE] == (end == "30/06/2027")


@pytest.mark.parametrize(
    ("run_date", "withdrawal", "cancellation", "expiry"),
    [(RUN_DATE, "2027-01-15", None, "2027-01-15Z"), (RUN_DATE, "2027-02-01", "2027-01-20", "2027-01-20Z"),
     (RUN_DATE, None, None, "2027-05-31Z"), (dt.date(2027, 5, 10), None, None, "2027-08-31Z"),
     (dt.date(2027, 7, 15), None, None, "2027-08-31Z"), (dt.date(2027, 8, 15), None, None, "2027-12-31Z")],
)  # fmt: skip
def test_a_student_expires_when_leaving_or_at_the_next_term_end(run_date, withdrawal, cancellation, expiry):
    fields = rules.student_fields(
        student(WITHDRAWAL_DATE=withdrawal, CANCELLATION_DATE=cancellation), RunContext(run_date, {}, {})
    )
    assert fields["expiry_date"] == expiry
    assert fields["purge_date"] == f"{int(expiry[:4]) + 1}{expiry[4:]}"


def test_user_groups_follow_the_employee_type_and_the_career():
    context = RunContext(RUN_DATE, {}, {})
    assert rules.staff_fields(staff(EMPLOYEE_TYPE="FACULTY"), context)["user_group"] == "FACULTY"
    assert rules.staff_fields(staff(EMPLOYEE_TYPE="CONTRACTOR"), context)["user_group"] == "STAFF"
    assert rules.student_fields(student(CAREER="LAW"), context)["user_group"] == "GRAD"
    assert rules.student_fields(student(CAREER="VISITING"), context)["user_group"] is None


def test_an_unknown_institution_fails_naming_the_known_ones():
    with pytest.raises(ConfigurationError, match="known: example, mit"):
        institutions.load("nowhere")
    assert institutions.load("EXAMPLE ") is EXAMPLE


def test_another_institution_keeps_its_embedded_defaults_and_state_apart(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mit, example = {}, {"INSTITUTION": "example"}
    assert settings.local_setting(mit, "LOCAL_BUCKET_DIR") == str(tmp_path / ".local" / "bucket")
    assert settings.local_setting(example, "LOCAL_BUCKET_DIR") == str(
        tmp_path / ".local" / "example" / "bucket"
    )
    assert settings.state_resource(example).folder == "example" and settings.state_resource(mit).folder == ""
    shared = {"STATE_BUCKET_NAME": "state"}
    assert settings.state_resource({**shared, **example}).bucket.prefix == "patronload/example"
    assert settings.state_resource(shared).bucket.prefix == "patronload/"


def users(bucket, patron_type):
    [path] = bucket.glob(f"{patron_type}_*.zip")
    run_date = dt.datetime.strptime(path.stem.split("_", 1)[1], "%Y-%m-%d_%H.%M.%S").date()
    with zipfile.ZipFile(path) as archive:
        return run_date, [
            user for name in archive.namelist() for user in etree.fromstring(archive.read(name))
        ]


def first_rows(warehouse, view):
    """The first row of each campus id, read here with SQL of the test's own."""
    found = {}
    with sqlite3.connect(warehouse) as connection:
        connection.row_factory = sqlite3.Row
        for row in connection.execute(f"SELECT * FROM {view} ORDER BY CAMPUS_ID"):
            if row["CAMPUS_ID"] and row["CAMPUS_ID"].strip():
                found.setdefault(row["CAMPUS_ID"].strip(), dict(row))
    return found


def a_year_after(day):
    """The same day a year later; February 29 becomes February 28."""
    return day.replace(year=day.year + 1, day=min(day.day, 28 if (day.month, day.day) == (2, 29) else 31))


def iso(text):
    try:
        return dt.date.fromisoformat((text or "")[:10])
    except ValueError:
        return None


def test_the_example_loads_its_embedded_warehouse_and_every_user_has_the_dates_its_rules_say(
    tmp_path, monkeypatch
):
    """As ``INSTITUTION=example make run`` does (the command line itself: test_cli.py), in process:
    the settings' resources, the embedded defaults in the working folder's .local/example."""
    from patronload_assets.load import assets

    monkeypatch.chdir(tmp_path)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            dg.load_assets_from_modules([assets]),
            instance=instance,
            resources=settings.resources({"INSTITUTION": "example"}),
        )
    assert result.success
    tmp_path = tmp_path / ".local" / "example"  # where the example's embedded defaults are
    warehouse = tmp_path / "warehouse.sqlite3"
    staff_rows = first_rows(warehouse, synthetic.STAFF_VIEW)
    student_rows = first_rows(warehouse, synthetic.STUDENT_VIEW)

    run_date, staff_users = users(tmp_path / "bucket", "staff")
    ids = [user.findtext("primary_id") for user in staff_users]
    assert sorted(ids) == sorted(set(staff_rows) - EXAMPLE.excluded)
    for user in staff_users:
        row = staff_rows[user.findtext("primary_id")]
        expiry = iso(row["APPOINTMENT_END_DATE"]) or dt.date(run_date.year + 2, 10, 31)
        assert user.findtext("expiry_date") == f"{expiry}Z"
        assert user.findtext("purge_date") == f"{a_year_after(expiry)}Z"
        barcode = user.find("user_identifiers/user_identifier[id_type='BARCODE']")
        assert barcode is None or barcode.get("segment_type") == "Internal"

    run_date, student_users = users(tmp_path / "bucket", "student")
    ids = [user.findtext("primary_id") for user in student_users]
    assert sorted(ids) == sorted(set(student_rows) - set(staff_rows) - EXAMPLE.excluded)  # employees as staff
    term_ends = [dt.date(year, month, day) for year in (run_date.year, run_date.year + 1)
                 for month, day in ((5, 31), (8, 31), (12, 31))]  # fmt: skip
    for user in student_users:
        row = student_rows[user.findtext("primary_id")]
        left = [day for day in (iso(row["WITHDRAWAL_DATE"]), iso(row["CANCELLATION_DATE"])) if day]
        expiry = min(left) if left else min(day for day in term_ends if (day - run_date).days >= 30)
        assert user.findtext("expiry_date") == f"{expiry}Z"
        assert user.findtext("purge_date") == f"{a_year_after(expiry)}Z"
    withdrawn = [row for row in student_rows.values() if row["WITHDRAWAL_DATE"]]
    assert withdrawn and len(staff_users) > 1000 and len(student_users) > 1000


def test_an_institution_in_a_package_of_its_own_registers_by_entry_point(tmp_path, monkeypatch):
    """A third institution, kept outside this repository: a package and an entry point, no change
    to the engine. Here it borrows the example's rules under its own name and exclusion list."""
    package = tmp_path / "campus_rules"
    package.mkdir()
    (package / "__init__.py").write_text(
        "import dataclasses\n"
        "from patronload_assets.institutions.example import RULES as EXAMPLE\n"
        "RULES = dataclasses.replace(\n"
        "    EXAMPLE, name='campus', title='Campus', excluded=frozenset({'10000003'})\n"
        ")\n"
    )
    info = tmp_path / "campus_rules-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: campus-rules\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[patronload.institutions]\ncampus = campus_rules\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    rules_of_campus = institutions.load("campus")
    assert rules_of_campus.name == "campus" and "campus" in institutions.registered()
    warehouse = synthetic.create_warehouse(tmp_path / "dw.sqlite3", 50, 50)
    with dg.instance_for_test() as instance:
        result = load(warehouse, tmp_path / "bucket", instance, name="campus")
    assert result.success
    _, staff_users = users(tmp_path / "bucket" / "alma", "staff")
    ids = {user.findtext("primary_id") for user in staff_users}
    assert "10000004" in ids and "10000003" not in ids  # its own exclusion list applies


def test_the_changes_the_preview_and_patronload_now_work_for_the_example(tmp_path):
    """The engine's other parts, unchanged, on the example's campus ids: what changed since the last
    load, the dry run, and the same-day job."""
    from patronload_assets.alma.api import AlmaUsers
    from patronload_assets.alma.now import patronload_now_job
    from patronload_assets.load import jobs
    from patronload_assets.resources.bucket import LocalBucket
    from patronload_assets.resources.institution import InstitutionData
    from patronload_assets.resources.mail import OutboxMailer
    from patronload_assets.resources.warehouse import SqliteWarehouse

    from .alma_standin import KEY, StandInAlma
    from .conftest import state_resources

    warehouse = synthetic.create_warehouse(tmp_path / "dw.sqlite3", 120, 120)
    resources = {
        "warehouse": SqliteWarehouse(path=str(warehouse), institution="example"),
        "bucket": LocalBucket(directory=str(tmp_path / "bucket"), prefix="alma"),
        "institution": InstitutionData(name="example"),
        "mailer": OutboxMailer(directory=str(tmp_path / "outbox"), workspace="test"),
    }
    with dg.instance_for_test() as instance:
        resources.update(state_resources(institution="example"))
        assert load(warehouse, tmp_path / "bucket", instance, name="example").success
        with sqlite3.connect(warehouse) as connection:  # one employee's email changes
            view = synthetic.STAFF_VIEW
            [changed] = connection.execute(
                f"SELECT CAMPUS_ID FROM {view} WHERE EMAIL IS NOT NULL ORDER BY CAMPUS_ID LIMIT 1"
            ).fetchone()
            connection.execute(f"UPDATE {view} SET EMAIL = 'new.' || EMAIL WHERE CAMPUS_ID = ?", (changed,))
        connection.close()
        preview = dg.Definitions(jobs=[jobs.patronload_preview], resources=resources).resolve_job_def(
            "patronload_preview"
        )
        result = preview.execute_in_process(instance=instance, raise_on_error=False)
        assert result.success
        [staff] = [
            event.asset_observation_data.asset_observation
            for event in result.all_events
            if event.event_type_value == "ASSET_OBSERVATION"
            and event.asset_observation_data.asset_observation.asset_key == dg.AssetKey("staff_zip")
        ]
        assert staff.metadata["changed_email"].value == 1 and staff.metadata["patrons_departed"].value == 0

        with StandInAlma() as alma:
            now = patronload_now_job.execute_in_process(
                instance=instance,
                run_config={"ops": {"patronload_now": {"config": {"people": [changed, "00000000"]}}}},
                resources={**resources, "alma_users": AlmaUsers(api_key=KEY, base_url=alma.base_url)},
                raise_on_error=False,
            )
        assert now.success
    [message] = [path.read_text() for path in (tmp_path / "outbox").glob("*-now.eml")]
    assert f"{changed}: {changed} (staff): not in Alma: would be created" in message
    assert "00000000: not in the warehouse (neither view has this campus id)" in message
