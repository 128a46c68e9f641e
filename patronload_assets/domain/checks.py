"""Checks of a built load, run before anything of a type is uploaded (docs/patron-rules.md §9).

Blocking checks (schema, shrink, departures, limits) keep a type's zips out of the bucket when they fail;
informational ones (unknown departments, user groups, repairs) only warn. Problems are reported
as counts by kind and user positions, never patron data.
"""

from __future__ import annotations

import functools
import re
import zipfile
from collections import Counter
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from . import alma_xml, changes, values
from .institution import IDENTIFIER_REPEATED, STUDENT_WITHOUT_USER_GROUP
from .packaging import AlmaLimits, PackagedZip, rewrite_without, unusual_markup

SCHEMA, SHRINK, DEPARTURES, LIMITS = "schema", "shrink", "departures", "limits"
UNKNOWN_DEPARTMENTS, USER_GROUPS, REPAIRS = "unknown_departments", "user_groups", "repairs"
BLOCKING = (SCHEMA, SHRINK, DEPARTURES, LIMITS)

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

# The project's own schema of the <users> documents it sends (docs/patron-rules.md §8).
PROJECT_XSD = Path(__file__).resolve().parent.parent / "schema" / "patronload_users.xsd"
USERS_ROOT, USER = "users", "user"

_XS = {"xs": "http://www.w3.org/2001/XMLSchema"}
_QUOTED = re.compile(r"'[^']*'")
_NAMED = re.compile(r"^(?:Element|attribute) '([^']+)'")


@dataclass(frozen=True)
class UserSchema:
    """A schema every user is validated against: the project's, or an operator's copy of Alma's."""

    name: str
    schema: etree.XMLSchema
    declares_users: bool  # a global <users>: a run of users validates in one call

    @classmethod
    def load(cls, path: str | Path) -> UserSchema:
        try:
            document = etree.parse(str(path))
            declares_users = bool(
                document.xpath(f"/xs:schema/xs:element[@name='{USERS_ROOT}']", namespaces=_XS)
            )
            return cls(Path(path).name, etree.XMLSchema(document), declares_users)
        except (OSError, etree.XMLSchemaParseError, etree.XMLSyntaxError) as error:
            raise ValueError(f"cannot use the user schema {path}: {error}") from error


@functools.lru_cache(maxsize=8)
def _schema(path: str) -> UserSchema:
    return UserSchema.load(path)


def user_schemas(extra_xsd: str | Path | None = None) -> list[UserSchema]:
    """The project's schema, and the operator's copy of Alma's when one is given."""
    schemas = [_schema(str(PROJECT_XSD))]
    if extra_xsd:
        schemas.append(_schema(str(extra_xsd)))
    return schemas


def xsd_reason(schema: UserSchema, error) -> str:
    """A validation error as a reason without the value that caused it: element and message,
    quoted values elided (the reason is counted in metadata, which carries no patron data)."""
    message = error.message
    named = _NAMED.match(message)
    element = error.path.rsplit("/", 1)[-1].split("[")[0] if error.path else ""
    text = _QUOTED.sub("…", message[named.end() :] if named else message).strip(" :")
    where = named[1] if named else element
    return f"{schema.name}: {where}: {text}" if where else f"{schema.name}: {text}"


@dataclass(frozen=True)
class InvalidUser:
    """A user that fails the check: where it is, who it is (for the run report only), why."""

    xml_file: str
    position: int  # 1-based, in its XML file
    primary_id: str
    reasons: tuple[str, ...]


@dataclass
class Inspection:
    """What parsing every user of a type's zips found."""

    users: int = 0
    validated: dict[str, int] = field(default_factory=dict)  # schema name -> users validated
    invalid: list[InvalidUser] = field(default_factory=list)
    file_problems: list[str] = field(default_factory=list)  # a file that is not a users document
    identifiers: set[str] = field(default_factory=set)
    primary_ids: set[str] = field(default_factory=set)
    first_index: dict[str, int] = field(default_factory=dict)  # XML file -> index of its first user

    def index(self, user: InvalidUser) -> int:
        """A user's 0-based index among all the type's users, in the order they were written."""
        return self.first_index[user.xml_file] + user.position - 1

    def reasons(self) -> Counter:
        return Counter(reason for user in self.invalid for reason in user.reasons)


