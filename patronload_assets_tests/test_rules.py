"""docs/patron-rules.md, section by section, on the domain functions directly."""

import datetime as dt
import re
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patronload_assets.domain import institution as engine
from patronload_assets.domain.values import clean_row
from patronload_assets.institutions.mit import RULES as MIT
from patronload_assets.institutions.mit import rules

from .conftest import staff_row, student_row

STAFF_DEPARTMENTS = {"10000948": "NK"}
STUDENT_DEPARTMENTS = {"6": "UH", "NIU": "TB", "NONE": "VB"}


def context(run_date=dt.date(2026, 11, 28)):
    return engine.RunContext(run_date, STAFF_DEPARTMENTS, STUDENT_DEPARTMENTS)


# §1 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", [None, "", "   ", "\t\n"])
def test_null_empty_and_whitespace_all_mean_missing(missing):
    fields = rules.staff_fields(staff_row(EMAIL_ADDRESS=missing, MIT_ID=missing), context())
    assert fields["email"] is None
    assert fields["mit_id"] is None


def test_values_are_trimmed():
    fields = rules.staff_fields(staff_row(LEGAL_FIRST_NAME="  Jane ", MIT_ID=" 912345678 "), context())
    assert fields["first_name"] == "Jane"
    assert fields["mit_id"] == "912345678"


# §2 -------------------------------------------------------------------------------------------


def test_first_staff_row_wins_and_missing_kerberos_names_are_rejected():
    selection = engine.select_patrons(
        ["AB", None, "ab", "  ", "CD", "AB"], MIT, duplicate_reason=engine.DROPPED_DUPLICATE_STAFF
    )
    assert selection.kept == [0, 4]
    assert selection.left_out == {
        rules.REJECTED_NO_KERBEROS_NAME: 2,
        engine.DROPPED_DUPLICATE_STAFF: 2,
    }


def test_student_employees_load_once_as_staff():
    selection = engine.select_patrons(
        ["STAFFER", "staffer", "NEW", "NEW", ""],
        MIT,
        already_loaded={"STAFFER"},
        duplicate_reason=engine.DROPPED_DUPLICATE_STUDENT,
    )
    assert selection.kept == [2]
    assert selection.left_out == {
        engine.DROPPED_STUDENT_IS_STAFF: 2,
        engine.DROPPED_DUPLICATE_STUDENT: 1,
        rules.REJECTED_NO_KERBEROS_NAME: 1,
    }


# §3 -------------------------------------------------------------------------------------------


def test_legal_names_and_preferred_names_only_when_they_differ_ignoring_case():
    fields = rules.staff_fields(
        staff_row(
            LEGAL_FIRST_NAME="Jane",
            PREFERRED_FIRST_NAME="JANE",
            LEGAL_MIDDLE_NAME=None,
            PREFERRED_MIDDLE_NAME="Q",
            LEGAL_LAST_NAME="Doe",
            PREFERRED_LAST_NAME=" Smith ",
        ),
        context(),
    )
    assert (fields["first_name"], fields["middle_name"], fields["last_name"]) == ("Jane", "", "Doe")
    assert fields["pref_first_name"] == ""
    assert fields["pref_middle_name"] == "Q"
    assert fields["pref_last_name"] == "Smith"


@pytest.mark.parametrize(
    ("run_date", "expiry", "purge"),
    [
        (dt.date(2026, 11, 28), "2027-05-28Z", "2029-05-28Z"),
        (dt.date(2026, 8, 31), "2027-02-28Z", "2029-02-28Z"),
        (dt.date(2027, 8, 31), "2028-02-29Z", "2030-02-28Z"),
        (dt.date(2025, 12, 31), "2026-06-30Z", "2028-06-30Z"),
        (dt.date(2026, 7, 15), "2027-01-15Z", "2029-01-15Z"),
    ],
)
def test_expiry_six_months_and_purge_thirty_months_with_month_end_clamped(run_date, expiry, purge):
    fields = rules.staff_fields(staff_row(), context(run_date))
    assert (fields["expiry_date"], fields["purge_date"]) == (expiry, purge)


def test_kerberos_name_email_and_identifiers():
    fields = rules.staff_fields(
        staff_row(EMAIL_ADDRESS="jdoe@example.edu", MIT_ID="912345678", LIBRARY_ID="39080012"),
        context(),
    )
    assert fields["kerberos_name"] == "JDOE"
    assert fields["email"] == "jdoe@example.edu"
    assert (fields["mit_id"], fields["barcode"]) == ("912345678", "39080012")


@pytest.mark.parametrize("barcode", ["NONE", None, "  "])
def test_barcode_none_or_missing_leaves_the_identifier_out(barcode):
    assert rules.staff_fields(staff_row(LIBRARY_ID=barcode), context())["barcode"] is None


def test_the_identifiers_staff_hold_are_each_value_cleaned_alone_in_upper_case():
    """What students may not take: every identifier the staff rows carry (as the rules clean and
    claim them, row by row), whatever else a row holds."""
    raw = [
        {"KRB_NAME_UPPERCASE": "A", "MIT_ID": " 9\u200b12 ", "LIBRARY_ID": "NONE", "POSITION_TITLE": "a\x01"},
        {"KRB_NAME_UPPERCASE": "B", "MIT_ID": 12345.0, "LIBRARY_ID": " x\ty  "},
        {"KRB_NAME_UPPERCASE": "C", "MIT_ID": None, "LIBRARY_ID": b"abc"},
        {"KRB_NAME_UPPERCASE": "D", "MIT_ID": "912", "LIBRARY_ID": "  "},  # 912 again: one key
    ]
    claimed_row_by_row: set[str] = set()
    for row in raw:
        engine.claim_identifiers(
            rules.identifiers(clean_row(row)), MIT.identifier_fields, claimed_row_by_row, Counter()
        )
    assert engine.claimed_identifiers(raw, MIT) == claimed_row_by_row == {"912", "12345", "X Y", "ABC"}


