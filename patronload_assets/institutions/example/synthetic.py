"""Example University's embedded warehouse: synthetic, seeded, so every run sees the same people.

The rows exercise each rule of rules.md: student employees (one campus id in both views), rows
without a campus id and repeated ones, the excluded ids, appointment ends in the past, the future
and unreadable, withdrawals and cancellations, careers without a user group, unknown departments.
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

from ..embedded import write_views
from .rules import STAFF_COLUMNS, STUDENT_COLUMNS

STAFF_VIEW, STUDENT_VIEW = "HR_LIBRARY_EMPLOYEE", "SIS_LIBRARY_STUDENT"
DEFAULT_STAFF, DEFAULT_STUDENTS, DEFAULT_SEED = 2_000, 3_000, 20_261_205
EXCLUDED_IN_VIEWS = ("99999990", "99999991")  # two of excluded.json's ids, one in each view

FIRST = ["Ada", "Grace", "Alan", "Katherine", "José", "Zoë", "Wei", "Amara", "Lars", "Priya"]
LAST = ["Lovelace", "Hopper", "Turing", "Johnson", "García", "Nguyễn", "Chen", "Okafor", "Berg", "Patel"]
EMPLOYEE_TYPES = ["STAFF"] * 6 + ["FACULTY"] * 3 + ["ACADEMIC", "CONTRACTOR"]
DEPARTMENTS = ["D100", "D200", "D300", "D400", "D500", "D999"]
CAREERS = ["UGRD"] * 12 + ["GRAD"] * 6 + ["LAW", "VISITING"]
MAJORS = ["CS", "EECS", "HIST", "MATH", "LAW", "UNDECLARED", "XYZ"]
BASE_DAY = dt.date(2026, 12, 5)


def _campus_id(index: int) -> str:
    return f"{10_000_000 + index:08d}"


def _person(rng: random.Random, index: int) -> dict[str, str | None]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    return {
        "CAMPUS_ID": _campus_id(index) if rng.random() > 0.01 else None,
        "EMAIL": f"{first[0].lower()}{index}@example.edu" if rng.random() > 0.03 else None,
        "FIRST_NAME": first,
        "MIDDLE_NAME": rng.choice(["", "M.", None]),
        "LAST_NAME": last,
        "BARCODE": f"2{index:013d}" if rng.random() > 0.1 else None,
    }


def _day(rng: random.Random, earliest: int, latest: int) -> str:
    return (BASE_DAY + dt.timedelta(days=rng.randint(earliest, latest))).isoformat()


def staff_rows(count: int = DEFAULT_STAFF, seed: int = DEFAULT_SEED) -> list[tuple]:
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        row = _person(rng, index)
        end = rng.random()
        row.update(
            EMPLOYEE_TYPE=rng.choice(EMPLOYEE_TYPES),
            DEPARTMENT_CODE=rng.choice(DEPARTMENTS) if rng.random() > 0.02 else None,
            APPOINTMENT_END_DATE=None if end < 0.6 else "31/12/2027" if end < 0.62 else _day(rng, -30, 900),
            WORK_ADDRESS=f"{rng.randint(1, 400)} Campus Hall" if rng.random() > 0.1 else None,
            WORK_PHONE=f"510-555-{rng.randint(0, 9999):04d}" if rng.random() > 0.2 else None,
        )
        rows.append(row)
    rows += [dict(rows[position]) for position in range(0, count, 97)]  # a person's second row
    if rows:
        rows[-1] = dict(rows[-1], CAMPUS_ID=EXCLUDED_IN_VIEWS[0])
    return [tuple(row[column] for column in STAFF_COLUMNS) for row in rows]


def student_rows(
    count: int = DEFAULT_STUDENTS, staff: int = DEFAULT_STAFF, seed: int = DEFAULT_SEED
) -> list[tuple]:
    rng = random.Random(seed + 1)
    rows = []
    for number in range(count):
        # one in twenty students is also an employee: the same campus id in both views
        index = rng.randrange(staff) if staff and rng.random() < 0.05 else staff + number
        row = _person(rng, index)
        left = rng.random()
        row.update(
            CAREER=rng.choice(CAREERS),
            MAJOR_CODE=rng.choice(MAJORS) if rng.random() > 0.02 else None,
            WITHDRAWAL_DATE=_day(rng, -60, 60) if left < 0.03 else None,
            CANCELLATION_DATE=_day(rng, -10, 120) if 0.03 <= left < 0.05 else None,
            LOCAL_ADDRESS=f"{rng.randint(1, 3000)} College Ave" if rng.random() > 0.05 else None,
            LOCAL_CITY="Berkeley",
            LOCAL_STATE="CA",
            LOCAL_ZIP=f"947{rng.randint(0, 99):02d}",
            PHONE=f"510-555-{rng.randint(0, 9999):04d}" if rng.random() > 0.3 else None,
        )
        rows.append(row)
    rows += [dict(rows[position]) for position in range(0, count, 101)]
    if rows:
        rows[-1] = dict(rows[-1], CAMPUS_ID=EXCLUDED_IN_VIEWS[1])
    return [tuple(row[column] for column in STUDENT_COLUMNS) for row in rows]


def create_warehouse(
    path: str | Path, staff: int = DEFAULT_STAFF, students: int = DEFAULT_STUDENTS, seed: int = DEFAULT_SEED
) -> Path:
    """A SQLite file with the two views as tables, filled with synthetic patrons."""
    return write_views(
        path,
        (
            (STAFF_VIEW, STAFF_COLUMNS, staff_rows(staff, seed)),
            (STUDENT_VIEW, STUDENT_COLUMNS, student_rows(students, staff, seed)),
        ),
    )
