"""Example University's rules: warehouse rows to the values of one Alma user record.

An example, not a library: an institution that is not MIT, modeled on UC Berkeley's published
loader (BerkeleyLibrary/alma-user-load) where real institutions differ from MIT: a campus id (not a
Kerberos name) names a person, accounts expire at dates the records carry, an exclusion list is
never loaded. Each section of ``rules.md`` beside it is one block below, in the same order.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from ...domain.institution import RunContext, add_months, alma_date

# §1 Sources: the columns of the two views (sql/example/), in order.
STAFF_COLUMNS = (
    "CAMPUS_ID", "EMAIL", "FIRST_NAME", "MIDDLE_NAME", "LAST_NAME", "EMPLOYEE_TYPE",
    "DEPARTMENT_CODE", "APPOINTMENT_END_DATE", "WORK_ADDRESS", "WORK_PHONE", "BARCODE",
)  # fmt: skip
STUDENT_COLUMNS = (
    "CAMPUS_ID", "EMAIL", "FIRST_NAME", "MIDDLE_NAME", "LAST_NAME", "CAREER", "MAJOR_CODE",
    "WITHDRAWAL_DATE", "CANCELLATION_DATE", "LOCAL_ADDRESS", "LOCAL_CITY", "LOCAL_STATE",
    "LOCAL_ZIP", "PHONE", "BARCODE",
)  # fmt: skip

# §2 Who gets a record: one a campus id (an employee's and a student's are the same number), staff
# first; the ids of excluded.json never.
PERSON_KEY = "CAMPUS_ID"
REJECTED_NO_CAMPUS_ID = "rejected_missing_campus_id"

# §3 Expiry and purge
EMPLOYEE_DEFAULT_EXPIRY = (10, 31)  # without an appointment end: October 31 ...
EMPLOYEE_DEFAULT_YEARS = 2  # ... two years after the run's year
TERM_ENDS = ((5, 31), (8, 31), (12, 31))  # a student without an end date: the next term end ...
TERM_END_AT_LEAST_DAYS = 30  # ... at least this many days after the run
PURGE_MONTHS_AFTER_EXPIRY = 12
DATE_UNREADABLE = "expiry_date_unreadable"  # counted: a date column that is not YYYY-MM-DD

# §4 Staff and §5 students
STAFF_USER_GROUPS = {"FACULTY": "FACULTY", "STAFF": "STAFF", "ACADEMIC": "ACADEMIC"}
STAFF_DEFAULT_USER_GROUP = "STAFF"
STUDENT_USER_GROUPS = {"UGRD": "UNDERGRAD", "GRAD": "GRAD", "LAW": "GRAD"}  # another career: none
UNKNOWN_DEPARTMENT = "UNKNOWN"

# §6 Identifiers: the campus id (also the primary id) and the barcode, in this order.
IDENTIFIER_FIELDS = ("campus_id", "barcode")
IDENTIFIER_COLUMNS = ("CAMPUS_ID", "BARCODE")


# §3 ---------------------------------------------------------------------------------------------


def read_date(text: str | None, context: RunContext) -> dt.date | None:
    """A warehouse date (``YYYY-MM-DD``, a time after it ignored); an unreadable one is counted."""
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text[:10])
    except ValueError:
        context.counts[DATE_UNREADABLE] += 1
        return None


def employee_expiry(end: dt.date | None, run_date: dt.date) -> dt.date:
    month, day = EMPLOYEE_DEFAULT_EXPIRY
    return end or dt.date(run_date.year + EMPLOYEE_DEFAULT_YEARS, month, day)


def student_expiry(withdrawal: dt.date | None, cancellation: dt.date | None, run_date: dt.date) -> dt.date:
    ended = [day for day in (withdrawal, cancellation) if day is not None]
    if ended:
        return min(ended)
    earliest = run_date + dt.timedelta(days=TERM_END_AT_LEAST_DAYS)
    for year in (earliest.year, earliest.year + 1):
        for month, day in TERM_ENDS:
            if dt.date(year, month, day) >= earliest:
                return dt.date(year, month, day)
    raise AssertionError("TERM_ENDS is empty")


def dates(expiry: dt.date) -> dict[str, str]:
    purge = add_months(expiry, PURGE_MONTHS_AFTER_EXPIRY)
    return {"expiry_date": alma_date(expiry), "purge_date": alma_date(purge)}


# §6 ---------------------------------------------------------------------------------------------


def identifiers(row: Mapping[str, str | None]) -> dict[str, str | None]:
    return {"campus_id": row["CAMPUS_ID"], "barcode": row["BARCODE"]}


def common_fields(row: Mapping[str, str | None]) -> dict[str, str | None]:
    return {
        "primary_id": row["CAMPUS_ID"],
        "first_name": row["FIRST_NAME"] or "",
        "middle_name": row["MIDDLE_NAME"] or "",
        "last_name": row["LAST_NAME"] or "",
        "email": row["EMAIL"],
        **identifiers(row),
    }


# §4 ---------------------------------------------------------------------------------------------


def staff_fields(row: Mapping[str, str | None], context: RunContext) -> dict[str, str | None]:
    fields = common_fields(row)
    end = read_date(row["APPOINTMENT_END_DATE"], context)
    fields.update(dates(employee_expiry(end, context.run_date)))
    fields["user_group"] = STAFF_USER_GROUPS.get(row["EMPLOYEE_TYPE"] or "", STAFF_DEFAULT_USER_GROUP)
    fields["address_line1"] = row["WORK_ADDRESS"] or ""
    fields["phone"] = row["WORK_PHONE"]
    fields["statistic_category"] = context.category(
        row["DEPARTMENT_CODE"], context.staff_departments, UNKNOWN_DEPARTMENT
    )
    return fields


# §5 ---------------------------------------------------------------------------------------------


def student_fields(row: Mapping[str, str | None], context: RunContext) -> dict[str, str | None]:
    fields = common_fields(row)
    withdrawal = read_date(row["WITHDRAWAL_DATE"], context)
    cancellation = read_date(row["CANCELLATION_DATE"], context)
    fields.update(dates(student_expiry(withdrawal, cancellation, context.run_date)))
    fields["user_group"] = STUDENT_USER_GROUPS.get(row["CAREER"] or "")  # None: counted, warned
    fields["address_line1"] = row["LOCAL_ADDRESS"] or ""
    fields["city"] = row["LOCAL_CITY"] or ""
    fields["state_province"] = row["LOCAL_STATE"] or ""
    fields["postal_code"] = row["LOCAL_ZIP"] or ""
    fields["phone"] = row["PHONE"]
    fields["statistic_category"] = context.category(
        row["MAJOR_CODE"], context.student_departments, UNKNOWN_DEPARTMENT
    )
    return fields
