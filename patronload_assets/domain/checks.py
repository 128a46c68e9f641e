"""Checks of a built load, run before anything of a type is uploaded.

Blocking checks (schema, shrink, limits) keep a type's zips out of the bucket when they fail;
informational ones (unknown departments, user groups, repairs) only warn. Problems are reported
as counts by kind and user positions, never patron data.
"""

from __future__ import annotations

import datetime as dt
import re
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import alma_xml, rules, values
from .packaging import AlmaLimits, PackagedZip

SCHEMA, SHRINK, LIMITS = "schema", "shrink", "limits"
UNKNOWN_DEPARTMENTS, USER_GROUPS, REPAIRS = "unknown_departments", "user_groups", "repairs"
BLOCKING = (SCHEMA, SHRINK, LIMITS)

DATE_ELEMENTS = frozenset(
    {
        "birth_date",
        "expiry_date",
        "purge_date",
        "status_date",
        "last_patron_activity_date",
        "start_date",
        "end_date",
    }
)
BOOLEAN_ELEMENTS = frozenset({"is_researcher", "user_viewable", "popup_note"})
PROTECTED_CODES = frozenset({"user_group", "job_category", "user_title", "campus_code", "preferred_language"})
REQUIRED_CHILDREN = {
    "email": ("email_address", "email_types"),
    "phone": ("phone_number", "phone_types"),
    "address": ("address_types",),
    "user_identifier": ("id_type", "value"),
    "user_statistic": ("statistic_category",),
}
NON_EMPTY = frozenset({"primary_id", "email_address", "phone_number", "value", "id_type"})
PREFERRED_LISTS = ("addresses", "emails", "phones")
_XSD_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})(Z|[+-]\d{2}:\d{2})?")
EXAMPLES = 10


@dataclass
class Outcome:
    """One check's verdict, as the asset reports it."""

    name: str
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)

    @property
    def blocking(self) -> bool:
        return self.name in BLOCKING


# -- schema -------------------------------------------------------------------------------------


def _users(zips: Iterable[PackagedZip]) -> Iterator[tuple[str, int, object]]:
    """(file name, position, <user> element) for every user, streamed: memory stays flat."""
    from lxml import etree

    for packaged in zips:
        with zipfile.ZipFile(packaged.path) as archive:
            for name in packaged.xml_files:
                with archive.open(name) as stream:
                    parsed = etree.iterparse(stream, events=("end",), tag="user", huge_tree=True)
                    for position, (_, user) in enumerate(parsed, start=1):
                        yield name, position, user
                        user.clear(keep_tail=False)
                        while user.getprevious() is not None:
                            del user.getparent()[0]


def structural_problems(user) -> list[str]:
    """The project's own rules for one ``<user>`` element (an lxml element)."""
    problems = []
    if not (user.findtext("primary_id") or "").strip():
        problems.append("primary_id missing")
    contact_info = user.find("contact_info")
    if contact_info is not None:
        order = [child.tag for child in contact_info]
        if order != sorted(
            order,
            key=lambda tag: (
                alma_xml.CONTACT_INFO_ORDER.index(tag) if tag in alma_xml.CONTACT_INFO_ORDER else 99
            ),
        ):
            problems.append("contact_info out of order")
        for list_name in PREFERRED_LISTS:
            segments = contact_info.find(list_name)
            if segments is not None and sum(s.get("preferred") == "true" for s in segments) > 1:
                problems.append(f"more than one preferred in {list_name}")
    for element in user.iter():
        tag, text = element.tag, (element.text or "").strip()
        for child in REQUIRED_CHILDREN.get(tag, ()):
            if element.find(child) is None:
                problems.append(f"{tag} without {child}")
        if tag in NON_EMPTY and len(element) == 0 and not text:
            problems.append(f"empty {tag}")
        elif tag in DATE_ELEMENTS and not _is_xsd_date(text):
            problems.append(f"{tag} not a date")
        elif tag in BOOLEAN_ELEMENTS and text not in ("true", "false", "1", "0"):
            problems.append(f"{tag} not a boolean")
        elif tag in PROTECTED_CODES and not text:
            problems.append(f"empty {tag}")
        limit = alma_xml.MAX_LENGTH.get(tag, alma_xml.DEFAULT_MAX_LENGTH)
        if limit is not None and len(element) == 0 and len(element.text or "") > limit:
            problems.append(f"{tag} over {limit} characters")
        for value in element.attrib.values():
            if len(value) > alma_xml.ATTRIBUTE_MAX_LENGTH:
                problems.append(f"{tag} attribute over {alma_xml.ATTRIBUTE_MAX_LENGTH} characters")
    return problems


def _is_xsd_date(text: str) -> bool:
    match = _XSD_DATE.fullmatch(text)
    if not match:
        return False
    try:
        dt.date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return False
    return True


