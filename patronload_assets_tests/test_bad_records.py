"""One bad record costs that record, never the load (docs/patron-rules.md §1, §9): whitespace
normalised, every user checked as parsed, invalid users left out and named in the run report, two
loads at once never losing a type, no scratch file left behind."""

import datetime as dt
import os
import shutil
import sqlite3
import subprocess
import threading
import time
import zipfile
from email import message_from_bytes

import dagster as dg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from patronload_assets.domain import checks
from patronload_assets.domain import institution as engine
from patronload_assets.domain.load import Institution, build_zips
from patronload_assets.institutions.mit import RULES as MIT
from patronload_assets.institutions.mit import synthetic
from patronload_assets.load import assets
from patronload_assets.reports import emails, sensors
from patronload_assets.resources.bucket import LocalBucket
from patronload_assets.resources.institution import InstitutionData
from patronload_assets.resources.warehouse import SqliteWarehouse
from patronload_assets.state import scratch

from .conftest import assert_valid_users, instance_state, load, state_resources

# -- a few invalid users are left out, many hold the type back ---------------------------------------


def template_with_a_trap(tmp_path):
    """The shipped templates, the staff one sending the preferred middle name as a date: a user with
    one is invalid. (A template edit gone wrong, as an institution could make.)"""
    templates = tmp_path / "templates"
    templates.mkdir()
    shutil.copy(MIT.folder / "student_template.xml", templates)
    text = (MIT.folder / "staff_template.xml").read_text()
    (templates / "staff_template.xml").write_text(
        text.replace("<status_date/>", "<status_date>{pref_middle_name}</status_date>")
    )
    return templates


def warehouse_with_preferred_middle_names(tmp_path, staff, kerberos_names):
    warehouse = synthetic.create_warehouse(tmp_path / "dw.sqlite3", staff, 100)
    with sqlite3.connect(warehouse) as connection:
        connection.execute("UPDATE LIBRARY_EMPLOYEE SET PREFERRED_MIDDLE_NAME = NULL")
        for name in kerberos_names:
            connection.execute(
                "INSERT INTO LIBRARY_EMPLOYEE (KRB_NAME_UPPERCASE, LEGAL_FIRST_NAME, PREFERRED_MIDDLE_NAME) "
                "VALUES (?, 'Ann', 'Quinn')",
                (name,),
            )
    connection.close()
    return warehouse


def staff_users(bucket):
    [path] = (bucket / "alma").glob("staff_*.zip")
    with zipfile.ZipFile(path) as archive:
        return etree.fromstring(archive.read(archive.namelist()[0]))


def test_one_invalid_user_costs_that_user_and_is_named_in_the_report(tmp_path):
    warehouse = warehouse_with_preferred_middle_names(tmp_path, 1100, ["TRAPPED"])
    bucket = tmp_path / "bucket"
    with dg.instance_for_test() as instance:
        result = load(warehouse, bucket, instance, template_dir=str(template_with_a_trap(tmp_path)))
        assert result.success
        run = instance.get_run_by_id(result.run_id)
        facts = sensors.run_facts(instance, run, instance_state(instance))
        event_log = "\n".join(
            f"{e.user_message}\n{e.dagster_event!r}" for e in instance.all_logs(result.run_id)
        )
        assert not list(scratch.private_folder(instance, scratch.SCRATCH).iterdir())  # nothing left behind

    document = staff_users(bucket)
    primary_ids = [user.findtext("primary_id") for user in document]
    assert "TRAPPED@MIT.EDU" not in primary_ids and len(primary_ids) > 1000

    metadata = result.asset_materializations_for_node("staff_zip")[0].metadata
    assert metadata["patrons"].value == len(primary_ids)
    assert metadata[checks.LEFT_OUT_INVALID].value == 1
    schema = next(
        c
        for c in result.get_asset_check_evaluations()
        if c.check_name == "schema" and c.asset_key.path == ["staff_zip"]
    )
    assert schema.passed
    assert schema.metadata["users_checked"].value == schema.metadata["users_validated_by_xsd"].value
    assert schema.metadata["users_checked"].value == len(primary_ids)
    assert schema.metadata["users_left_out_invalid"].value == 1
    assert list(schema.metadata["invalid_by_reason"].value) == [
        "patronload_users.xsd: status_date: … is not a valid value of the atomic type …."
    ]
    # Named in the report (by primary id and reason), never in the logs or metadata.
    assert "TRAPPED" not in event_log
    message = emails.success_message(facts, "dev", "from@example.edu", ["to@example.edu"])
    body = message.get_body(("plain",)).get_content()
    assert "TRAPPED@MIT.EDU: patronload_users.xsd: status_date:" in body
    [attachment] = message.iter_attachments()
    assert attachment.get_filename() == "staff_invalid_users.csv"
    assert attachment.get_content().splitlines()[1].startswith("TRAPPED@MIT.EDU,")
    assert message_from_bytes(message.as_bytes())["Subject"].startswith("DEV Patronload file creation")


