"""Same day (docs/patron-rules.md §13): patronload_now against a stand-in Alma Users API over real
HTTP: the published paths, the key checked, 400/401861 for a user Alma lacks, an identifier another
user holds, a 429."""

import email
import email.policy
import sqlite3
from collections import Counter

import dagster as dg
import pytest
from lxml import etree

from patronload_assets.alma.api import AlmaUsers
from patronload_assets.alma.now import patronload_now_job
from patronload_assets.domain.named import NOT_IN_WAREHOUSE as NOT_IN_WAREHOUSE_OF
from patronload_assets.domain.named import asked_names
from patronload_assets.domain.values import person_key
from patronload_assets.institutions.mit import synthetic
from patronload_assets.resources.institution import InstitutionData
from patronload_assets.resources.mail import OutboxMailer
from patronload_assets.resources.warehouse import SqliteWarehouse

from .alma_standin import KEY, StandInAlma
from .conftest import assert_valid_users, load, state_resources
from .test_changes import _loaded

NOT_IN_WAREHOUSE = NOT_IN_WAREHOUSE_OF.format(person_key="Kerberos name")  # MIT's person key

INJECTION = "X' OR '1'='1"


@pytest.fixture
def alma():
    with StandInAlma() as standin:
        yield standin


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    """A warehouse, the daily load's records of it, and people to ask for by kind."""
    folder = tmp_path_factory.mktemp("now")
    warehouse = synthetic.create_warehouse(folder / "dw.sqlite3", 80, 80)
    with sqlite3.connect(warehouse) as connection:
        staff = [
            row[0] for row in connection.execute(f"SELECT KRB_NAME_UPPERCASE FROM {synthetic.STAFF_VIEW}")
        ]
        students = [
            row[0] for row in connection.execute(f"SELECT KRB_NAME_UPPERCASE FROM {synthetic.STUDENT_VIEW}")
        ]
    connection.close()
    once = Counter(person_key(name) for name in staff + students)
    staff_keys = {person_key(name) for name in staff}
    student_keys = {person_key(name) for name in students}
    [employee, *_] = sorted(key for key in staff_keys & student_keys if key and once[key] == 2)
    only_staff = sorted(key for key in staff_keys - student_keys if key and once[key] == 1)
    only_students = sorted(key for key in student_keys - staff_keys if key and once[key] == 1)
    bucket = folder / "bucket"
    assert load(warehouse, bucket).success
    daily = {**_loaded(bucket, "staff"), **_loaded(bucket, "student")}  # the daily load's users by primary id
    return {
        "warehouse": warehouse, "daily": daily, "employee": employee, "staff": only_staff[0],
        "existing": only_students[0], "conflicting": only_students[1], "bucket": bucket,
    }  # fmt: skip


def run_now(people, alma, tmp_path, names, send, may_send=True):
    outbox = tmp_path / "outbox"
    with dg.instance_for_test() as instance:
        result = patronload_now_job.execute_in_process(
            instance=instance,
            run_config={"ops": {"patronload_now": {"config": {"people": names, "send": send}}}},
            resources={
                "warehouse": SqliteWarehouse(path=str(people["warehouse"])),
                "institution": InstitutionData(),
                "alma_users": AlmaUsers(
                    api_key=KEY, base_url=alma.base_url, backoff_seconds=0.01, may_send=may_send
                ),
                "mailer": OutboxMailer(directory=str(outbox), workspace="test"),
                **state_resources(),  # as the code location has them: the frames' IO manager too
            },
            raise_on_error=False,
        )
        log = "\n".join(entry.user_message for entry in instance.all_logs(result.run_id))
    messages = [
        email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        for path in sorted(outbox.glob("*.eml"))
    ]
    return result, messages, log


def four_names(people, alma):
    """Two new people (one a student employee), one Alma has, one the warehouse lacks."""
    existing = people["daily"][f"{people['existing']}@MIT.EDU"]
    alma.add_user(existing.findtext("primary_id"))
    return [people["staff"].lower(), f" {people['employee']} ", people["existing"], "NOSUCHPERSON"]


