"""The records of a few named people, exactly as the daily load would write them (docs/patron-rules.md
§13): the same selection (staff first, a student employee as staff), rules, template and check, for
the rows of those names only. What becomes of each name is decided here; sending is not."""

from __future__ import annotations

import datetime as dt
import zipfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from . import checks
from .institution import (
    DROPPED_DUPLICATE_STAFF,
    DROPPED_DUPLICATE_STUDENT,
    PatronType,
    claimed_identifiers,
    select_patrons,
)
from .load import Institution, build_zips
from .values import person_key, person_keys

NOT_IN_WAREHOUSE = "not in the warehouse (neither view has this {person_key})"
MOST_NAMES = 100


@dataclass(frozen=True)
class NamedRecord:
    """What the load makes of one asked-for name: a record to send, or why there is none."""

    name: str  # as asked, in upper case
    patron_type: str | None = None  # staff or student: the view the record comes from
    primary_id: str | None = None
    user_xml: bytes | None = None  # a <user> document, the bytes the daily load writes for this person
    problem: str | None = None  # why there is no record to send


def asked_names(names: Iterable[str], title: str = "name") -> list[str]:
    """The names asked for (person keys: MIT's Kerberos names), trimmed and in upper case (a key
    ignores case), each once; ``title`` is what the institution calls them."""
    found: list[str] = []
    for name in names:
        key = person_key(name)
        if key is not None and key not in found:
            found.append(key)
    if not found:
        raise ValueError(f"no {title} given")
    if len(found) > MOST_NAMES:
        raise ValueError(f"{len(found)} names: at most {MOST_NAMES} at once (the daily load takes the rest)")
    return found


def named_records(
    names: Sequence[str],
    staff_rows: Sequence[Mapping[str, object]],
    student_rows: Sequence[Mapping[str, object]],
    institution: Institution,
    moment: dt.datetime,
    folder: Path,
    schemas: list[checks.UserSchema],
) -> tuple[list[NamedRecord], Counter]:
    """One :class:`NamedRecord` per name, in the order asked, and the repairs made on the way.
    ``staff_rows`` and ``student_rows`` are the two views' rows of these names (any others are
    ignored); ``schemas`` check each record as the daily load's schema check does."""
    rules = institution.rules
    key = rules.person_key
    names = asked_names(names, rules.person_key_title)
    wanted = set(names)
    staff = [row for row in staff_rows if person_key(row.get(key)) in wanted]
    students = [row for row in student_rows if person_key(row.get(key)) in wanted]
    staff_selection = select_patrons(
        [row[key] for row in staff], rules, duplicate_reason=DROPPED_DUPLICATE_STAFF
    )
    kept_staff = [staff[position] for position in staff_selection.kept]
    student_selection = select_patrons(
        [row[key] for row in students],
        rules,
        already_loaded=person_keys(row[key] for row in kept_staff),
        duplicate_reason=DROPPED_DUPLICATE_STUDENT,
    )
    kept_students = [students[position] for position in student_selection.kept]
    taken = claimed_identifiers(kept_staff, rules)  # the staff records' identifiers are not students' to take

    found: dict[str, NamedRecord] = {}
    repairs: Counter = Counter()
    for patron_type, rows, taken_identifiers in (
        (rules.staff, kept_staff, frozenset()),
        (rules.student, kept_students, taken),
    ):
        found.update(
            _records(patron_type, rows, institution, moment, folder, schemas, taken_identifiers, repairs)
        )
    missing = NOT_IN_WAREHOUSE.format(person_key=rules.person_key_title)
    return [found.get(name) or NamedRecord(name, problem=missing) for name in names], repairs


def _records(
    patron_type: PatronType,
    rows: list[Mapping[str, object]],
    institution: Institution,
    moment: dt.datetime,
    folder: Path,
    schemas: list[checks.UserSchema],
    taken_identifiers: frozenset[str] | set[str],
    repairs: Counter,
) -> dict[str, NamedRecord]:
    """The records of one type's selected rows, by name: rendered, zipped and checked as the daily
    load does, then read back from the file as written."""
    if not rows:
        return {}
    directory = folder / patron_type.name
    directory.mkdir(exist_ok=True)
    result = build_zips(rows, len(rows), patron_type, institution, moment, directory,
                        taken_identifiers=taken_identifiers)  # fmt: skip
    repairs.update(result.counts)
    _, inspection = checks.check_schema(result.zips, schemas, taken_identifiers)
    invalid = {(user.xml_file, user.position): user for user in inspection.invalid}
    users = []
    for packaged in result.zips:
        with zipfile.ZipFile(packaged.path) as archive:
            for xml_file in packaged.xml_files:
                document = etree.fromstring(archive.read(xml_file))
                users += [(xml_file, position, user) for position, user in enumerate(document, start=1)]
    records = {}
    for row, (xml_file, position, user) in zip(rows, users, strict=True):
        name = person_key(row[institution.rules.person_key])
        primary_id = (user.findtext("primary_id") or "").strip()
        problem = invalid.get((xml_file, position))
        if problem is not None:
            records[name] = NamedRecord(
                name,
                patron_type.name,
                primary_id,
                problem=f"rejected by the check: {'; '.join(problem.reasons)}",
            )
        else:
            xml = etree.tostring(user, xml_declaration=True, encoding="UTF-8", with_tail=False)
            records[name] = NamedRecord(name, patron_type.name, primary_id, user_xml=xml)
    return records
