"""The patron rules: warehouse rows to the values of one Alma user record.

Each section of ``docs/patron-rules.md`` is one block below, in the same order. What is constant in
every record (record type, roles, segment types, the ``@MIT.EDU`` suffix) lives in the
institution's XML templates; the department tables are JSON data. This module decides only what
varies per patron.

A value of ``None`` in the returned fields means "leave the element out" (for a segment such as
an email or identifier, the whole segment); ``""`` means an empty element.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Set
from dataclasses import dataclass, field

from ...domain.values import clean_row, kerberos_key, to_text

# §1 Sources: the columns of the two warehouse views, in order.
STAFF_COLUMNS = (
    "MIT_ID", "EMAIL_ADDRESS", "KRB_NAME_UPPERCASE", "LIBRARY_ID",
    "PREFERRED_FIRST_NAME", "PREFERRED_MIDDLE_NAME", "PREFERRED_LAST_NAME",
    "LEGAL_FIRST_NAME", "LEGAL_MIDDLE_NAME", "LEGAL_LAST_NAME",
    "OFFICE_ADDRESS", "OFFICE_PHONE", "APPOINTMENT_END_DATE",
    "LIBRARY_PERSON_TYPE_CODE", "LIBRARY_PERSON_TYPE", "ORG_UNIT_ID", "ORG_UNIT_TITLE",
    "POSITION_TITLE", "DIRECTORY_TITLE",
)  # fmt: skip
STUDENT_COLUMNS = (
    "MIT_ID", "EMAIL_ADDRESS", "KRB_NAME_UPPERCASE", "LIBRARY_ID",
    "PREFERRED_FIRST_NAME", "PREFERRED_MIDDLE_NAME", "PREFERRED_LAST_NAME",
    "LEGAL_FIRST_NAME", "LEGAL_MIDDLE_NAME", "LEGAL_LAST_NAME",
    "TERM_STREET1", "TERM_STREET2", "TERM_CITY", "TERM_STATE", "TERM_ZIP",
    "TERM_PHONE1", "TERM_PHONE2", "OFFICE_PHONE", "STUDENT_YEAR", "HOME_DEPARTMENT",
)  # fmt: skip

# §2 Who gets a record: reasons a row is left out, as counted in the run's metadata.
REJECTED_NO_KERBEROS_NAME = "rejected_missing_kerberos_name"
DROPPED_DUPLICATE_STAFF = "dropped_duplicate_staff"
DROPPED_STUDENT_IS_STAFF = "dropped_student_already_staff"
DROPPED_DUPLICATE_STUDENT = "dropped_duplicate_student"
STAFF_LEFT_OUT = (REJECTED_NO_KERBEROS_NAME, DROPPED_DUPLICATE_STAFF)
STUDENT_LEFT_OUT = (REJECTED_NO_KERBEROS_NAME, DROPPED_STUDENT_IS_STAFF, DROPPED_DUPLICATE_STUDENT)

# §3 Common fields
EXPIRY_MONTHS = 6  # expiry_date: run date (UTC) + 6 calendar months
PURGE_MONTHS = 30  # purge_date: run date (UTC) + 2 years 6 months
NO_BARCODE = "NONE"  # the warehouse's word for "this person has no barcode"

# §4 / §5
NO_ADDRESS = "NO ADDRESS ON FILE IN DATA WAREHOUSE"
STAFF_UNKNOWN_DEPARTMENT = "ZQ"
STUDENT_UNKNOWN_DEPARTMENT = "ZZ"
UNDERGRADUATE, GRADUATE, CROSS_REGISTERED = "31", "32", "54"
UNDERGRADUATE_YEARS = frozenset("1234Uu")
GRADUATE_YEARS = frozenset("Gg")
CROSS_REGISTERED_DEPARTMENTS = frozenset({"NIU", "NIV", "NIW", "NIT", "NIR", "NIH"})

# Counted in metadata; the codes themselves are listed in RunContext.unknown_departments.
IDENTIFIER_FIELDS = ("mit_id", "barcode")
IDENTIFIER_COLUMNS = ("MIT_ID", "LIBRARY_ID")
IDENTIFIER_REPEATED = "identifier_left_out_repeated"
IDENTIFIER_USED_BY_STAFF = "identifier_left_out_used_by_staff"
DEPARTMENT_MISSING = "department_missing"
DEPARTMENT_UNKNOWN = "department_unknown"
STUDENT_WITHOUT_USER_GROUP = "student_without_user_group"


# §2 ---------------------------------------------------------------------------------------------


@dataclass
class Selection:
    """Positions of the rows that get a record, and the count of those left out by reason."""

    kept: list[int]
    left_out: Counter


def select_patrons(
    kerberos_names: Iterable[object],
    *,
    already_loaded: Set[str] = frozenset(),
    duplicate_reason: str,
) -> Selection:
    """One row per Kerberos name (the rows' KRB_NAME_UPPERCASE, in order), first row wins;
    names in ``already_loaded`` are left out.

    Staff are selected with nothing already loaded; students with the staff names, so that
    student employees load once, as staff.
    """
    kept: list[int] = []
    left_out: Counter = Counter()
    seen: set[str] = set()
    for position, name in enumerate(kerberos_names):
        key = kerberos_key(name)
        if key is None:
            left_out[REJECTED_NO_KERBEROS_NAME] += 1
        elif key in already_loaded:
            left_out[DROPPED_STUDENT_IS_STAFF] += 1
        elif key in seen:
            left_out[duplicate_reason] += 1
        else:
            seen.add(key)
            kept.append(position)
    return Selection(kept, left_out)


# §3 common fields -------------------------------------------------------------------------------


def add_months(day: dt.date, months: int) -> dt.date:
    """``day`` plus calendar months, clamped to the month's end (Aug 31 + 6 -> Feb 28/29)."""
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def alma_date(day: dt.date) -> str:
    return f"{day.isoformat()}Z"


_INTEGRAL_TEXT = re.compile(r"\d+\.0+")


@dataclass
class RunContext:
    """What every record of one run shares, and what the run learns while building."""

    run_date: dt.date
    staff_departments: Mapping[str, str]
    student_departments: Mapping[str, str]
    counts: Counter = field(default_factory=Counter)
    unknown_departments: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.expiry_date = alma_date(add_months(self.run_date, EXPIRY_MONTHS))
        self.purge_date = alma_date(add_months(self.run_date, PURGE_MONTHS))

    def category(self, code: str | None, table: Mapping[str, str], fallback: str) -> str:
        """The statistical category of a department code; ``fallback`` when missing or unknown."""
        if code is None:
            self.counts[DEPARTMENT_MISSING] += 1
            return fallback
        found = table.get(code)
        if found is None and _INTEGRAL_TEXT.fullmatch(code):  # "10000948.0": a number stored as text
            found = table.get(code.split(".")[0])
        if found is None:
            self.counts[DEPARTMENT_UNKNOWN] += 1
            self.unknown_departments[code] += 1
            return fallback
        return found


def preferred_part(preferred: str | None, legal: str | None) -> str:
    """The preferred name part, only when present and not the legal one ignoring case."""
    if preferred is None or (legal is not None and preferred.casefold() == legal.casefold()):
        return ""
    return preferred


def identifiers(row: Mapping[str, str | None]) -> dict[str, str | None]:
    """Identifier 02 (MIT ID) and 01 (barcode, unless the literal ``NONE``)."""
    barcode = row["LIBRARY_ID"]
    return {"mit_id": row["MIT_ID"], "barcode": None if barcode == NO_BARCODE else barcode}


def claim_identifiers(
    fields: dict[str, str | None], claimed: set[str], counts: Counter, taken: Set[str] = frozenset()
) -> None:
    """Leave out an identifier whose value an earlier identifier (of this user or another already
    written) has, or one of ``taken`` (a staff record's, when students are built): Alma refuses a
    repeated identifier. The user is kept."""
    for name in IDENTIFIER_FIELDS:
        value = fields[name]
        if value is None:
            continue
        key = value.upper()
        if key in taken:
            fields[name] = None
            counts[IDENTIFIER_USED_BY_STAFF] += 1
        elif key in claimed:
            fields[name] = None
            counts[IDENTIFIER_REPEATED] += 1
        else:
            claimed.add(key)


def claimed_identifiers(rows: Iterable[Mapping[str, object]]) -> set[str]:
    """The identifiers the given rows will carry: what staff already hold when students are built.
    Only the identifier columns are cleaned: a value's cleaning depends on that value alone."""
    claimed: set[str] = set()
    for row in rows:
        for value in identifiers({column: to_text(row[column]) for column in IDENTIFIER_COLUMNS}).values():
            if value is not None:
                claimed.add(value.upper())
    return claimed


def common_fields(row: Mapping[str, str | None], context: RunContext) -> dict[str, str | None]:
    first, middle, last = row["LEGAL_FIRST_NAME"], row["LEGAL_MIDDLE_NAME"], row["LEGAL_LAST_NAME"]
    return {
        "kerberos_name": row["KRB_NAME_UPPERCASE"],
        "first_name": first or "",
        "middle_name": middle or "",
        "last_name": last or "",
        "pref_first_name": preferred_part(row["PREFERRED_FIRST_NAME"], first),
        "pref_middle_name": preferred_part(row["PREFERRED_MIDDLE_NAME"], middle),
        "pref_last_name": preferred_part(row["PREFERRED_LAST_NAME"], last),
        "expiry_date": context.expiry_date,
        "purge_date": context.purge_date,
        "email": row["EMAIL_ADDRESS"],
        **identifiers(row),
    }


# §4 staff ---------------------------------------------------------------------------------------


def staff_fields(row: Mapping[str, str | None], context: RunContext) -> dict[str, str | None]:
    fields = common_fields(row, context)
    fields["user_group"] = row["LIBRARY_PERSON_TYPE_CODE"]
    fields["user_group_desc"] = row["LIBRARY_PERSON_TYPE"] or ""
    fields["address_line1"] = row["OFFICE_ADDRESS"] or NO_ADDRESS
    fields["office_phone"] = format_phone(row["OFFICE_PHONE"])
    fields["statistic_category"] = context.category(
        row["ORG_UNIT_ID"], context.staff_departments, STAFF_UNKNOWN_DEPARTMENT
    )
    fields["statistic_category_desc"] = row["ORG_UNIT_TITLE"] or "Unknown"
    return fields


# §5 students ------------------------------------------------------------------------------------


def student_user_group(year: str | None, department: str | None) -> str | None:
    if department in CROSS_REGISTERED_DEPARTMENTS:
        return CROSS_REGISTERED
    if year in UNDERGRADUATE_YEARS:
        return UNDERGRADUATE
    if year in GRADUATE_YEARS:
        return GRADUATE
    return None


def student_fields(row: Mapping[str, str | None], context: RunContext) -> dict[str, str | None]:
    fields = common_fields(row, context)
    office, term1, term2 = row["OFFICE_PHONE"], row["TERM_PHONE1"], row["TERM_PHONE2"]
    fields["address_line1"] = row["TERM_STREET1"] or NO_ADDRESS
    fields["address_line3"] = row["TERM_STREET2"] or ""
    fields["city"] = row["TERM_CITY"] or ""
    fields["state_province"] = row["TERM_STATE"] or ""
    fields["postal_code"] = row["TERM_ZIP"] or ""
    fields["phone_preferred"] = format_phone(office or term1 or term2)
    fields["phone_home"] = format_phone(term1) if office else None
    department = row["HOME_DEPARTMENT"]
    fields["user_group"] = student_user_group(row["STUDENT_YEAR"], department)
    if fields["user_group"] is None:
        context.counts[STUDENT_WITHOUT_USER_GROUP] += 1
    fields["statistic_category"] = context.category(
        department, context.student_departments, STUDENT_UNKNOWN_DEPARTMENT
    )
    return fields


# §6 phone numbers (reference behaviour) ---------------------------------------------------------

_TEN_DIGITS = re.compile(r"(\d{3})(\d{3})(\d{4})")


def format_phone(number: str | None) -> str | None:
    """Every run of ten digits, left to right, as ``ddd-ddd-dddd``; the rest kept as it is."""
    if number is None or len(number) < 10:
        return number
    if len(number) == 10 and number.isdecimal():  # the usual shape; isdecimal is what \d matches
        return f"{number[:3]}-{number[3:6]}-{number[6:]}"
    return _TEN_DIGITS.sub(_dashed, number)


def _dashed(match: re.Match) -> str:
    return f"{match[1]}-{match[2]}-{match[3]}"


# Building ---------------------------------------------------------------------------------------


def patron_fields(
    rows: Iterable[Mapping[str, object]],
    fields_of,
    context: RunContext,
    taken_identifiers: Set[str] = frozenset(),
) -> Iterator[dict[str, str | None]]:
    """Clean each selected row (counting repairs in ``context.counts``), derive its fields and
    leave out identifiers already used in this file or in ``taken_identifiers`` (the staff file's,
    for students)."""
    counts = context.counts
    claimed: set[str] = set()
    for row in rows:
        fields = fields_of(clean_row(row, counts), context)
        claim_identifiers(fields, claimed, counts, taken_identifiers)
        yield fields