# §4 -------------------------------------------------------------------------------------------


def test_staff_fields():
    run = context()
    fields = rules.staff_fields(
        staff_row(
            LIBRARY_PERSON_TYPE_CODE="01",
            LIBRARY_PERSON_TYPE="Faculty",
            OFFICE_ADDRESS="77-123",
            OFFICE_PHONE="6172531000",
            ORG_UNIT_ID="10000948",
            ORG_UNIT_TITLE="Libraries",
        ),
        run,
    )
    assert (fields["user_group"], fields["user_group_desc"]) == ("01", "Faculty")
    assert fields["address_line1"] == "77-123"
    assert fields["office_phone"] == "617-253-1000"
    assert (fields["statistic_category"], fields["statistic_category_desc"]) == ("NK", "Libraries")
    assert not run.unknown_departments


def test_staff_defaults_when_missing_or_unknown():
    run = context()
    fields = rules.staff_fields(staff_row(ORG_UNIT_ID="99999999"), run)
    assert fields["user_group"] is None
    assert fields["address_line1"] == rules.NO_ADDRESS
    assert fields["office_phone"] is None
    assert (fields["statistic_category"], fields["statistic_category_desc"]) == ("ZQ", "Unknown")
    assert run.unknown_departments == {"99999999": 1}
    rules.staff_fields(staff_row(), run)
    assert run.counts[engine.DEPARTMENT_MISSING] == 1


# §5 -------------------------------------------------------------------------------------------


def test_student_address():
    fields = rules.student_fields(
        student_row(
            TERM_STREET1="1 Main St",
            TERM_STREET2="Apt 3",
            TERM_CITY="Cambridge",
            TERM_STATE="MA",
            TERM_ZIP="02139",
        ),
        context(),
    )
    assert [
        fields[name] for name in ("address_line1", "address_line3", "city", "state_province", "postal_code")
    ] == [
        "1 Main St",
        "Apt 3",
        "Cambridge",
        "MA",
        "02139",
    ]
    assert rules.student_fields(student_row(), context())["address_line1"] == rules.NO_ADDRESS


@pytest.mark.parametrize(
    ("office", "term1", "term2", "preferred", "home"),
    [
        ("6170000001", "6170000002", "6170000003", "617-000-0001", "617-000-0002"),
        ("6170000001", None, "6170000003", "617-000-0001", None),
        (None, "6170000002", "6170000003", "617-000-0002", None),
        (None, None, "6170000003", "617-000-0003", None),
        (None, None, None, None, None),
    ],
)
def test_student_phones(office, term1, term2, preferred, home):
    fields = rules.student_fields(
        student_row(OFFICE_PHONE=office, TERM_PHONE1=term1, TERM_PHONE2=term2), context()
    )
    assert (fields["phone_preferred"], fields["phone_home"]) == (preferred, home)


@pytest.mark.parametrize(
    ("year", "department", "group"),
    [
        *[(year, "6", "31") for year in "1234Uu"],
        ("G", "6", "32"),
        ("g", None, "32"),
        ("G", "NIU", "54"),
        ("1", "NIH", "54"),
        (None, "NIT", "54"),
        *[(None, code, "54") for code in ("NIV", "NIW", "NIR")],
        ("X", "6", None),
        (None, None, None),
        ("5", "6", None),
    ],
)
def test_student_user_group(year, department, group):
    fields = rules.student_fields(student_row(STUDENT_YEAR=year, HOME_DEPARTMENT=department), context())
    assert fields["user_group"] == group


@pytest.mark.parametrize(
    ("department", "category"), [("6", "UH"), ("NONE", "VB"), ("ZZZ", "ZZ"), (None, "ZZ")]
)
def test_student_statistic_category(department, category):
    run = context()
    assert (
        rules.student_fields(student_row(HOME_DEPARTMENT=department), run)["statistic_category"] == category
    )
    assert list(run.unknown_departments) == (["ZZZ"] if department == "ZZZ" else [])


# §6 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "formatted"),
    [
        ("6172531000", "617-253-1000"),
        ("123456789012", "123-456-789012"),
        ("+1 6172531000", "+1 617-253-1000"),
        ("(617) 253-1000", "(617) 253-1000"),
        ("617-253-1000", "617-253-1000"),
        ("x31000", "x31000"),
        ("61725310", "61725310"),
        ("6172531000 / 6172532000", "617-253-1000 / 617-253-2000"),
    ],
)
def test_phone_numbers(number, formatted):
    assert rules.format_phone(number) == formatted


@given(st.text(alphabet=st.sampled_from("0123456789 +-()x٦²"), max_size=30))
def test_phone_numbers_match_the_reference_expression(number):
    """Whatever shortcut format_phone takes, its result is the reference's regular expression's."""
    assert rules.format_phone(number) == re.sub(r"(\d{3})(\d{3})(\d{4})", r"\1-\2-\3", number)
