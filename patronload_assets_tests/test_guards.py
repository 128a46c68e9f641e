"""Guards: hostile values load cleanly, and blocking checks keep bad loads out of the bucket."""

import datetime as dt
import shutil
import sqlite3
from collections import Counter
from decimal import Decimal

import dagster as dg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from patronload_assets.domain import checks, rules, synthetic
from patronload_assets.domain.alma_xml import UserTemplate
from patronload_assets.domain.load import INSTITUTION_DIR, STAFF, STUDENT
from patronload_assets.domain.values import clean_row, kerberos_key

from .conftest import ALMA_DIR, assert_valid_users, load

TEMPLATES = {
    name: UserTemplate.from_file(INSTITUTION_DIR / f"{name}_template.xml") for name in ("staff", "student")
}

# -- property: any row becomes a valid user or a named rejection ----------------------------------

hostile_values = st.one_of(
    st.none(),
    st.text(max_size=20),
    st.text(min_size=250, max_size=400),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=False, allow_infinity=False, places=2),
    st.binary(max_size=20),
    st.dates(),
    st.sampled_from(["NONE", "  ", "G", "u", "NIU", "6", "10000948.0", "\ufeff", "\x00\x1f", "&<>\"'"]),
)


def row_strategy(columns):
    return st.fixed_dictionaries({column: hostile_values for column in columns})


@pytest.mark.parametrize("patron_type", [STAFF, STUDENT], ids=["staff", "student"])
def test_any_row_is_a_valid_user_or_a_named_rejection(patron_type, users_schema):
    template = TEMPLATES[patron_type.name]

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(rows=st.lists(row_strategy(patron_type.columns), min_size=1, max_size=5))
    def check(rows):
        selection = rules.select_patrons(
            [row["KRB_NAME_UPPERCASE"] for row in rows], duplicate_reason="duplicate"
        )
        assert len(selection.kept) + sum(selection.left_out.values()) == len(rows)
        assert set(selection.left_out) <= {rules.REJECTED_NO_KERBEROS_NAME, "duplicate"}
        run = rules.RunContext(dt.date(2026, 11, 28), {"10000948": "NK"}, {"6": "UH"})
        kept = [rows[position] for position in selection.kept]
        users = [
            template.render(fields, run.counts)
            for fields in rules.patron_fields(kept, patron_type.fields_of, run)
        ]
        document = assert_valid_users(users_schema, b"<users>" + b"".join(users) + b"</users>")
        for user in document:
            assert not checks.structural_problems(user)
        values = [value.text for value in document.iterfind("user/user_identifiers/user_identifier/value")]
        assert len(values) == len({value.upper() for value in values})

    check()


def test_numbers_and_padding_map_through_the_department_table():
    run = rules.RunContext(dt.date(2026, 11, 28), {"10000948": "NK"}, {})
    for raw in (10000948, 10000948.0, Decimal("10000948"), " 10000948 ", "10000948.0"):
        row = dict.fromkeys(rules.STAFF_COLUMNS)
        row.update(KRB_NAME_UPPERCASE="A", ORG_UNIT_ID=raw)
        assert rules.staff_fields(clean_row(row), run)["statistic_category"] == "NK", raw
    assert not run.unknown_departments


def test_identifier_repeating_one_of_the_same_or_an_earlier_user_is_left_out():
    run = rules.RunContext(dt.date(2026, 11, 28), {}, {})
    rows = []
    for krb, mit_id, barcode in [
        ("A", "111", "111"),
        ("B", "222", "333"),
        ("C", "333", "444"),
        ("D", "x1", "X1"),
    ]:
        row = dict.fromkeys(rules.STAFF_COLUMNS)
        row.update(KRB_NAME_UPPERCASE=krb, MIT_ID=mit_id, LIBRARY_ID=barcode)
        rows.append(row)
    fields = list(rules.patron_fields(rows, rules.staff_fields, run))
    assert [(f["mit_id"], f["barcode"]) for f in fields] == [
        ("111", None),
        ("222", "333"),
        (None, "444"),
        ("x1", None),
    ]
    assert run.counts[rules.IDENTIFIER_REPEATED] == 3


# -- the lineage on a hostile warehouse -----------------------------------------------------------