# A line break or tab in a value (docs/patron-rules.md §1, §8): characters that are never layout
# in a file the load writes, their references, or a line feed that is not between two tags; and
# the control and invisible characters cleaning removes beyond those XML refuses itself (DEL, C1,
# soft hyphen, zero-width space, word joiner, bidirectional controls). Scanned with bytes methods
# and literal-prefix patterns, which run at memory speed (a character class would scan 50 times
# slower).
_BREAKS = "\t\n\r\x85\u2028\u2029"
_SEPARATORS = (
    re.compile(rb"\xe2\x80[\xa8\xa9]"),  # LS, PS
    re.compile(rb"\xc2[\x80-\x9f\xad]"),  # NEL, the other C1 controls, soft hyphen
    re.compile(rb"\xe2\x80[\x8b\xaa-\xae]"),  # zero-width space, bidirectional embeddings and overrides
    re.compile(rb"\xe2\x81[\xa0\xa6-\xa9]"),  # word joiner, bidirectional isolates
    re.compile(rb"\xef\xbb\xbf"),  # byte-order mark
)
_USER_START = re.compile(rb"<user[\s/>]")
_USER_END = b"</user>"
READ_BYTES = 8 << 20
USERS_PER_CHUNK = 200  # parsed and validated in one call each; one by one only when a chunk fails
_PARSER = etree.XMLParser(huge_tree=True, collect_ids=False, resolve_entities=False)


class _Unusual(Exception):
    """A file the fast path does not read as it is: the streamed path reads it."""


@dataclass
class _FileFindings:
    """One XML file's findings, merged into the inspection once the file is read through."""

    name: str
    users: int = 0
    invalid: list[InvalidUser] = field(default_factory=list)
    identifiers: set[str] = field(default_factory=set)
    primary_ids: set[str] = field(default_factory=set)


def _breaks_in_values(user) -> list[str]:
    """The elements and attributes of one user whose value holds a line break or tab, or a
    character cleaning removes."""
    found = []
    for element in user.iter():
        texts = [(element.tag, element.text)] if len(element) == 0 and element.text else []
        for where, text in [*texts, *((f"{element.tag}/@{name}", value) for name, value in element.items())]:
            if any(c in text for c in _BREAKS):
                found.append(f"line break or tab in {where}")
            if values.REMOVED.search(text):
                found.append(f"control or invisible character in {where}")
    return found


def _chunk_may_hold_breaks(chunk: bytes) -> bool:
    """Whether a line break or tab may stand in a value of a chunk of whole users (which follows a
    ``>`` and ends with one)."""
    if b"\t" in chunk or b"\r" in chunk or b"\x7f" in chunk or (b"&" in chunk and b"&#" in chunk):
        return True
    if any(separator.search(chunk) for separator in _SEPARATORS):
        return True
    line_feed = chunk.find(b"\n")
    while line_feed >= 0:  # one between two users, in the load's own layout
        if (line_feed and chunk[line_feed - 1] != 0x3E) or chunk[line_feed + 1] != 0x3C:  # ">", "<"
            return True
        line_feed = chunk.find(b"\n", line_feed + 1)
    return False


def _rule_problems(
    user, inspection: Inspection, found: _FileFindings, taken_identifiers: Set[str]
) -> list[str]:
    """The rules an XSD 1.0 cannot state, for one ``<user>`` element: no primary id or identifier
    repeated in the load, one preferred segment a list. (Element walks: faster than XPath here.)"""
    problems = []
    primary_id = (user.findtext("primary_id") or "").strip().upper()
    if primary_id:
        if primary_id in found.primary_ids or primary_id in inspection.primary_ids:
            problems.append("primary_id repeated in the load")
        found.primary_ids.add(primary_id)
    identifiers = user.find("user_identifiers")
    for identifier in () if identifiers is None else identifiers:
        value = identifier.find("value")
        key = (value.text or "").strip().upper() if value is not None else ""
        if key in found.identifiers or key in inspection.identifiers or key in taken_identifiers:
            problems.append("identifier repeated in the load")
        found.identifiers.add(key)
    contact_info = user.find("contact_info")
    for segments in () if contact_info is None else contact_info:
        if len(segments) > 1 and sum(segment.get("preferred") == "true" for segment in segments) > 1:
            problems.append(f"more than one preferred in {segments.tag}")
    return problems


_PRIMARY_IDS = etree.XPath("user/primary_id/text()")
_IDENTIFIERS = etree.XPath("user/user_identifiers/user_identifier/value/text()")
_TWO_PREFERRED = etree.XPath("boolean(user/contact_info/*[count(*[@preferred='true']) > 1])")