def test_more_invalid_users_than_the_share_holds_the_type_back_unless_raised(tmp_path):
    warehouse = warehouse_with_preferred_middle_names(tmp_path, 1100, ["TRAPPED", "ALSOTRAPPED"])
    templates = str(template_with_a_trap(tmp_path))
    result = load(warehouse, tmp_path / "held", template_dir=templates)  # 2 of ~1,080: 0.19%
    assert not result.success
    assert not list((tmp_path / "held").rglob("staff_*.zip"))
    assert list((tmp_path / "held").rglob("student_*.zip"))  # the other type is not affected
    failure = next(event for event in result.all_events if event.is_step_failure)
    assert "more than 0.10%" in str(failure.step_failure_data.error)

    raised = {"ops": {"staff_zip": {"config": {"max_invalid_share": 0.01}}}}
    result = load(warehouse, tmp_path / "loaded", template_dir=templates, run_config=raised)
    assert result.success
    assert result.asset_materializations_for_node("staff_zip")[0].metadata[checks.LEFT_OUT_INVALID].value == 2


# -- whitespace ---------------------------------------------------------------------------------------


def test_line_breaks_tabs_and_separators_become_single_spaces_in_the_files(tmp_path, users_schema):
    warehouse = synthetic.create_warehouse(tmp_path / "dw.sqlite3", 50, 50)
    with sqlite3.connect(warehouse) as connection:
        connection.execute(
            "INSERT INTO LIBRARY_STUDENT (KRB_NAME_UPPERCASE, LEGAL_FIRST_NAME, LEGAL_LAST_NAME, "
            "TERM_STREET1, TERM_CITY, EMAIL_ADDRESS) VALUES ('BREAKS', ?, ?, ?, ?, ?)",
            (
                "Jo\tAnn",
                "Line\u2028Sep",
                "1 Main St\r\nApt 2",
                "Cam\u0085bridge\u00a0\u3000MA\x0b\x0c",
                " jo@example.edu\r\n",
            ),
        )
    connection.close()
    result = load(warehouse, tmp_path / "bucket")
    assert result.success
    [path] = (tmp_path / "bucket" / "alma").glob("student_*.zip")
    with zipfile.ZipFile(path) as archive:
        document = assert_valid_users(users_schema, archive.read(archive.namelist()[0]))
    [user] = [user for user in document if user.findtext("primary_id") == "BREAKS@MIT.EDU"]
    assert user.findtext("first_name") == "Jo Ann" and user.findtext("last_name") == "Line Sep"
    assert user.findtext(".//line1") == "1 Main St Apt 2" and user.findtext(".//city") == "Cam bridge MA"
    assert user.findtext(".//email_address") == "jo@example.edu"
    for element in document.iter():
        for text in (element.text if len(element) == 0 else None, *element.attrib.values()):
            assert not text or not any(c in text for c in "\r\n\t\x0b\x0c\x85\u2028\u2029"), text
    metadata = result.asset_materializations_for_node("student_zip")[0].metadata
    assert metadata["whitespace_normalised"].value == 4  # the trimmed email is no repair