def test_a_dry_run_creates_nothing_and_says_what_it_would_do(people, alma, tmp_path):
    names = four_names(people, alma)
    result, [message], log = run_now(people, alma, tmp_path, names, send=False)
    assert result.success
    assert not alma.created and not [request for request in alma.requests if request.startswith("POST")]
    assert message["Subject"].startswith("TEST Patronload now ")
    body = message.get_body(("plain",)).get_content()
    assert "DRY RUN" in body
    assert f"{people['staff']}: {people['staff']}@MIT.EDU (staff): not in Alma: would be created" in body
    assert (
        f"{people['employee']}: {people['employee']}@MIT.EDU (staff): not in Alma: would be created" in body
    )
    assert f"{people['existing']}: {people['existing']}@MIT.EDU (student): exists in Alma" in body
    assert f"NOSUCHPERSON: {NOT_IN_WAREHOUSE}" in body
    [output] = [event for event in result.all_events if event.is_successful_output]
    metadata = {name: value.value for name, value in output.event_specific_data.metadata.items()}
    assert (metadata["would_create"], metadata["existing"], metadata["missing"], metadata["created"]) == (
        2,
        1,
        1,
        0,
    )
    for name in (people["staff"], people["employee"], people["existing"]):
        assert name not in log  # counts only in the log


def test_a_send_creates_exactly_the_missing_people_as_the_daily_load_writes_them(
    people, alma, tmp_path, users_schema
):
    names = four_names(people, alma)
    alma.fail_next = [429]  # slow down: retried
    result, [message], _ = run_now(people, alma, tmp_path, names, send=True)
    assert result.success
    created = {etree.fromstring(body).findtext("primary_id"): body for body in alma.created}
    assert sorted(created) == sorted([f"{people['staff']}@MIT.EDU", f"{people['employee']}@MIT.EDU"])
    for primary_id, body in created.items():
        assert_valid_users(users_schema, b"<users>" + body.split(b"?>", 1)[1] + b"</users>")
        sent, daily = etree.fromstring(body), people["daily"][primary_id]
        assert etree.tostring(sent) == etree.tostring(daily, with_tail=False)  # the record the load writes
        assert sent.findtext("account_type") == "EXTERNAL" and sent.findtext("external_id") == "SIS"
    # the student employee goes as staff: the staff template's record
    employee = etree.fromstring(created[f"{people['employee']}@MIT.EDU"])
    assert etree.tostring(employee.find("user_group")) == etree.tostring(
        people["daily"][f"{people['employee']}@MIT.EDU"].find("user_group"), with_tail=False
    )
    posts = [request for request in alma.requests if request.startswith("POST")]
    assert len(posts) == 2 and all(
        post == "POST /almaws/v1/users?social_authentication=false&send_pin_number_letter=false"
        for post in posts
    )
    assert alma.requests[0] == alma.requests[1]  # the first call refused with 429, then retried
    body = message.get_body(("plain",)).get_content()
    assert body.count("created in Alma") == 2 and "exists in Alma: tomorrow's load updates it" in body
    assert f"NOSUCHPERSON: {NOT_IN_WAREHOUSE}" in body
    assert KEY not in body


def test_an_identifier_another_user_holds_is_alma_s_error_for_that_person_only(people, alma, tmp_path):
    conflicting = people["daily"][f"{people['conflicting']}@MIT.EDU"]
    alma.add_user("SOMEONE.ELSE@MIT.EDU", conflicting.findtext("user_identifiers/user_identifier/value"))
    result, [message], _ = run_now(
        people, alma, tmp_path, [people["conflicting"], people["staff"]], send=True
    )
    assert result.success
    body = message.get_body(("plain",)).get_content()
    said = "POST /users: HTTP 400 (error 401858: An identifier of this user is already held by another user)"
    assert f"{people['conflicting']}: {people['conflicting']}@MIT.EDU (student): Alma's error: {said}" in body
    assert f"{people['staff']}@MIT.EDU (staff): created in Alma" in body
    assert [etree.fromstring(b).findtext("primary_id") for b in alma.created] == [
        f"{people['staff']}@MIT.EDU"
    ]


def test_a_name_is_only_ever_a_value(people, alma, tmp_path):
    result, [message], _ = run_now(people, alma, tmp_path, [INJECTION, "%", "*"], send=True)
    assert result.success and not alma.created
    body = message.get_body(("plain",)).get_content()
    assert f"{INJECTION.upper()}: {NOT_IN_WAREHOUSE}" in body and f"%: {NOT_IN_WAREHOUSE}" in body


def test_in_dev_nothing_is_sent_without_an_explicit_base_url(people, alma, tmp_path):
    result, [message], _ = run_now(people, alma, tmp_path, [people["staff"]], send=True, may_send=False)
    assert not result.success and not alma.requests
    assert (
        message["Subject"].endswith(" failed")
        and "ALMA_API_BASE_URL" in message.get_body(("plain",)).get_content()
    )


def test_names_are_trimmed_one_each_and_at_most_a_hundred():
    assert asked_names([" abc", "ABC", "Def "]) == ["ABC", "DEF"]
    with pytest.raises(ValueError, match="at most 100"):
        asked_names([f"N{number}" for number in range(101)])
    with pytest.raises(ValueError, match="no Kerberos name"):
        asked_names(["  "], "Kerberos name")
