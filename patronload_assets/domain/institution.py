"""What the engine asks of an institution: one small interface, and the parts of building a record
that are the same at every institution.

An institution (``patronload_assets/institutions/<name>/``, or a package registered under the
``patronload.institutions`` entry point) gives one :class:`Rules`: the columns of its two views,
the column that names a person, its identifiers, and a function per patron type from a cleaned row
to the fields of its template. The engine selects the rows (§2: one record a person, staff first),
cleans them, keeps an identifier to the first user that has it, renders, zips, checks and sends;
it never names an institution's column or code.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Set
from dataclasses import dataclass, field
from pathlib import Path

from .values import clean_row, person_key, to_text

Row = Mapping[str, str | None]

# Who gets a record (§2): the reasons a row is left out, as the run's metadata counts them. The
# reason for a row without a person key is the institution's (MIT's says "kerberos_name").
DROPPED_DUPLICATE_STAFF = "dropped_duplicate_staff"
DROPPED_STUDENT_IS_STAFF = "dropped_student_already_staff"
DROPPED_DUPLICATE_STUDENT = "dropped_duplicate_student"
LEFT_OUT_EXCLUDED = "left_out_excluded"  # on the institution's list of people never loaded

# Counted while building; the unknown codes themselves are listed in RunContext.unknown_departments.
IDENTIFIER_REPEATED = "identifier_left_out_repeated"
IDENTIFIER_USED_BY_STAFF = "identifier_left_out_used_by_staff"
DEPARTMENT_MISSING = "department_missing"
DEPARTMENT_UNKNOWN = "department_unknown"
STUDENT_WITHOUT_USER_GROUP = "student_without_user_group"


@dataclass
class RunContext:
    """What every record of one run shares, and what the run learns while building."""

    run_date: dt.date
    staff_departments: Mapping[str, str]
    student_departments: Mapping[str, str]
    counts: Counter = field(default_factory=Counter)
    unknown_departments: Counter = field(default_factory=Counter)

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


_INTEGRAL_TEXT = re.compile(r"\d+\.0+")
FieldsOf = Callable[[Row, RunContext], dict[str, str | None]]


@dataclass(frozen=True)
class PatronType:
    """One of the engine's two patron types (``staff``, ``student``) as an institution has it."""

    name: str
    columns: tuple[str, ...]  # the view's columns, in order: the query must return each
    fields_of: FieldsOf  # a cleaned row to the fields its template names; None leaves an element out


@dataclass(frozen=True)
class Rules:
    """Everything the engine knows of one institution."""

    name: str  # as INSTITUTION names it
    title: str  # for people: "MIT Libraries"
    folder: Path  # {type}_template.xml and {type}_departments.json for staff and student
    queries: Path  # staff.sql and student.sql, as the warehouse's DBA reviews them
    person_key: str  # the column that names one person in both views (compared trimmed, any case)
    person_key_title: str  # what people call it: "Kerberos name", "campus id"
    missing_key_reason: str  # the metadata's name for rows without one
    identifier_columns: tuple[str, ...]  # the columns identifiers() reads
    identifier_fields: tuple[str, ...]  # the template fields identifiers() gives, each kept once a load
    identifiers: Callable[[Row], dict[str, str | None]]  # template field -> value; None: no segment
    staff: PatronType
    student: PatronType
    create_warehouse: Callable[[Path, int, int], object]  # the embedded default's synthetic views
    excluded: frozenset[str] = frozenset()  # person keys never loaded, whatever the views say

    def left_out_reasons(self, patron_type: PatronType) -> tuple[str, ...]:
        """The reasons the metadata shows even at zero."""
        if patron_type.name == "staff":
            return (self.missing_key_reason, DROPPED_DUPLICATE_STAFF)
        return (self.missing_key_reason, DROPPED_STUDENT_IS_STAFF, DROPPED_DUPLICATE_STUDENT)

    def query(self, patron_type: str) -> str:
        return (self.queries / f"{patron_type}.sql").read_text(encoding="utf-8")


# §2 Who gets a record ---------------------------------------------------------------------------


@dataclass
class Selection:
    """Positions of the rows that get a record, and the count of those left out by reason."""

    kept: list[int]
    left_out: Counter


def select_patrons(
    keys: Iterable[object],
    rules: Rules,
    *,
    already_loaded: Set[str] = frozenset(),
    duplicate_reason: str,
) -> Selection:
    """One row per person (the rows' person keys, in order), first row wins; people in
    ``already_loaded`` or on the institution's exclusion list are left out.

    Staff are selected with nothing already loaded; students with the staff's keys, so that
    student employees load once, as staff.
    """
    kept: list[int] = []
    left_out: Counter = Counter()
    seen: set[str] = set()
    for position, value in enumerate(keys):
        key = person_key(value)
        if key is None:
            left_out[rules.missing_key_reason] += 1
        elif key in rules.excluded:
            left_out[LEFT_OUT_EXCLUDED] += 1
        elif key in already_loaded:
            left_out[DROPPED_STUDENT_IS_STAFF] += 1
        elif key in seen:
            left_out[duplicate_reason] += 1
        else:
            seen.add(key)
            kept.append(position)
    return Selection(kept, left_out)


# Identifiers ------------------------------------------------------------------------------------


def claim_identifiers(
    fields: dict[str, str | None],
    names: Iterable[str],
    claimed: set[str],
    counts: Counter,
    taken: Set[str] = frozenset(),
) -> None:
    """Leave out an identifier whose value an earlier identifier (of this user or another already
    written) has, or one of ``taken`` (a staff record's, when students are built): Alma refuses a
    repeated identifier. The user is kept."""
    for name in names:
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


def claimed_identifiers(rows: Iterable[Mapping[str, object]], rules: Rules) -> set[str]:
    """The identifiers the given rows will carry: what staff already hold when students are built.
    Only the identifier columns are cleaned: a value's cleaning depends on that value alone."""
    claimed: set[str] = set()
    for row in rows:
        cleaned = {column: to_text(row[column]) for column in rules.identifier_columns}
        for value in rules.identifiers(cleaned).values():
            if value is not None:
                claimed.add(value.upper())
    return claimed


# Building ---------------------------------------------------------------------------------------


def patron_fields(
    rows: Iterable[Mapping[str, object]],
    patron_type: PatronType,
    rules: Rules,
    context: RunContext,
    taken_identifiers: Set[str] = frozenset(),
) -> Iterator[dict[str, str | None]]:
    """Clean each selected row (counting repairs in ``context.counts``), derive its fields and
    leave out identifiers already used in this file or in ``taken_identifiers`` (the staff file's,
    for students). A student the rules give no user group is counted (a warning, never a block)."""
    counts = context.counts
    claimed: set[str] = set()
    student = patron_type.name == "student"
    for row in rows:
        fields = patron_type.fields_of(clean_row(row, counts), context)
        claim_identifiers(fields, rules.identifier_fields, claimed, counts, taken_identifiers)
        if student and fields.get("user_group") is None:
            counts[STUDENT_WITHOUT_USER_GROUP] += 1
        yield fields


# Helpers an institution's rules may use -----------------------------------------------------------


def add_months(day: dt.date, months: int) -> dt.date:
    """``day`` plus calendar months, clamped to the month's end (Aug 31 + 6 -> Feb 28/29)."""
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def alma_date(day: dt.date) -> str:
    """A date as Alma's user record writes it (``2027-05-31Z``)."""
    return f"{day.isoformat()}Z"
