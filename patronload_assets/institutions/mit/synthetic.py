"""Synthetic patrons for the embedded warehouse: seeded, so every run sees the same people.

The rows exercise every rule of docs/patron-rules.md: student employees, duplicate and missing
Kerberos names, ``NONE`` barcodes, unknown departments, missing phones and addresses, preferred
names differing only in case, phone numbers in every shape the warehouse holds.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

from ...domain.departments import load_department_table
from ..embedded import write_views
from .rules import STAFF_COLUMNS, STUDENT_COLUMNS

INSTITUTION_DIR = Path(__file__).resolve().parent

STAFF_VIEW, STUDENT_VIEW = "LIBRARY_EMPLOYEE", "LIBRARY_STUDENT"
DEFAULT_STAFF, DEFAULT_STUDENTS, DEFAULT_SEED = 2_000, 3_000, 20_261_128

FIRST = [
    "Ada",
    "Grace",
    "Alan",
    "Katherine",
    "José",
    "Zoë",
    "Wei",
    "Amara",
    "Lars",
    "Priya",
    "Mohammed",
    "Olga",
    "Kenji",
    "Siobhán",
    "Tomás",
    "Yara",
    "Ngozi",
    "Émile",
    "Hana",
    "Ivan",
]
LAST = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Johnson",
    "García",
    "Nguyễn",
    "Chen",
    "Okafor",
    "Berg",
    "Patel",
    "Haddad",
    "Petrova",
    "Sato",
    "O'Brien",
    "Müller",
    "Silva",
    "Adeyemi",
    "Dubois",
    "Kim",
    "Novak",
]
PHONES = [
    "6172531000",
    "617-253-1000",
    "(617) 253-1000",
    "+1 6172531000",
    "123456789012",
    "617.253.1000",
    "x31000",
    "6172531000 ext 12",
]
UNKNOWN_STAFF_DEPARTMENTS = ["10999999", "10888888"]
UNKNOWN_STUDENT_DEPARTMENTS = ["ZZZ", "99X"]
STUDENT_YEARS = ["1", "2", "3", "4", "U", "u", "G", "g"]


def _blank(rng: random.Random) -> str | None:
    """The warehouse's three spellings of "missing"."""
    return rng.choice([None, "", "   "])


def _maybe(rng: random.Random, share: float, value: str | None) -> str | None:
    return _blank(rng) if rng.random() < share else value


def _preferred(rng: random.Random, legal: str) -> str | None:
    draw = rng.random()
    if draw < 0.3:
        return legal
    if draw < 0.4:
        return legal.upper()  # differs only in case: not a preferred name
    if draw < 0.6:
        return rng.choice(FIRST)
    return None


def _person(rng: random.Random, krb: str | None, index: int) -> dict[str, str | None]:
    first, middle, last = rng.choice(FIRST), rng.choice(FIRST), rng.choice(LAST)
    return {
        "MIT_ID": _maybe(rng, 0.02, f"9{index:08d}"),
        "EMAIL_ADDRESS": _maybe(rng, 0.05, f"{(krb or 'x').lower()}@example.edu"),
        "KRB_NAME_UPPERCASE": krb,
        "LIBRARY_ID": rng.choices(["NONE", None, f"39080{index:09d}"], [5, 3, 92])[0],
        "PREFERRED_FIRST_NAME": _preferred(rng, first),
        "PREFERRED_MIDDLE_NAME": _preferred(rng, middle) if rng.random() < 0.5 else None,
        "PREFERRED_LAST_NAME": _preferred(rng, last),
        "LEGAL_FIRST_NAME": first,
        "LEGAL_MIDDLE_NAME": _maybe(rng, 0.4, middle),
        "LEGAL_LAST_NAME": last,
    }


def _kerberos(rng: random.Random, index: int, taken: list[str]) -> str | None:
    """Mostly new names; some missing, some repeating an earlier one (in either case)."""
    draw = rng.random()
    if draw < 0.01:
        return _blank(rng)
    if draw < 0.02 and taken:
        repeated = rng.choice(taken)
        return repeated.lower() if rng.random() < 0.5 else repeated
    name = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(rng.randint(2, 6)))
    return f"{name}{index}"


