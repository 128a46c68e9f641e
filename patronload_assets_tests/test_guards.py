"""Guards: hostile values load cleanly, and blocking checks keep bad loads out of the bucket."""

import datetime as dt
import shutil
import sqlite3
from decimal import Decimal

import dagster as dg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from patronload_assets.domain import checks
from patronload_assets.domain import institution as engine
from patronload_assets.domain.alma_xml import UserTemplate
from patronload_assets.domain.values import clean_row, person_key
from patronload_assets.institutions.mit import RULES as MIT
from patronload_assets.institutions.mit import rules, synthetic

from .conftest import FIXTURES, assert_valid_users, load

TEMPLATES = {
    name: UserTemplate.from_file(MIT.folder / f"{name}_template.xml") for name in ("staff", "student")
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


@pytest.mark.parametrize("patron_type", [MIT.staff, MIT.student], ids=["staff", "student"])
def test_any_row_is_a_valid_user_or_a_named_rejection(patron_type, users_schema):
    template = TEMPLATES[patron_type.name]

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(rows=st.lists(row_strategy(patron_type.columns), min_size=1, max_size=5))
    def check(rows):
        selection = engine.select_patrons(
            [row["KRB_NAME_UPPERCASE"] for row in rows], MIT, duplicate_reason="duplicate"
        )
        assert len(selection.kept) + sum(selection.left_out.values()) == len(rows)
        assert set(selection.left_out) <= {rules.REJECTED_NO_KERBEROS_NAME, "duplicate"}
        run = engine.RunContext(dt.date(2026, 11, 28), {"10000948": "NK"}, {"6": "UH"})
        kept = [rows[position] for position in selection.kept]
        users = [
            template.render(fields, run.counts)
            for fields in engine.patron_fields(kept, patron_type, MIT, run)
        ]
        document = assert_valid_users(users_schema, b"<users>" + b"".join(users) + b"</users>")
        values = [value.text for value in document.iterfind("user/user_identifiers/user_identifier/value")]
        assert len(values) == len({value.upper() for value in values})

    check()


def test_numbers_and_padding_map_through_the_department_table():
    run = engine.RunContext(dt.date(2026, 11, 28), {"10000948": "NK"}, {})
    for raw in (10000948, 10000948.0, Decimal("10000948"), " 10000948 ", "10000948.0"):
        row = dict.fromkeys(rules.STAFF_COLUMNS)
        row.update(KRB_NAME_UPPERCASE="A", ORG_UNIT_ID=raw)
        assert rules.staff_fields(clean_row(row), run)["statistic_category"] == "NK", raw
    assert not run.unknown_departments


def test_identifier_repeating_one_of_the_same_or_an_earlier_user_is_left_out():
    run = engine.RunContext(dt.date(2026, 11, 28), {}, {})
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
    fields = list(engine.patron_fields(rows, MIT.staff, MIT, run))
    assert [(f["mit_id"], f["barcode"]) for f in fields] == [
        ("111", None),
        ("222", "333"),
        (None, "444"),
        ("x1", None),
    ]
    assert run.counts[engine.IDENTIFIER_REPEATED] == 3


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
    result = load(warehouse, tmp_path / "bucket", staff_departments_path=str(departments))
    assert result.success
    ids = []
    for patron_type in ("staff", "student"):
        document = assert_valid_users(users_schema, zip_users(tmp_path / "bucket", patron_type))
        ids += [person_key(user.findtext("primary_id")) for user in document]
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
    students = result.asset_materializations_for_node("student_zip")[0].metadata
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

        # Nine in ten of the last load's staff are gone: the departures guard holds it back too, and
        # overriding one guard is not enough.
        departures = next(
            c for c in result.get_asset_check_evaluations()
            if c.check_name == "departures" and c.asset_key.path == ["staff_zip"]
        )  # fmt: skip
        assert not departures.passed
        shrink_only = {"ops": {"staff_zip": {"config": {"allow_shrink": True}}}}
        assert not load(warehouse, tmp_path / "bucket", instance, run_config=shrink_only).success
        assert [path.read_bytes() for path in (tmp_path / "bucket" / "alma").glob("staff_*.zip")] == [before]

        # A deliberate one-run override of both uploads the smaller load.
        override = {"ops": {"staff_zip": {"config": {"allow_shrink": True, "allow_departures": True}}}}
        assert load(warehouse, tmp_path / "bucket", instance, run_config=override).success
        [replaced] = (tmp_path / "bucket" / "alma").glob("staff_*.zip")
        assert replaced.read_bytes() != before


def test_a_template_that_breaks_the_schema_uploads_nothing(tmp_path):
    templates = tmp_path / "templates"
    templates.mkdir()
    shutil.copy(MIT.folder / "staff_template.xml", templates)
    text = (MIT.folder / "student_template.xml").read_text()
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
    assert (
        not schema.passed
        and "email: Missing child element(s). Expected is one of ( description, email_types )"
        in schema.description
    )
    assert sorted(p.name for p in (tmp_path / "bucket" / "alma").glob("student_*")) == [
        "student_2020-01-01_05.00.00.zip"
    ]
    assert len(list((tmp_path / "bucket" / "alma").glob("staff_*.zip"))) == 1  # the other type is unaffected


def schema_check(result, asset):
    return next(
        c
        for c in result.get_asset_check_evaluations()
        if c.check_name == "schema" and c.asset_key.path == [asset]
    )


def test_a_template_element_the_project_schema_does_not_know_uploads_nothing(tmp_path):
    templates = tmp_path / "templates"
    templates.mkdir()
    shutil.copy(MIT.folder / "student_template.xml", templates)
    text = (MIT.folder / "staff_template.xml").read_text()
    (templates / "staff_template.xml").write_text(text.replace("<web_site_url/>", "<web_site/>"))
    warehouse = synthetic.create_warehouse(tmp_path / "dw.sqlite3", 100, 100)
    result = load(warehouse, tmp_path / "bucket", template_dir=str(templates))
    assert not result.success
    check = schema_check(result, "staff_zip")
    assert not check.passed and "web_site" in check.description
    assert check.metadata["xsd"].value == "patronload_users.xsd"
    assert not list((tmp_path / "bucket").rglob("staff_*.zip"))


def test_an_operators_alma_schema_is_validated_in_addition(tmp_path):
    warehouse = synthetic.create_warehouse(tmp_path / "dw.sqlite3", 100, 100)
    assert load(warehouse, tmp_path / "without").success
    result = load(warehouse, tmp_path / "with", alma_user_xsd=str(FIXTURES / "operator_user.xsd"))
    assert not result.success
    check = schema_check(result, "staff_zip")
    assert check.metadata["xsd"].value == "patronload_users.xsd, operator_user.xsd"
    assert "operator_user.xsd: user: The attribute … is required" in check.description
    assert not list((tmp_path / "with").rglob("*.zip"))


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


def build_staff(tmp_path, count):
    from patronload_assets.domain.load import Institution, build_zips

    rows = [dict(zip(MIT.staff.columns, row, strict=True)) for row in synthetic.staff_rows(count)]
    kept = [
        rows[p]
        for p in engine.select_patrons(
            [r["KRB_NAME_UPPERCASE"] for r in rows], MIT, duplicate_reason="d"
        ).kept
    ]
    moment = dt.datetime(2026, 11, 28, tzinfo=dt.UTC)
    return build_zips(kept, len(kept), MIT.staff, Institution.load(MIT), moment, tmp_path)


def rewrite_first_user(packaged, change):
    """The zip's one XML file with its first user parsed, changed and written back."""
    import zipfile

    with zipfile.ZipFile(packaged.path) as archive:
        document = etree.fromstring(archive.read(packaged.xml_files[0]))
    change(document[0])
    with zipfile.ZipFile(packaged.path, "w") as archive:
        archive.writestr(
            packaged.xml_files[0], etree.tostring(document, xml_declaration=True, encoding="utf-8")
        )


XSD, FILE = "patronload_users.xsd: ", "staff_2026-11-28_00.00.00.xml: "


def _drop(user, tag):
    user.remove(user.find(tag))


def _swap_names(user):
    first, last = user.find("first_name"), user.find("last_name")
    first.addprevious(last)


def _set(tag, text):
    def change(user):
        user.find(tag).text = text

    return change


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            lambda user: _drop(user, "primary_id"),
            XSD + "first_name: This element is not expected. Expected is ( primary_id )",
        ),
        (lambda user: _drop(user.find(".//email"), "email_types"), XSD + "email: Missing child"),
        (_swap_names, XSD + "first_name: This element is not expected. Expected is one of ( user_title"),
        (_set("expiry_date", ""), XSD + "expiry_date: … is not a valid value of the atomic type"),
        (_set("first_name", "x" * 256), XSD + "first_name: [facet …] The value has a length of"),
        (_set("last_name", "a\tb"), "line break or tab in last_name"),
        (_set("last_name", "a\nb"), "line break or tab in last_name"),
        (_set("last_name", "a\u2028b"), "line break or tab in last_name"),
        (lambda user: user.find("user_group").set("desc", "a\r\nb"), "line break or tab in user_group/@desc"),
        (_set("last_name", "Ok\x7fName"), "control or invisible character in last_name"),
        (_set("last_name", "a\x9bb"), "control or invisible character in last_name"),
        (_set("first_name", "\u202eenaJ"), "control or invisible character in first_name"),
        (_set("first_name", "Ja\u2066ne"), "control or invisible character in first_name"),
        (_set("last_name", "Do\u200be"), "control or invisible character in last_name"),
        (_set("last_name", "Do\u2060e"), "control or invisible character in last_name"),
        (_set("last_name", "Do\u00ade"), "control or invisible character in last_name"),
        (lambda user: user.find("user_group").set("desc", "a\u202bb"),
         "control or invisible character in user_group/@desc"),
    ],
    ids=["missing required element", "missing required child", "wrong order", "empty date", "over-long value",
         "tab in a value", "line feed in a value", "line separator in a value", "line break in an attribute",
         "DEL", "a C1 control", "a bidirectional override", "a bidirectional isolate", "a zero-width space",
         "a word joiner", "a soft hyphen", "a bidirectional embedding in an attribute"],
)  # fmt: skip
def test_the_project_schema_refuses_a_broken_user(tmp_path, change, reason):
    [packaged] = build_staff(tmp_path, 20).zips
    rewrite_first_user(packaged, change)
    outcome, inspection = checks.check_schema([packaged], checks.user_schemas())
    assert not outcome.passed
    [invalid] = inspection.invalid
    assert invalid.position == 1
    assert any(found.startswith(reason) for found in invalid.reasons), invalid.reasons
    assert outcome.metadata["users_checked"] == outcome.metadata["users_validated_by_xsd"] == packaged.patrons