def _rules_hold(container, inspection: Inspection, found: _FileFindings, taken: Set[str]) -> bool:
    """The rules of :func:`_rule_problems` for a whole run of users at once (three calls in C):
    when they hold, the run's keys are recorded; when not, the caller looks user by user."""
    primary_ids = [text.strip().upper() for text in _PRIMARY_IDS(container)]
    identifiers = [text.strip().upper() for text in _IDENTIFIERS(container)]
    new_primary_ids, new_identifiers = set(primary_ids), set(identifiers)
    if (
        len(new_primary_ids) < len(primary_ids)
        or len(new_identifiers) < len(identifiers)
        or not new_primary_ids.isdisjoint(found.primary_ids)
        or not new_primary_ids.isdisjoint(inspection.primary_ids)
        or not new_identifiers.isdisjoint(found.identifiers)
        or not new_identifiers.isdisjoint(inspection.identifiers)
        or not new_identifiers.isdisjoint(taken)
        or _TWO_PREFERRED(container)
    ):
        return False
    found.primary_ids |= new_primary_ids
    found.identifiers |= new_identifiers
    return True


def _check_users(
    users: list, first_position: int, container, schemas, inspection, found, taken, breaks
) -> None:
    """Every rule for a run of users: ``container`` (their ``<users>``) validated in one call per
    schema, user by user only when it fails; the rules an XSD cannot state likewise."""
    if _rules_hold(container, inspection, found, taken):
        problems = [[] for _ in users]
    else:
        problems = [_rule_problems(user, inspection, found, taken) for user in users]
    if breaks:
        for user, user_problems in zip(users, problems, strict=True):
            user_problems += _breaks_in_values(user)
    for schema in schemas:
        inspection.validated[schema.name] += len(users)
        # Alma's rest_user.xsd declares <user> only: its users are validated one by one.
        if not schema.declares_users or not schema.schema.validate(container):
            for user, user_problems in zip(users, problems, strict=True):
                if not schema.schema.validate(user):
                    user_problems.append(xsd_reason(schema, schema.schema.error_log.last_error))
    for offset, (user, user_problems) in enumerate(zip(users, problems, strict=True)):
        if user_problems:
            primary_id = (user.findtext("primary_id") or "").strip() or "(none)"
            position = first_position + offset
            found.invalid.append(InvalidUser(found.name, position, primary_id, tuple(user_problems)))
    found.users += len(users)


def inspect_users(
    zips: list[PackagedZip],
    schemas: list[UserSchema],
    taken_identifiers: Set[str] = frozenset(),
) -> Inspection:
    """Parse every XML file of the zips as XML (streamed: memory stays flat in the file size) and
    check every user: each schema, no line break or tab in a value, one preferred segment a list,
    primary ids and identifiers not repeated in the type nor among ``taken_identifiers`` (the other
    type's). Independent of how the writer lays its output out.

    Fast path: the file's bytes are cut after every 200th ``</user>`` and each run of users is
    parsed and validated in one call. A file with markup that path does not read (comments, CDATA,
    processing instructions, text between users) is read by an incremental parser instead."""
    inspection = Inspection(validated={schema.name: 0 for schema in schemas})
    for packaged in zips:
        for name in packaged.xml_files:
            inspection.first_index[name] = inspection.users
            validated = dict(inspection.validated)
            try:
                found = _read_in_chunks(packaged, name, schemas, taken_identifiers, inspection)
            except _Unusual:
                inspection.validated = validated
                try:
                    found = _read_streamed(packaged, name, schemas, taken_identifiers, inspection)
                except etree.XMLSyntaxError as error:
                    problem = f"{name}: not well-formed XML: {_QUOTED.sub('…', error.msg)}"
                    inspection.file_problems.append(problem)
                    continue
            inspection.users += found.users
            inspection.invalid += found.invalid
            inspection.identifiers |= found.identifiers
            inspection.primary_ids |= found.primary_ids
    return inspection


