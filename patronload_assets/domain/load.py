"""One patron type from selected warehouse rows to zips on disk: the domain's entry point."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field
from pathlib import Path

from .alma_xml import UserTemplate
from .changes import Fingerprints
from .departments import load_department_table
from .institution import PatronType, Rules, RunContext, patron_fields
from .packaging import AlmaLimits, PackagedZip, write_zips

PATRON_TYPES = ("staff", "student")  # the engine's two: each a view, a template and a zip asset


@dataclass(frozen=True)
class Institution:
    """An institution's rules and data: a template per patron type and the two department tables."""

    rules: Rules
    templates: Mapping[str, UserTemplate]
    staff_departments: Mapping[str, str]
    student_departments: Mapping[str, str]

    @classmethod
    def load(
        cls,
        rules: Rules,
        staff_departments_path: str | Path | None = None,
        student_departments_path: str | Path | None = None,
        template_dir: str | Path | None = None,
    ) -> Institution:
        """The institution's shipped data, with each table replaced where a path is given."""
        template_dir = Path(template_dir or rules.folder)
        return cls(
            rules=rules,
            templates={
                name: UserTemplate.from_file(template_dir / f"{name}_template.xml") for name in PATRON_TYPES
            },
            staff_departments=load_department_table(
                staff_departments_path or rules.folder / "staff_departments.json"
            ),
            student_departments=load_department_table(
                student_departments_path or rules.folder / "student_departments.json"
            ),
        )

    def run_context(self, run_date: dt.date) -> RunContext:
        return RunContext(run_date, self.staff_departments, self.student_departments)


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
    fields = patron_fields(rows, patron_type, institution.rules, context, taken_identifiers)
    users = (template.render(user_fields, context.counts, fingerprints) for user_fields in fields)
    zips = write_zips(users, patrons, patron_type.name, moment, directory, limits)
    return BuildResult(
        patron_type.name, zips, patrons, context.counts, context.unknown_departments, fingerprints
    )
