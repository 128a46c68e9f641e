"""Checks of a built load, run before anything of a type is uploaded (docs/patron-rules.md §9).

Blocking checks (schema, shrink, limits) keep a type's zips out of the bucket when they fail;
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

from . import alma_xml, rules, values
from .packaging import AlmaLimits, PackagedZip, rewrite_without

SCHEMA, SHRINK, LIMITS = "schema", "shrink", "limits"
UNKNOWN_DEPARTMENTS, USER_GROUPS, REPAIRS = "unknown_departments", "user_groups", "repairs"
BLOCKING = (SCHEMA, SHRINK, LIMITS)

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

IDENTIFIER_VALUES = "user_identifiers/user_identifier/value"
_QUOTED = re.compile(r"'[^']*'")
_NAMED = re.compile(r"^(?:Element|attribute) '([^']+)'")


@dataclass(frozen=True)
class UserSchema:
    """A schema every user is validated against: the project's, or an operator's copy of Alma's."""

    name: str
    schema: etree.XMLSchema

    @classmethod
    def load(cls, path: str | Path) -> UserSchema:
        try:
            return cls(Path(path).name, etree.XMLSchema(etree.parse(str(path))))
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

    def reasons(self) -> Counter:
        return Counter(reason for user in self.invalid for reason in user.reasons)


def _user_problems(user, schemas, inspection: Inspection, taken_identifiers: Set[str]) -> list[str]:
    """Every rule one ``<user>`` element (parsed, lxml) breaks."""
    problems = []
    for schema in schemas:
        inspection.validated[schema.name] += 1
        if not schema.schema.validate(user):
            problems.append(xsd_reason(schema, schema.schema.error_log.last_error))
    # The rules an XSD 1.0 cannot state: no repeated primary id or identifier in the load, one
    # preferred segment a list. (Element walks: an XPath call costs more than the walk here.)
    primary_id = (user.findtext("primary_id") or "").strip().upper()
    if primary_id:
        if primary_id in inspection.primary_ids:
            problems.append("primary_id repeated in the load")
        inspection.primary_ids.add(primary_id)
    for value in user.iterfind(IDENTIFIER_VALUES):
        key = (value.text or "").strip().upper()
        if key in inspection.identifiers or key in taken_identifiers:
            problems.append("identifier repeated in the load")
        inspection.identifiers.add(key)
    contact_info = user.find("contact_info")
    if contact_info is not None:
        for segments in contact_info:
            if sum(segment.get("preferred") == "true" for segment in segments) > 1:
                problems.append(f"more than one preferred in {segments.tag}")
    return problems


def inspect_users(
    zips: list[PackagedZip],
    schemas: list[UserSchema],
    taken_identifiers: Set[str] = frozenset(),
) -> Inspection:
    """Parse every XML file of the zips as XML (streamed: memory stays flat in the file size) and
    check every user: each schema, one preferred segment a list, primary ids and identifiers not
    repeated in the type nor among ``taken_identifiers`` (the other type's). Independent of how the
    writer lays its output out."""
    inspection = Inspection(validated={schema.name: 0 for schema in schemas})
    for packaged in zips:
        for name in packaged.xml_files:
            with zipfile.ZipFile(packaged.path) as archive, archive.open(name) as stream:
                try:
                    _inspect_file(stream, name, schemas, taken_identifiers, inspection)
                except etree.XMLSyntaxError as error:
                    problem = f"{name}: not well-formed XML: {_QUOTED.sub('…', error.msg)}"
                    inspection.file_problems.append(problem)
    return inspection


def _inspect_file(stream, name: str, schemas, taken_identifiers: Set[str], inspection: Inspection) -> None:
    parsing = etree.iterparse(stream, events=("end",), tag=USER, huge_tree=True, collect_ids=False)
    position = 0
    for _, user in parsing:
        parent = user.getparent()
        if parent is None or parent.getparent() is not None:
            inspection.file_problems.append(f"{name}: a <user> that is not a child of <users>")
            continue
        position += 1
        problems = _user_problems(user, schemas, inspection, taken_identifiers)
        if problems:
            primary_id = (user.findtext("primary_id") or "").strip() or "(none)"
            inspection.invalid.append(InvalidUser(name, position, primary_id, tuple(problems)))
        # Done with this user: free it, and the users before it, from the tree.
        user.clear(keep_tail=True)
        while user.getprevious() is not None:
            del parent[0]
    inspection.users += position
    root = parsing.root
    if root is None or root.tag != USERS_ROOT:
        inspection.file_problems.append(f"{name}: root element is not <{USERS_ROOT}>")
    elif (root.getroottree().docinfo.encoding or "").lower() != "utf-8":
        inspection.file_problems.append(f"{name}: not declared UTF-8")


def check_schema(
    zips: list[PackagedZip],
    schemas: list[UserSchema],
    taken_identifiers: Set[str] = frozenset(),
) -> tuple[Outcome, Inspection]:
    """Every user of the zips, as written, valid: every schema and the rules an XSD cannot state."""
    inspection = inspect_users(zips, schemas, taken_identifiers)
    reasons = inspection.reasons()
    metadata = {
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
    return Screening(final, kept, invalid)


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
    values.REPAIR_WHITESPACE,
    values.REPAIR_NON_TEXT,
    values.REPAIR_UNDECODABLE_BYTES,
    alma_xml.REPAIR_TRUNCATED,
    rules.IDENTIFIER_REPEATED,
)