def _read_in_chunks(
    packaged: PackagedZip, name: str, schemas, taken, inspection: Inspection
) -> _FileFindings:
    found = _FileFindings(name)
    with zipfile.ZipFile(packaged.path) as archive, archive.open(name) as stream:
        prefix, pending = None, b""
        while True:
            block = stream.read(READ_BYTES)
            pending += block
            if prefix is None:
                start = _USER_START.search(pending)
                if start is None and block:
                    continue
                prefix, pending = (
                    (pending, b"") if start is None else (pending[: start.start()], pending[start.start() :])
                )
            if unusual_markup(pending):
                raise _Unusual
            cut, ends, end = 0, 0, pending.find(_USER_END)
            while end >= 0:
                ends += 1
                if ends == USERS_PER_CHUNK or (not block and pending.find(_USER_END, end + 1) < 0):
                    _read_chunk(pending[cut : end + len(_USER_END)], schemas, taken, inspection, found)
                    cut, ends = end + len(_USER_END), 0
                end = pending.find(_USER_END, end + 1)
            pending = pending[cut:]
            if not block:
                break
    # What stands around the users: the declaration, <users> and </users>, nothing else.
    try:
        root = etree.fromstring(prefix + pending, _PARSER)
    except etree.XMLSyntaxError as error:
        raise _Unusual from error
    if root.tag != USERS_ROOT or len(root) or (root.text or "").strip():
        raise _Unusual
    if (root.getroottree().docinfo.encoding or "").lower() != "utf-8":
        inspection.file_problems.append(f"{name}: not declared UTF-8")
    return found


def _read_chunk(chunk: bytes, schemas, taken, inspection: Inspection, found: _FileFindings) -> None:
    try:
        container = etree.fromstring(b"<users>" + chunk + b"</users>", _PARSER)
    except etree.XMLSyntaxError as error:
        raise _Unusual from error
    users = list(container)
    if (container.text or "").strip() or any(user.tag != USER or (user.tail or "").strip() for user in users):
        raise _Unusual
    breaks = _chunk_may_hold_breaks(chunk)
    _check_users(users, found.users + 1, container, schemas, inspection, found, taken, breaks)


def _read_streamed(packaged: PackagedZip, name: str, schemas, taken, inspection: Inspection) -> _FileFindings:
    """The general path: an incremental parse of the whole file, every value looked at."""
    found = _FileFindings(name)
    with zipfile.ZipFile(packaged.path) as archive, archive.open(name) as stream:
        parsing = etree.iterparse(stream, events=("end",), tag=USER, huge_tree=True, collect_ids=False)
        batch = []
        for _, user in parsing:
            parent = user.getparent()
            if parent is None or parent.getparent() is not None:
                inspection.file_problems.append(f"{name}: a <user> that is not a child of <users>")
                continue
            batch.append(user)
            if len(batch) == USERS_PER_CHUNK:
                _check_streamed(batch, schemas, taken, inspection, found)
                batch = []
        _check_streamed(batch, schemas, taken, inspection, found)
        root = parsing.root
    if root is None or root.tag != USERS_ROOT:
        inspection.file_problems.append(f"{name}: root element is not <{USERS_ROOT}>")
    elif (root.getroottree().docinfo.encoding or "").lower() != "utf-8":
        inspection.file_problems.append(f"{name}: not declared UTF-8")
    return found


def _check_streamed(batch: list, schemas, taken, inspection: Inspection, found: _FileFindings) -> None:
    if batch:
        container = etree.Element(USERS_ROOT)
        container.extend(batch)  # moved out of the parsed tree: freed with the container
        _check_users(batch, found.users + 1, container, schemas, inspection, found, taken, breaks=True)


def check_schema(
    zips: list[PackagedZip],
    schemas: list[UserSchema],
    taken_identifiers: Set[str] = frozenset(),
) -> tuple[Outcome, Inspection]:
    """Every user of the zips, as written, valid: every schema and the rules an XSD cannot state."""
    inspection = inspect_users(zips, schemas, taken_identifiers)
    reasons = inspection.reasons()
    metadata = {
        "patrons": sum(packaged.patrons for packaged in zips),
        "users_checked": inspection.users,
        "xsd": ", ".join(schema.name for schema in schemas),
        "users_validated_by_xsd": min(inspection.validated.values(), default=0),
        "users_invalid": len(inspection.invalid),
        "invalid_by_reason": dict(reasons.most_common(EXAMPLES)),
        "file_problems": inspection.file_problems[:EXAMPLES],
    }
    problems = len(inspection.invalid) + len(inspection.file_problems)
    if problems:
        summary = "; ".join(
            [*inspection.file_problems[:3], *(f"{kind} ({count})" for kind, count in reasons.most_common(5))]
        )
        description = f"{problems} problem(s) in {inspection.users} users: {summary}"
        return Outcome(SCHEMA, False, description, metadata), inspection
    description = f"{inspection.users} users valid against {metadata['xsd']}"
    return Outcome(SCHEMA, True, description, metadata), inspection