def staff_rows(count: int, seed: int = DEFAULT_SEED) -> Iterator[tuple]:
    rng = random.Random(seed)
    staff_departments = _codes("staff", rng)
    taken: list[str] = []
    for index in range(count):
        krb = _kerberos(rng, index, taken)
        if krb and krb.strip():
            taken.append(krb)
        row = _person(rng, krb, index)
        row.update(
            OFFICE_ADDRESS=_maybe(rng, 0.08, f"{rng.randint(1, 77)}-{rng.randint(100, 999)}"),
            OFFICE_PHONE=_maybe(rng, 0.1, rng.choice(PHONES)),
            APPOINTMENT_END_DATE=_maybe(rng, 0.5, f"2027-0{rng.randint(1, 9)}-30"),
            LIBRARY_PERSON_TYPE_CODE=_maybe(rng, 0.02, rng.choice(["01", "02", "03", "05"])),
            LIBRARY_PERSON_TYPE=_maybe(rng, 0.05, rng.choice(["Faculty", "Staff", "Other Academic"])),
            ORG_UNIT_ID=_maybe(rng, 0.02, rng.choice(staff_departments)),
            ORG_UNIT_TITLE=_maybe(rng, 0.05, f"Department {rng.randint(1, 60)}"),
            POSITION_TITLE=rng.choice(["Librarian", "Engineer", "Professor", None]),
            DIRECTORY_TITLE=rng.choice(["Librarian", "Engineer", "Professor", None]),
        )
        yield tuple(row[column] for column in STAFF_COLUMNS)


def student_rows(count: int, staff_count: int, seed: int = DEFAULT_SEED) -> Iterator[tuple]:
    rng = random.Random(seed + 1)
    student_departments = _codes("student", rng)
    staff_names = [row[2] for row in staff_rows(min(staff_count, 5_000), seed) if row[2] and row[2].strip()]
    taken: list[str] = []
    for index in range(count):
        if staff_names and rng.random() < 0.05:  # a student employee, already loaded as staff
            krb = rng.choice(staff_names)
            krb = krb.lower() if rng.random() < 0.3 else krb
        else:
            krb = _kerberos(rng, staff_count + index, taken)
        if krb and krb.strip():
            taken.append(krb)
        row = _person(rng, krb, staff_count + index)
        phones = [_maybe(rng, 0.3, rng.choice(PHONES)) for _ in range(3)]
        row.update(
            TERM_STREET1=_maybe(rng, 0.08, f"{rng.randint(1, 999)} Massachusetts Ave"),
            TERM_STREET2=_maybe(rng, 0.6, f"Apt {rng.randint(1, 40)}"),
            TERM_CITY=_maybe(rng, 0.1, "Cambridge"),
            TERM_STATE=_maybe(rng, 0.1, "MA"),
            TERM_ZIP=_maybe(rng, 0.1, f"0{rng.randint(2100, 2199)}"),
            TERM_PHONE1=phones[0],
            TERM_PHONE2=phones[1],
            OFFICE_PHONE=phones[2],
            STUDENT_YEAR=rng.choices([*STUDENT_YEARS, None, "X"], [10] * len(STUDENT_YEARS) + [3, 1])[0],
            HOME_DEPARTMENT=_maybe(rng, 0.03, rng.choice(student_departments)),
        )
        yield tuple(row[column] for column in STUDENT_COLUMNS)


def _codes(kind: str, rng: random.Random) -> list[str]:
    """Department codes as the warehouse holds them: mostly known, a few unknown."""
    known = sorted(load_department_table(INSTITUTION_DIR / f"{kind}_departments.json"))
    unknown = UNKNOWN_STAFF_DEPARTMENTS if kind == "staff" else UNKNOWN_STUDENT_DEPARTMENTS
    return known * 10 + unknown


def create_warehouse(
    path: str | Path,
    staff: int = DEFAULT_STAFF,
    students: int = DEFAULT_STUDENTS,
    seed: int = DEFAULT_SEED,
) -> Path:
    """A SQLite file with the two views as tables, filled with synthetic patrons."""
    return write_views(
        path,
        (
            (STAFF_VIEW, STAFF_COLUMNS, staff_rows(staff, seed)),
            (STUDENT_VIEW, STUDENT_COLUMNS, student_rows(students, staff, seed)),
        ),
    )