def test_a_hostile_warehouse_loads_with_no_control_or_invisible_character_in_any_value(
    tmp_path, users_schema
):
    """DEL, C1 controls, bidirectional controls, zero-width characters and soft hyphens in every text
    field of every row: each is removed and counted, the joiners that spell names stay."""
    warehouse = synthetic.create_warehouse(tmp_path / "dw.sqlite3", 80, 120)
    hostile = FORBIDDEN[-5:] + INVISIBLE  # DEL, C1 ... bidi, zero-width space, word joiner, soft hyphen
    with sqlite3.connect(warehouse) as connection:
        for view, columns in (
            (synthetic.STAFF_VIEW, MIT.staff.columns),
            (synthetic.STUDENT_VIEW, MIT.student.columns),
        ):
            for number, column in enumerate(columns):
                before, inside = hostile[number % len(hostile)], hostile[(number + 7) % len(hostile)]
                connection.execute(
                    f"UPDATE {view} SET {column} = ? || substr({column}, 1, 1) || ? || substr({column}, 2) "
                    f"WHERE {column} IS NOT NULL AND {column} <> ''",
                    (before, inside),
                )
        connection.execute(
            f"UPDATE {synthetic.STAFF_VIEW} SET LEGAL_FIRST_NAME = ? WHERE rowid = 1",
            ("\u0645\u06cc\u200c\u0631",),
        )
    connection.close()
    result = load(warehouse, tmp_path / "bucket")
    assert result.success
    never = set(FORBIDDEN + INVISIBLE)
    values = []
    for path in sorted((tmp_path / "bucket" / "alma").glob("*.zip")):
        with zipfile.ZipFile(path) as archive:
            document = assert_valid_users(users_schema, archive.read(archive.namelist()[0]))
        for element in document.iter():
            values += [element.text] if len(element) == 0 and element.text else []
            values += list(element.attrib.values())
    assert len(values) > 2000
    assert [value for value in values if set(value) & never] == []
    assert "\u0645\u06cc\u200c\u0631" in values  # the zero-width non-joiner spells the name
    for asset in ("staff_zip", "student_zip"):
        metadata = result.asset_materializations_for_node(asset)[0].metadata
        assert metadata["control_characters_removed"].value > 0
        assert metadata["invisible_characters_removed"].value > 0
        assert metadata[checks.LEFT_OUT_INVALID].value == 0


# -- property: arbitrary Unicode in every column ----------------------------------------------------

SPACES = "\t\n\x0b\x0c\r \x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2007\u200a\u2028\u2029\u202f\u205f\u3000"
FORBIDDEN = "\x00\x01\x08\x0e\x1b\ufeff\ufffe\uffff\ud800\udfff\x7f\x80\x84\x86\x9f"
# Removed too, and counted; zero-width joiner and non-joiner (U+200C, U+200D) stay.
INVISIBLE = "\u00ad\u200b\u2060\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
JOINERS = "\u200c\u200d"
any_text = st.one_of(
    st.text(alphabet=st.characters(codec=None), max_size=30),
    st.text(alphabet=st.sampled_from(SPACES + FORBIDDEN + INVISIBLE + JOINERS + "aZ&<>'\"é字"), max_size=30),
    st.text(min_size=250, max_size=400),
)
any_value = st.one_of(
    st.none(), any_text, st.integers(), st.floats(), st.decimals(allow_nan=False, places=3), st.dates(),
    st.binary(max_size=20), st.sampled_from(["NONE", "G", "u", "NIU", "6", "10000948.0"]),
)  # fmt: skip


@pytest.mark.parametrize("patron_type", [MIT.staff, MIT.student], ids=["staff", "student"])
def test_any_unicode_row_becomes_a_valid_user_and_the_check_agrees_with_an_independent_parse(
    tmp_path_factory, patron_type, users_schema
):
    institution = Institution.load(MIT)
    moment = dt.datetime(2026, 11, 28, tzinfo=dt.UTC)

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(rows=st.lists(st.fixed_dictionaries({c: any_value for c in patron_type.columns}), max_size=6))
    def check(rows):
        folder = tmp_path_factory.mktemp("zips")
        selection = engine.select_patrons(
            [row["KRB_NAME_UPPERCASE"] for row in rows], MIT, duplicate_reason="d"
        )
        assert len(selection.kept) + sum(selection.left_out.values()) == len(rows)
        kept = [rows[position] for position in selection.kept]
        result = build_zips(kept, len(kept), patron_type, institution, moment, folder)
        outcome, inspection = checks.check_schema(result.zips, checks.user_schemas())
        [packaged] = result.zips
        with zipfile.ZipFile(packaged.path) as archive:
            xml = archive.read(packaged.xml_files[0])
        document = etree.fromstring(xml)  # the independent parse: the whole document at once
        independent = users_schema.validate(document)
        assert outcome.passed == independent, (outcome.description, users_schema.error_log)
        assert outcome.passed, outcome.description
        assert inspection.users == len(document) == len(kept)
        never = set("\r\n\t" + FORBIDDEN + INVISIBLE)  # cleaning removed them: no value holds one
        for element in (element for user in document for element in user.iter()):
            assert element.text is None or len(element) > 0 or not set(element.text) & never
            assert not any(set(value) & never for value in element.attrib.values())
        shutil.rmtree(folder)

    check()


