"""The patron rules: warehouse rows to the values of one Alma user record.

Each section of ``docs/patron-rules.md`` is one block below, in the same order. What is constant in
every record (record type, roles, segment types, the ``@MIT.EDU`` suffix) lives in the
institution's XML templates; the department tables are JSON data. This module decides only what
varies per patron.

A value of ``None`` in the returned fields means "leave the element out" (for a segment such as
an email or identifier, the whole segment); ``""`` means an empty element.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Mapping

from ...domain.institution import RunContext, add_months, alma_date

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

# §2 Who gets a record: one record a person, by Kerberos name, staff first (the engine selects:
# domain/institution.py); a row without a Kerberos name is left out, counted under this name.
PERSON_KEY = "KRB_NAME_UPPERCASE"
REJECTED_NO_KERBEROS_NAME = "rejected_missing_kerberos_name"

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

# Identifiers: 02 the MIT ID, 01 the barcode (§3); the engine keeps each value to its first user.
IDENTIFIER_FIELDS = ("mit_id", "barcode")
IDENTIFIER_COLUMNS = ("MIT_ID", "LIBRARY_ID")


# §3 common fields -------------------------------------------------------------------------------


@functools.cache
def expiry_and_purge(run_date: dt.date) -> tuple[str, str]:
    """The expiry and purge dates of every record of a run."""
    return alma_date(add_months(run_date, EXPIRY_MONTHS)), alma_date(add_months(run_date, PURGE_MONTHS))


def preferred_part(preferred: str | None, legal: str | None) -> str:
    """The preferred name part, only when present and not the legal one ignoring case."""
    if preferred is None or (legal is not None and preferred.casefold() == legal.casefold()):
        return ""
    return preferred


def identifiers(row: Mapping[str, str | None]) -> dict[str, str | None]:
    """Identifier 02 (MIT ID) and 01 (barcode, unless the literal ``NONE``)."""
    barcode = row["LIBRARY_ID"]
    return {"mit_id": row["MIT_ID"], "barcode": None if barcode == NO_BARCODE else barcode}


def common_fields(row: Mapping[str, str | None], context: RunContext) -> dict[str, str | None]:
    first, middle, last = row["LEGAL_FIRST_NAME"], row["LEGAL_MIDDLE_NAME"], row["LEGAL_LAST_NAME"]
    expiry, purge = expiry_and_purge(context.run_date)
    return {
        "kerberos_name": row["KRB_NAME_UPPERCASE"],
        "first_name": first or "",
        "middle_name": middle or "",
        "last_name": last or "",
        "pref_first_name": preferred_part(row["PREFERRED_FIRST_NAME"], first),
        "pref_middle_name": preferred_part(row["PREFERRED_MIDDLE_NAME"], middle),
        "pref_last_name": preferred_part(row["PREFERRED_LAST_NAME"], last),
        "expiry_date": expiry,
        "purge_date": purge,
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
    fields["user_group"] = student_user_group(row["STUDENT_YEAR"], department)  # None: counted, warned
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