def hostile_warehouse(path, staff_count=400, student_count=500):
    """The synthetic warehouse, then hostile values written over it with SQLite's own types."""
    synthetic.create_warehouse(path, staff_count, student_count)
    with sqlite3.connect(path) as connection:
        staff = [
            (10000948, 912345001.0, "  CASEVARIANT ", "912345001", "\x07Ann\x00", "Ä" * 300, "L" * 300),
            (Decimal("10000948"), None, "casevariant", "1", "x", "y", "z"),  # same person, other case
            ("10000948.0", 912345002, "BLANKNAMES", "39080000000001", None, "   ", ""),
            (b"10000948", "912345003", "\ufeffBOM", None, "A\x1bB", "\ufeffC", "D\x0b"),
        ]
        connection.executemany(
            "INSERT INTO LIBRARY_EMPLOYEE (ORG_UNIT_ID, MIT_ID, KRB_NAME_UPPERCASE, LIBRARY_ID, "
            "LEGAL_FIRST_NAME, LEGAL_MIDDLE_NAME, LEGAL_LAST_NAME) VALUES (?, ?, ?, ?, ?, ?, ?)",
            # Decimal is no SQLite type: it arrives as the float it is stored as. Bytes stay a BLOB.
            [tuple(float(value) if isinstance(value, Decimal) else value for value in row) for row in staff],
        )
        connection.executemany(
            "INSERT INTO LIBRARY_STUDENT (KRB_NAME_UPPERCASE, MIT_ID, LIBRARY_ID, TERM_PHONE1, STUDENT_YEAR, "
            "HOME_DEPARTMENT) VALUES (?, ?, ?, ?, ?, ?)",
            [
                ("Casevariant", "999", "998", 6172531000, "G", 6),  # a student employee, other case
                ("NEWSTUDENT", "912345002", "912345002", "\x01617253100\x02", 1, "6"),  # staff's MIT ID
                ("newstudent", "1", "2", None, "u", None),
            ],
        )
    return path


def zip_users(bucket_dir, patron_type):
    import zipfile

    [path] = (bucket_dir / "alma").glob(f"{patron_type}_*.zip")
    with zipfile.ZipFile(path) as archive:
        return b"".join(archive.read(name) for name in archive.namelist())


def test_hostile_warehouse_loads_every_person_once_and_valid(tmp_path, users_schema):
    warehouse = hostile_warehouse(tmp_path / "dw.sqlite3")
    departments = tmp_path / "staff_departments.json"
    departments.write_text('{"10000948": "NK"}')
    result = load(
        warehouse,
        tmp_path / "bucket",
        alma_user_xsd=str(ALMA_DIR / "rest_user.xsd"),
        staff_departments_path=str(departments),
    )
    assert result.success
    ids = []
    for patron_type in ("staff", "student"):
        document = assert_valid_users(users_schema, zip_users(tmp_path / "bucket", patron_type))
        ids += [kerberos_key(user.findtext("primary_id")) for user in document]
        for check in result.get_asset_check_evaluations():
            if check.check_name in checks.BLOCKING:
                assert check.passed, (check.asset_key, check.check_name, check.description)
    assert len(ids) == len(set(ids))
    assert "CASEVARIANT@MIT.EDU" in ids and "NEWSTUDENT@MIT.EDU" in ids
    staff = result.asset_materializations_for_node("staff_zip")[0].metadata
    assert staff["control_characters_removed"].value >= 4
    assert staff["values_cut_to_schema_length"].value >= 2
    assert staff["dropped_duplicate_staff"].value >= 1
    assert staff["identifier_left_out_repeated"].value >= 1
    assert "10000948" not in staff["unknown_department_codes"].value  # 10000948 as int, float, Decimal, text
    assert "10000948.0" not in staff["unknown_department_codes"].value
    students = result.asset_materializations_for_node("deduplicated_students")[0].metadata
    assert students["identifier_left_out_used_by_staff"].value >= 2
    repairs = {
        c.check_name: c for c in result.get_asset_check_evaluations() if c.asset_key.path == ["staff_zip"]
    }
    assert not repairs["repairs"].passed  # a warning that shows the repairs
    assert repairs["repairs"].severity == dg.AssetCheckSeverity.WARN


def test_a_staff_extract_cut_to_a_tenth_is_held_back(tmp_path):
    warehouse = tmp_path / "dw.sqlite3"
    synthetic.create_warehouse(warehouse, 1000, 300)
    with dg.instance_for_test() as instance:
        assert load(warehouse, tmp_path / "bucket", instance).success
        [previous] = (tmp_path / "bucket" / "alma").glob("staff_*.zip")
        before = previous.read_bytes()
        with sqlite3.connect(warehouse) as connection:
            connection.execute("DELETE FROM LIBRARY_EMPLOYEE WHERE rowid % 10 != 0")
        result = load(warehouse, tmp_path / "bucket", instance)
        assert not result.success
        shrink = [c for c in result.get_asset_check_evaluations() if c.check_name == "shrink"]
        staff_shrink = next(c for c in shrink if c.asset_key.path == ["staff_zip"])
        assert not staff_shrink.passed and "held back" in staff_shrink.description
        assert [path.read_bytes() for path in (tmp_path / "bucket" / "alma").glob("staff_*.zip")] == [before]
        failures = [e for e in result.all_events if e.is_step_failure]
        assert [e.step_key for e in failures] == ["staff_zip"]
        assert "shrink check failed" in str(failures[0].step_failure_data.error)

        # A deliberate one-run override uploads the smaller load.
        override = {"ops": {"staff_zip": {"config": {"allow_shrink": True}}}}
        assert load(warehouse, tmp_path / "bucket", instance, run_config=override).success
        [replaced] = (tmp_path / "bucket" / "alma").glob("staff_*.zip")
        assert replaced.read_bytes() != before