# -- two loads at once --------------------------------------------------------------------------------


class SlowBucket(LocalBucket):
    """The embedded bucket, with a pause before each upload: two loads' steps interleave."""

    pause_seconds: float = 0.0

    def upload(self, path, key):
        time.sleep(self.pause_seconds)
        super().upload(path, key)


@pytest.mark.slow
def test_two_loads_at_once_always_leave_the_newest_load_of_each_type_alone(tmp_path):
    warehouse = synthetic.create_warehouse(tmp_path / "dw.sqlite3", 60, 60)
    bucket_dir = tmp_path / "bucket"
    all_assets = dg.load_assets_from_modules([assets])
    interleaved = overtaken = 0
    for attempt in range(6):
        outcomes = {}

        def run(name, pause, start_after, outcomes=outcomes):
            time.sleep(start_after)
            outcomes[name] = dg.materialize(
                all_assets,
                resources={
                    "warehouse": SqliteWarehouse(path=str(warehouse)),
                    "bucket": SlowBucket(directory=str(bucket_dir), prefix="alma", pause_seconds=pause),
                    "institution": InstitutionData(),
                    **state_resources(),
                },
                raise_on_error=False,
            )

        # The older load uploads before or after the newer one, in turn.
        older_pause = 2.5 if attempt % 2 else 0.0
        threads = [
            threading.Thread(target=run, args=("older", older_pause, 0.0)),
            threading.Thread(target=run, args=("newer", 0.0, 1.2)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert all(result.success for result in outcomes.values())
        for patron_type in ("staff", "student"):
            loads = [
                outcome.asset_materializations_for_node(f"{patron_type}_zip")[0].metadata
                for outcome in outcomes.values()
            ]
            loads.sort(key=lambda metadata: metadata["keys"].value[0])
            older, newest = loads
            stored = sorted(f"alma/{p.name}" for p in (bucket_dir / "alma").glob(f"{patron_type}_*.zip"))
            assert stored == newest["keys"].value, (attempt, patron_type, stored)
            if older["keys"].value != newest["keys"].value:
                interleaved += 1
                overtaken += bool(older["superseded_by"].value)  # the older uploaded after the newer
    assert interleaved >= 6 and overtaken >= 2, (interleaved, overtaken)


# -- nothing left behind --------------------------------------------------------------------------------


def test_a_killed_runs_scratch_folder_is_removed_by_the_next_run(tmp_path):
    with dg.instance_for_test() as instance:
        gone = subprocess.Popen(["true"])
        gone.wait()  # a process that no longer exists, as after kill -9
        crashed = scratch.private_folder(instance, scratch.SCRATCH, "0" * 36 + "-staff")
        (crashed / scratch.OWNER_FILE).write_text(f"{os.uname().nodename} {gone.pid}")
        (crashed / "staff_2026-11-30_05.00.00.zip").write_bytes(b"patron data")
        alive = scratch.private_folder(instance, scratch.SCRATCH, "1" * 36 + "-staff")
        (alive / scratch.OWNER_FILE).write_text(f"{os.uname().nodename} {os.getpid()}")  # a run still going

        folder = scratch.scratch_folder(instance, "2" * 36, "student")
        assert oct(folder.stat().st_mode & 0o777) == "0o700"
        assert oct(folder.parent.stat().st_mode & 0o777) == "0o700"
        assert not crashed.exists() and alive.exists()
        assert folder.parent == crashed.parent
        assert str(folder).startswith(instance.storage_directory())