def test_schema_check_parses_and_validates_every_user(tmp_path):
    result = build_staff(tmp_path, 300)
    outcome, inspection = checks.check_schema(result.zips, checks.user_schemas())
    assert outcome.passed, outcome.description
    assert outcome.metadata["users_checked"] == outcome.metadata["users_validated_by_xsd"] == result.patrons
    assert not inspection.invalid

    # A repeated identifier at the end of the file is found: every user is read.
    def repeat_first_identifier(document):
        first = document[0].find("user_identifiers/user_identifier/value").text
        document[-1].find("user_identifiers/user_identifier/value").text = first.lower()

    import zipfile

    [packaged] = result.zips
    with zipfile.ZipFile(packaged.path) as archive:
        document = etree.fromstring(archive.read(packaged.xml_files[0]))
    repeat_first_identifier(document)
    with zipfile.ZipFile(packaged.path, "w") as archive:
        archive.writestr(packaged.xml_files[0], etree.tostring(document, pretty_print=True))  # another layout
    outcome, inspection = checks.check_schema(result.zips, checks.user_schemas())
    assert not outcome.passed
    assert [(user.position, user.reasons) for user in inspection.invalid] == [
        (result.patrons, ("identifier repeated in the load",))
    ]


EMPTY_IDENTIFIER = b"<user_identifier><id_type>02</id_type><value/></user_identifier></user_identifiers>"