def test_a_template_that_breaks_the_schema_uploads_nothing(tmp_path):
    templates = tmp_path / "templates"
    templates.mkdir()
    shutil.copy(INSTITUTION_DIR / "staff_template.xml", templates)
    text = (INSTITUTION_DIR / "student_template.xml").read_text()
    # An edit that drops email_types: Alma would refuse every student with an email.
    start, end = text.index("<email_types>"), text.index("</email_types>") + len("</email_types>")
    (templates / "student_template.xml").write_text(text[:start] + text[end:])
    warehouse = synthetic.create_warehouse(tmp_path / "dw.sqlite3", 200, 200)
    (tmp_path / "bucket" / "alma").mkdir(parents=True)
    (tmp_path / "bucket" / "alma" / "student_2020-01-01_05.00.00.zip").write_bytes(b"previous")
    result = load(warehouse, tmp_path / "bucket", template_dir=str(templates))
    assert not result.success
    schema = next(
        c
        for c in result.get_asset_check_evaluations()
        if c.check_name == "schema" and c.asset_key.path == ["student_zip"]
    )
    assert not schema.passed and "email without email_types" in schema.description
    assert sorted(p.name for p in (tmp_path / "bucket" / "alma").glob("student_*")) == [
        "student_2020-01-01_05.00.00.zip"
    ]
    assert len(list((tmp_path / "bucket" / "alma").glob("staff_*.zip"))) == 1  # the other type is unaffected


def test_the_xsd_catches_what_the_structural_rules_do_not(tmp_path):
    templates = tmp_path / "templates"
    templates.mkdir()
    shutil.copy(INSTITUTION_DIR / "student_template.xml", templates)
    text = (INSTITUTION_DIR / "staff_template.xml").read_text()
    (templates / "staff_template.xml").write_text(text.replace("<web_site_url/>", "<web_site/>"))
    warehouse = synthetic.create_warehouse(tmp_path / "dw.sqlite3", 100, 100)
    assert load(warehouse, tmp_path / "without", template_dir=str(templates)).success
    result = load(
        warehouse,
        tmp_path / "with",
        template_dir=str(templates),
        alma_user_xsd=str(ALMA_DIR / "rest_user.xsd"),
    )
    assert not result.success
    assert not list((tmp_path / "with").rglob("staff_*.zip"))


def test_a_load_over_almas_limits_is_refused_before_upload(tmp_path):
    warehouse = synthetic.create_warehouse(tmp_path / "dw.sqlite3", 1100, 10)
    result = load(warehouse, tmp_path / "bucket", users_per_file=1)  # 1,000+ files: 21+ zips
    assert not result.success
    limits = next(
        c
        for c in result.get_asset_check_evaluations()
        if c.check_name == "limits" and c.asset_key.path == ["staff_zip"]
    )
    assert not limits.passed and "at most 20 zips" in limits.description
    assert not list((tmp_path / "bucket").rglob("staff_*.zip"))


@pytest.mark.parametrize(
    ("patrons", "previous", "override", "passed"),
    [
        (500, None, False, True),
        (500, 1000, False, True),
        (499, 1000, False, False),
        (100, 1000, True, True),
        (0, 0, False, True),
    ],
)
def test_shrink_threshold(patrons, previous, override, passed):
    assert checks.check_shrink("staff", patrons, previous, "a test", 0.5, override).passed is passed


def test_structural_rules_name_each_problem():
    user = etree.fromstring(
        "<user><primary_id/><expiry_date>2027-02-30Z</expiry_date><is_researcher>yes</is_researcher>"
        "<user_group/><contact_info><phones><phone preferred='true'><phone_number/></phone>"
        "<phone preferred='true'><phone_number>1</phone_number><phone_types/></phone></phones><addresses/>"
        "</contact_info><user_identifiers><user_identifier><value/></user_identifier></user_identifiers>"
        f"<first_name>{'x' * 256}</first_name></user>"
    )
    assert Counter(checks.structural_problems(user)) == {
        "primary_id missing": 1,
        "contact_info out of order": 1,
        "more than one preferred in phones": 1,
        "phone without phone_types": 1,
        "empty phone_number": 1,
        "empty primary_id": 1,
        "expiry_date not a date": 1,
        "is_researcher not a boolean": 1,
        "empty user_group": 1,
        "user_identifier without id_type": 1,
        "empty value": 1,
        "first_name over 255 characters": 1,
    }


