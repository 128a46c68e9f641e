"""Checks of a built load, run before anything of a type is uploaded.

Blocking checks (schema, shrink, limits) keep a type's zips out of the bucket when they fail;
informational ones (unknown departments, user groups, repairs) only warn. Problems are reported
as counts by kind and user positions, never patron data.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import zipfile
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from . import alma_xml, rules, values
from .packaging import AlmaLimits, PackagedZip

SCHEMA, SHRINK, LIMITS = "schema", "shrink", "limits"
UNKNOWN_DEPARTMENTS, USER_GROUPS, REPAIRS = "unknown_departments", "user_groups", "repairs"
BLOCKING = (SCHEMA, SHRINK, LIMITS)

DATE_ELEMENTS, BOOLEAN_ELEMENTS = alma_xml.DATE_ELEMENTS, alma_xml.BOOLEAN_ELEMENTS
PROTECTED_CODES = alma_xml.PROTECTED_CODES
REQUIRED_CHILDREN = {
    "email": ("email_address", "email_types"),
    "phone": ("phone_number", "phone_types"),
    "address": ("address_types",),
    "user_identifier": ("id_type", "value"),
    "user_statistic": ("statistic_category",),
}
NON_EMPTY = ("primary_id", "email_address", "phone_number", "value", "id_type")
PREFERRED_LISTS = ("addresses", "emails", "phones")
EXAMPLES = 10
BLOCK_BYTES = 8 << 20
FULL_CHECK_USERS = 50_000  # per type: every user through every rule; beyond, 1 in SAMPLE_EVERY
SAMPLE_EVERY = 50

_XSD_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})(Z|[+-]\d{2}:\d{2})?")


_C0 = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_FORBIDDEN_SEQUENCES = (b"\xef\xbb\xbf", b"\xef\xbf\xbe", b"\xef\xbf\xbf")  # BOM, U+FFFE, U+FFFF
_IDENTIFIER = re.compile(rb"<user_identifier(?: [^>]*)?>(.*?)</user_identifier>", re.DOTALL)
_IDENTIFIER_VALUE = re.compile(rb"<value>([^<]*)</value>")
_EMPTY_IDENTIFIER = (b"<value></value>", b"<value/>")
_SUSPECT_SEQUENCES = (*_FORBIDDEN_SEQUENCES, *_EMPTY_IDENTIFIER)
XML_HEADER = alma_xml.XML_DECLARATION.rstrip("\n").encode()


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


_VALUE_TAGS = (*NON_EMPTY, *DATE_ELEMENTS, *BOOLEAN_ELEMENTS, *PROTECTED_CODES)


_LONG_TEXT = etree.XPath(
    f"descendant-or-self::*[not(*)][string-length(text()) > {alma_xml.DEFAULT_MAX_LENGTH}]"
)
_LONG_SHORT_LIMITED = [
    etree.XPath(f"descendant::{name}[string-length(text()) > {limit}]")
    for name, limit in alma_xml.MAX_LENGTH.items()
    if limit is not None and limit < alma_xml.DEFAULT_MAX_LENGTH
]
_LONG_ATTRIBUTES = etree.XPath(
    f"descendant-or-self::*/@*[string-length(.) > {alma_xml.ATTRIBUTE_MAX_LENGTH}]"
)


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
    for segment in user.iter(*REQUIRED_CHILDREN):
        for child in REQUIRED_CHILDREN[segment.tag]:
            if segment.find(child) is None:
                problems.append(f"{segment.tag} without {child}")
    for element in user.iter(*_VALUE_TAGS):
        tag, text = element.tag, (element.text or "").strip()
        if tag in NON_EMPTY:
            if len(element) == 0 and not text:
                problems.append(f"empty {tag}")
        elif tag in DATE_ELEMENTS:
            if not _is_xsd_date(text):
                problems.append(f"{tag} not a date")
        elif tag in BOOLEAN_ELEMENTS:
            if text not in ("true", "false", "1", "0"):
                problems.append(f"{tag} not a boolean")
        elif not text:  # a protected code
            problems.append(f"empty {tag}")
    # Lengths through XPath (C): only the rare long values reach Python.
    for element in [*_LONG_TEXT(user), *(found for xpath in _LONG_SHORT_LIMITED for found in xpath(user))]:
        limit = alma_xml.MAX_LENGTH.get(element.tag, alma_xml.DEFAULT_MAX_LENGTH)
        if limit is not None and len(element.text or "") > limit:
            problems.append(f"{element.tag} over {limit} characters")
    if _LONG_ATTRIBUTES(user):
        problems.append(f"attribute over {alma_xml.ATTRIBUTE_MAX_LENGTH} characters")
    return problems


@functools.lru_cache(maxsize=64)  # a run writes the same few dates on every user
def _is_xsd_date(text: str) -> bool:
    match = _XSD_DATE.fullmatch(text)
    if not match:
        return False
    try:
        dt.date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return False
    return True


def _blocks(packaged: PackagedZip, name: str) -> Iterator[bytes]:
    """The file in blocks of whole lines (the writer puts one ``<user>`` a line), streamed:
    memory stays flat however large the file."""
    with zipfile.ZipFile(packaged.path) as archive, archive.open(name) as stream:
        pending = b""
        while block := stream.read(BLOCK_BYTES):
            block = pending + block
            end = block.rfind(b"\n") + 1
            pending = block[end:]
            if end:
                yield block[:end]
        if pending:
            yield pending


def _suspect(block: bytes) -> bool:
    """Whether a block may hold a forbidden character or an empty identifier: one C-speed scan
    of the whole block, so only a suspect block is looked at line by line."""
    return bool(_C0.search(block)) or any(sequence in block for sequence in _SUSPECT_SEQUENCES)


def check_schema(
    zips: list[PackagedZip],
    xsd_path: str | Path | None = None,
    full_check_users: int = FULL_CHECK_USERS,
    sample_every: int = SAMPLE_EVERY,
) -> Outcome:
    """Users valid for Alma, checked in the zips as written.

    Every user: no character XML forbids, no empty identifier, no identifier repeated in the type.
    Every user up to ``full_check_users`` per type, and one in ``sample_every`` beyond: parsed,
    the project's structural rules, and Alma's XSD when one is given. (A full parse costs about
    100 microseconds a user here: every user of a daily load, a sample of a million-user one.)
    """
    schema = etree.XMLSchema(etree.parse(str(xsd_path))) if xsd_path else None
    problems: Counter = Counter()
    examples: list[str] = []
    identifiers: set[bytes] = set()
    users = parsed = 0

    def problem(where: str, kind: str) -> None:
        problems[kind] += 1
        if len(examples) < EXAMPLES:
            examples.append(f"{where}: {kind}")

    for packaged in zips:
        for name in packaged.xml_files:
            header, users_before = b"", users
            for block in _blocks(packaged, name):
                suspect = _suspect(block)
                for line in block.split(b"\n"):
                    if not line.startswith(b"<user>"):
                        if users == users_before:
                            header += line + b"\n"
                        elif line not in (b"</users>", b""):
                            problem(name, "unexpected content between users")
                        continue
                    users += 1
                    where = f"{name} user {users}"
                    if suspect:
                        if _C0.search(line) or any(sequence in line for sequence in _FORBIDDEN_SEQUENCES):
                            problem(where, "character XML forbids")
                        if any(empty in line for empty in _EMPTY_IDENTIFIER):
                            problem(where, "empty identifier")
                    for segment in _IDENTIFIER.findall(line):
                        for value in _IDENTIFIER_VALUE.findall(segment):
                            key = value.strip().upper()
                            if key in identifiers:
                                problem(where, "repeated identifier")
                            identifiers.add(key)
                    if users > full_check_users and users % sample_every:
                        continue
                    parsed += 1
                    try:
                        user = etree.fromstring(line)
                    except etree.XMLSyntaxError as error:
                        problem(where, f"not well-formed: {error.msg}")
                        continue
                    for kind in structural_problems(user):
                        problem(where, kind)
                    if schema is not None and not schema.validate(user):
                        problem(where, f"XSD: {schema.error_log.last_error.message.split(':')[0]}")
            if not header.startswith(XML_HEADER + b"\n<users>"):
                problem(name, "not an Alma users document")
    metadata = {
        "users_checked": users,
        "users_parsed_and_checked_by_every_rule": parsed,
        "xsd": Path(xsd_path).name if xsd_path else "none (structural rules only)",
        "problems": dict(problems),
        "examples": examples,
    }
    if problems:
        summary = "; ".join(f"{kind} ({count})" for kind, count in problems.most_common(5))
        return Outcome(
            SCHEMA, False, f"{sum(problems.values())} problem(s) in {users} users: {summary}", metadata
        )
    return Outcome(SCHEMA, True, f"{users} users valid ({parsed} parsed and checked by every rule)", metadata)


# -- shrink -------------------------------------------------------------------------------------


def check_shrink(
    patron_type: str,
    patrons: int,
    previous: int | None,
    previous_from: str,
    max_drop_share: float,
    override: bool,
) -> Outcome:
    """Hold back a load that lost more than ``max_drop_share`` of the last successful one:
    a truncated extract loaded as complete would stop renewing thousands of accounts."""
    metadata = {
        "patrons": patrons,
        "previous_patrons": previous if previous is not None else "none",
        "previous_from": previous_from,
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
