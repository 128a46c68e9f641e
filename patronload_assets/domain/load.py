"""One patron type from selected warehouse rows to zips on disk: the domain's entry point."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass, field
from pathlib import Path

from .. import institutions
from ..institutions.mit import rules
from .alma_xml import UserTemplate
from .changes import Fingerprints
from .departments import load_department_table
from .packaging import AlmaLimits, PackagedZip, write_zips

INSTITUTION_DIR = institutions.folder()


@dataclass(frozen=True)
class PatronType:
    name: str
    columns: tuple[str, ...]
    fields_of: Callable[[Mapping[str, str | None], rules.RunContext], dict]


STAFF = PatronType("staff", rules.STAFF_COLUMNS, rules.staff_fields)
STUDENT = PatronType("student", rules.STUDENT_COLUMNS, rules.student_fields)
PATRON_TYPES = {patron_type.name: patron_type for patron_type in (STAFF, STUDENT)}


@dataclass(frozen=True)
class Institution:
    """The institution's data: a template per patron type and the two department tables."""

    templates: Mapping[str, UserTemplate]
    staff_departments: Mapping[str, str]
    student_departments: Mapping[str, str]

    @classmethod
    def load(
        cls,
        staff_departments_path: str | Path | None = None,
        student_departments_path: str | Path | None = None,
        template_dir: str | Path | None = None,
    ) -> Institution:
        """The shipped data, with each table replaced where a path is given."""
        template_dir = Path(template_dir or INSTITUTION_DIR)
        return cls(
            templates={
                name: UserTemplate.from_file(template_dir / f"{name}_template.xml") for name in PATRON_TYPES
            },
            staff_departments=load_department_table(
                staff_departments_path or INSTITUTION_DIR / "staff_departments.json"
            ),
            student_departments=load_department_table(
                student_departments_path or INSTITUTION_DIR / "student_departments.json"
            ),
        )

    def run_context(self, run_date: dt.date) -> rules.RunContext:
        return rules.RunContext(run_date, self.staff_departments, self.student_departments)


@dataclass
class BuildResult:
    patron_type: str
    zips: list[PackagedZip]
    patrons: int
    counts: Counter = field(default_factory=Counter)
    unknown_departments: Counter = field(default_factory=Counter)
    fingerprints: Fingerprints = field(default_factory=Fingerprints)  # every user, in write order


def build_zips(
    rows: Iterable[Mapping[str, object]],
    patrons: int,
    patron_type: PatronType,
    institution: Institution,
    moment: dt.datetime,
    directory: Path,
    limits: AlmaLimits | None = None,
    taken_identifiers: Set[str] = frozenset(),
) -> BuildResult:
    """Render the ``patrons`` selected rows of one type and zip them into ``directory``.

    ``moment`` (UTC) names the files and gives the run date of the expiry and purge dates;
    ``taken_identifiers`` are those the other file already carries (staff's, for students).
    """
    context = institution.run_context(moment.astimezone(dt.UTC).date())
    template = institution.templates[patron_type.name]
    fingerprints = Fingerprints()
    users = (
        template.render(fields, context.counts, fingerprints)
        for fields in rules.patron_fields(rows, patron_type.fields_of, context, taken_identifiers)
    )
    zips = write_zips(users, patrons, patron_type.name, moment, directory, limits)
    return BuildResult(
        patron_type.name, zips, patrons, context.counts, context.unknown_departments, fingerprints
    )