@pytest.mark.parametrize(
    ("damage", "kind"),
    [
        (lambda line: line.replace(b"<first_name>", b"<first_name>\x01", 1), FILE + "not well-formed"),
        (lambda line: line.replace(b"</first_name>", b"</first_nam>", 1), FILE + "not well-formed"),
        (lambda line: line.replace(b"</user_identifiers>", EMPTY_IDENTIFIER), XSD + "value: [facet …]"),
    ],
)  # fmt: skip
def test_schema_check_finds_damage_in_the_file(tmp_path, damage, kind):
    import zipfile

    [packaged] = build_staff(tmp_path, 50).zips
    with zipfile.ZipFile(packaged.path) as archive:
        lines = archive.read(packaged.xml_files[0]).split(b"\n")
    lines[5] = damage(lines[5])
    with zipfile.ZipFile(packaged.path, "w") as archive:
        archive.writestr(packaged.xml_files[0], b"\n".join(lines))
    outcome, inspection = checks.check_schema([packaged], checks.user_schemas())
    assert not outcome.passed
    found = [*inspection.file_problems, *(reason for user in inspection.invalid for reason in user.reasons)]
    assert any(problem.startswith(kind) for problem in found), found


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


@pytest.mark.parametrize(
    ("edit", "invalid"),
    [
        (lambda xml: xml.replace(b"</user>\n<user>", b"</user><!-- a comment -->\n<user>", 3), []),
        (lambda xml: xml.replace(b"<first_name>", b"<first_name><![CDATA[A</user>]]>", 1), []),
        (
            lambda xml: xml.replace(b"<last_name>", b"<last_name>x&#10;", 1),
            ["line break or tab in last_name"],
        ),
        (lambda xml: xml.replace(b"\n<user>", b"\n  \n\t<user>"), []),  # another layout, tabs between users
    ],
    ids=["comments", "CDATA holding an end tag", "a line feed by reference", "tabs between users"],
)
def test_the_schema_check_reads_any_layout_of_a_users_document(tmp_path, edit, invalid):
    import zipfile

    [packaged] = build_staff(tmp_path, 300).zips
    with zipfile.ZipFile(packaged.path) as archive:
        xml = archive.read(packaged.xml_files[0])
    with zipfile.ZipFile(packaged.path, "w") as archive:
        archive.writestr(packaged.xml_files[0], edit(xml))
    inspection = checks.inspect_users([packaged], checks.user_schemas())
    assert inspection.users == packaged.patrons and not inspection.file_problems
    assert [reason for user in inspection.invalid for reason in user.reasons] == invalid