def test_schema_check_reads_every_user_and_samples_beyond_the_full_check(tmp_path):
    rows = [dict(zip(STAFF.columns, row, strict=True)) for row in synthetic.staff_rows(300)]
    selection = rules.select_patrons(
        [row["KRB_NAME_UPPERCASE"] for row in rows], duplicate_reason="duplicate"
    )
    kept = [rows[position] for position in selection.kept]
    from patronload_assets.domain.load import Institution, build_zips

    moment = dt.datetime(2026, 11, 28, tzinfo=dt.UTC)
    result = build_zips(kept, len(kept), STAFF, Institution.load(), moment, tmp_path)
    outcome = checks.check_schema(result.zips, full_check_users=100, sample_every=10)
    assert outcome.passed, outcome.description
    assert outcome.metadata["users_checked"] == len(kept)
    assert outcome.metadata["users_parsed_and_checked_by_every_rule"] == 100 + (len(kept) - 100) // 10

    # A repeated identifier far past the full check is still caught: that rule reads every user.
    import zipfile

    [packaged] = result.zips
    with zipfile.ZipFile(packaged.path) as archive:
        xml = archive.read(packaged.xml_files[0]).splitlines()
    first_value = xml[2].split(b"<value>")[1].split(b"</value>")[0]
    last = xml[-2]
    start = last.index(b"<value>") + len(b"<value>")
    xml[-2] = last[:start] + first_value + last[last.index(b"</value>", start) :]
    with zipfile.ZipFile(packaged.path, "w") as archive:
        archive.writestr(packaged.xml_files[0], b"\n".join(xml))
    outcome = checks.check_schema(result.zips, full_check_users=100, sample_every=10)
    assert not outcome.passed and outcome.metadata["problems"] == {"repeated identifier": 1}


EMPTY_IDENTIFIER = b"<user_identifier><value/></user_identifier></user_identifiers>"


@pytest.mark.parametrize(
    ("damage", "kind"),
    [
        (lambda line: line.replace(b"<first_name>", b"<first_name>\x01", 1), "character XML forbids"),
        (lambda line: line.replace(b"</user_identifiers>", EMPTY_IDENTIFIER), "empty identifier"),
        (lambda line: line.replace(b"</first_name>", b"</first_nam>", 1), "not well-formed"),
    ],
)  # fmt: skip
def test_schema_check_finds_damage_in_the_file(tmp_path, damage, kind):
    import zipfile

    from patronload_assets.domain.load import Institution, build_zips

    rows = [dict(zip(STAFF.columns, row, strict=True)) for row in synthetic.staff_rows(50)]
    kept = [
        rows[p]
        for p in rules.select_patrons([r["KRB_NAME_UPPERCASE"] for r in rows], duplicate_reason="d").kept
    ]
    moment = dt.datetime(2026, 11, 28, tzinfo=dt.UTC)
    [packaged] = build_zips(kept, len(kept), STAFF, Institution.load(), moment, tmp_path).zips
    with zipfile.ZipFile(packaged.path) as archive:
        lines = archive.read(packaged.xml_files[0]).split(b"\n")
    lines[5] = damage(lines[5])
    with zipfile.ZipFile(packaged.path, "w") as archive:
        archive.writestr(packaged.xml_files[0], b"\n".join(lines))
    outcome = checks.check_schema([packaged])
    assert not outcome.passed
    assert any(found.startswith(kind) for found in outcome.metadata["problems"]), outcome.metadata["problems"]


def test_a_new_instance_compares_with_the_count_recorded_in_the_bucket(tmp_path):
    """The history may be gone (a new or wiped instance): the last zips in the bucket remember."""
    warehouse = tmp_path / "dw.sqlite3"
    synthetic.create_warehouse(warehouse, 1000, 300)
    with dg.instance_for_test() as first:
        assert load(warehouse, tmp_path / "bucket", first).success
    [previous] = (tmp_path / "bucket" / "alma").glob("staff_*.zip")
    processed = previous.with_name(previous.name + ".processed")  # as Alma renames what it took
    previous.rename(processed)
    with sqlite3.connect(warehouse) as connection:
        connection.execute("DELETE FROM LIBRARY_EMPLOYEE WHERE rowid % 10 != 0")
    with dg.instance_for_test() as second:
        result = load(warehouse, tmp_path / "bucket", second)
    assert not result.success
    shrink = next(
        c
        for c in result.get_asset_check_evaluations()
        if c.check_name == "shrink" and c.asset_key.path == ["staff_zip"]
    )
    assert not shrink.passed
    assert shrink.metadata["previous_from"].value == "the bucket's newest staff zips"
    assert not list((tmp_path / "bucket" / "alma").glob("staff_*.zip"))  # nothing new uploaded