@dataclass
class Screening:
    """The schema check's verdict on a type, the zips to upload, and the users left out of them."""

    outcome: Outcome
    zips: list[PackagedZip]
    left_out: list[InvalidUser]
    left_out_indices: frozenset[int] = frozenset()  # of the left-out users, in write order


MAX_INVALID_SHARE = 0.001  # more invalid users than this share of a type is a systemic fault
LEFT_OUT_INVALID = "left_out_invalid_user"  # counted in the zip asset's metadata


def screen_users(
    zips: list[PackagedZip],
    schemas: list[UserSchema],
    taken_identifiers: Set[str] = frozenset(),
    max_invalid_share: float = MAX_INVALID_SHARE,
) -> Screening:
    """Check every user; a few invalid ones cost only themselves: they are taken out of the zips
    (rewritten) and the rewritten zips are checked again. More than ``max_invalid_share`` of the
    users invalid, or a file that is not a users document, is a systemic fault: the check fails and
    the type is held back."""
    outcome, inspection = check_schema(zips, schemas, taken_identifiers)
    invalid = inspection.invalid
    if outcome.passed:
        return Screening(outcome, zips, [])
    share = len(invalid) / max(inspection.users, 1)
    if inspection.file_problems or share > max_invalid_share:
        systemic = (
            "a file that is not a users document"
            if inspection.file_problems
            else (f"{share:.2%} of the users invalid, more than {max_invalid_share:.2%}")
        )
        outcome.description += f". Held back: {systemic} is a fault of the whole load, not of a few records"
        return Screening(outcome, zips, invalid)
    kept = rewrite_without(zips, {(user.xml_file, user.position) for user in invalid})
    indices = frozenset(inspection.index(user) for user in invalid)
    final, _ = check_schema(kept, schemas, taken_identifiers)
    reasons = inspection.reasons()
    final.metadata.update(
        users_left_out_invalid=len(invalid),
        invalid_by_reason=dict(reasons.most_common(EXAMPLES)),
    )
    if final.passed:
        summary = "; ".join(f"{kind} ({count})" for kind, count in reasons.most_common(3))
        final.description += (
            f"; {len(invalid)} invalid user(s) left out of the file, named in the run report: {summary}"
        )
    else:
        final.description = f"still invalid after leaving out {len(invalid)} user(s): {final.description}"
    return Screening(final, kept, invalid, indices)


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


# -- departures ---------------------------------------------------------------------------------


def check_departures(
    patron_type: str, comparison: changes.Comparison, max_departed_share: float, override: bool
) -> Outcome:
    """Hold back a load in which more than ``max_departed_share`` of the last load's patrons are
    gone: a view pointed at the wrong people keeps the count (the shrink check) but not the people."""
    departed, previous = comparison.counts[changes.DEPARTED], comparison.previous
    metadata = {
        "patrons_departed": departed,
        "previous_patrons": previous if previous is not None else "none",
        "previous_from": comparison.previous_from,
        "max_departed_share": max_departed_share,
        "override": override,
    }
    if not previous:
        return Outcome(DEPARTURES, True, comparison.describe(), metadata)
    share = comparison.departed_share()
    summary = f"{departed} of the last load's {previous} {patron_type} patrons departed ({share:.0%})"
    if share <= max_departed_share:
        return Outcome(DEPARTURES, True, summary, metadata)
    if override:
        return Outcome(
            DEPARTURES, True, f"{summary}; allowed once by the run's config (allow_departures)", metadata
        )
    return Outcome(
        DEPARTURES,
        False,
        f"{summary}, more than {max_departed_share:.0%}: held back. If they really left, run again with "
        "allow_departures: true in this asset's config",
        metadata,
    )


# -- limits -------------------------------------------------------------------------------------


def check_limits(zips: list[PackagedZip], limits: AlmaLimits, refused: str | None = None) -> Outcome:
    """Alma's packaging limits (docs/patron-rules.md §8); ``refused`` is the packager's refusal."""
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
        without = counts.get(STUDENT_WITHOUT_USER_GROUP, 0)
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
    values.REPAIR_INVISIBLE_CHARACTERS,
    values.REPAIR_WHITESPACE,
    values.REPAIR_NON_TEXT,
    values.REPAIR_UNDECODABLE_BYTES,
    alma_xml.REPAIR_TRUNCATED,
    IDENTIFIER_REPEATED,
)