def check_schema(zips: list[PackagedZip], xsd_path: str | Path | None = None) -> Outcome:
    """Every user valid: by the project's structural rules, and by Alma's XSD when one is given.

    Identifiers are also checked across the whole type: Alma refuses a repeated one.
    """
    from lxml import etree

    schema = etree.XMLSchema(etree.parse(str(xsd_path))) if xsd_path else None
    problems: Counter = Counter()
    examples: list[str] = []
    identifiers: set[str] = set()
    users = 0
    try:
        for name, position, user in _users(zips):
            users += 1
            found = structural_problems(user)
            for value in user.iterfind("user_identifiers/user_identifier/value"):
                key = (value.text or "").strip().upper()
                if key in identifiers:
                    found.append("repeated identifier")
                identifiers.add(key)
            if schema is not None and not schema.validate(user):
                found += [f"XSD: {error.message.split(':')[0]}" for error in schema.error_log][:3]
            for problem in found:
                problems[problem] += 1
                if len(examples) < EXAMPLES:
                    examples.append(f"{name} user {position}: {problem}")
    except etree.XMLSyntaxError as error:  # not well-formed: nothing in it can be trusted
        problems["XML not well-formed"] += 1
        examples.append(str(error))
    metadata = {
        "users_checked": users,
        "xsd": Path(xsd_path).name if xsd_path else "none (structural rules only)",
        "problems": dict(problems),
        "examples": examples,
    }
    if problems:
        return Outcome(
            SCHEMA,
            False,
            f"{sum(problems.values())} problem(s) in {users} users: "
            + "; ".join(f"{kind} ({count})" for kind, count in problems.most_common(5)),
            metadata,
        )
    return Outcome(SCHEMA, True, f"{users} users valid", metadata)


# -- shrink -------------------------------------------------------------------------------------


def check_shrink(
    patron_type: str, patrons: int, previous: int | None, max_drop_share: float, override: bool
) -> Outcome:
    """Hold back a load that lost more than ``max_drop_share`` of the last successful one:
    a truncated extract loaded as complete would stop renewing thousands of accounts."""
    metadata = {
        "patrons": patrons,
        "previous_patrons": previous if previous is not None else "none",
        "max_drop_share": max_drop_share,
        "override": override,
    }
    if previous is None or previous == 0:
        return Outcome(SHRINK, True, "no previous load to compare with", metadata)
    floor = previous * (1 - max_drop_share)
    if patrons >= floor:
        return Outcome(SHRINK, True, f"{patrons} {patron_type} patrons, previous load {previous}", metadata)
    drop = f"{patrons} {patron_type} patrons is {1 - patrons / previous:.0%} below the last load's {previous}"
    if override:
        return Outcome(SHRINK, True, f"{drop}; allowed once by the run's config (allow_shrink)", metadata)
    return Outcome(
        SHRINK,
        False,
        f"{drop} (more than {max_drop_share:.0%}): held back. If the drop is real, "
        "run again with allow_shrink: true in this asset's config",
        metadata,
    )


# -- limits -------------------------------------------------------------------------------------


def check_limits(zips: list[PackagedZip], limits: AlmaLimits, refused: str | None = None) -> Outcome:
    """Alma's packaging limits (patron-rules.md §8); ``refused`` is the packager's refusal."""
    metadata = {
        "zips": len(zips),
        "max_zips": limits.max_zips_per_load,
        "max_files_per_zip": limits.max_files_per_zip,
        "max_zip_bytes": limits.max_zip_bytes,
    }
    if refused:
        return Outcome(LIMITS, False, refused, metadata)
    over = [
        p.name for p in zips if p.size > limits.max_zip_bytes or len(p.xml_files) > limits.max_files_per_zip
    ]
    if len(zips) > limits.max_zips_per_load or over:
        return Outcome(LIMITS, False, f"over Alma's limits: {len(zips)} zips; {', '.join(over)}", metadata)
    return Outcome(LIMITS, True, f"{len(zips)} zip(s) within Alma's limits", metadata)


# -- informational ------------------------------------------------------------------------------


def informational(
    patron_type: str, counts: Mapping[str, int], unknown_departments: Mapping[str, int]
) -> list[Outcome]:
    """Warnings that never block: what the institution's tables or the warehouse should fix."""
    outcomes = [
        Outcome(
            UNKNOWN_DEPARTMENTS,
            not unknown_departments,
            f"{len(unknown_departments)} department code(s) not in the {patron_type} table"
            if unknown_departments
            else "every department code known",
            {"codes": sorted(unknown_departments), "rows": sum(unknown_departments.values())},
        ),
    ]
    repairs = {kind: counts.get(kind, 0) for kind in REPAIR_KINDS if counts.get(kind, 0)}
    outcomes.append(
        Outcome(
            REPAIRS,
            not repairs,
            f"{sum(repairs.values())} value(s) repaired" if repairs else "no value needed repair",
            {"repairs": repairs},
        )
    )
    if patron_type == "student":
        without = counts.get(rules.STUDENT_WITHOUT_USER_GROUP, 0)
        outcomes.append(
            Outcome(
                USER_GROUPS,
                not without,
                f"{without} student(s) without a user group",
                {"students_without_user_group": without},
            )
        )
    return outcomes


REPAIR_KINDS = (
    values.REPAIR_CONTROL_CHARACTERS,
    values.REPAIR_NON_TEXT,
    values.REPAIR_UNDECODABLE_BYTES,
    alma_xml.REPAIR_TRUNCATED,
    rules.IDENTIFIER_REPEATED,
)
