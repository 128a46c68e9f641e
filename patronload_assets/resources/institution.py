"""The institution whose rules apply, its templates and department tables."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from .. import institutions
from ..domain.institution import Rules
from ..domain.load import Institution
from ..domain.packaging import AlmaLimits


class InstitutionData(dg.ConfigurableResource):
    """The institution (INSTITUTION: its rules, templates and department tables, any table
    replaced where a path is given), and how files are cut for Alma."""

    name: str = Field(default=institutions.DEFAULT, description="The institution whose rules apply.")
    staff_departments_path: str | None = None
    student_departments_path: str | None = None
    template_dir: str | None = None
    users_per_file: int = 50_000
    alma_user_xsd: str | None = Field(
        default=None, description="Alma's rest_user.xsd: every user is validated by it before upload."
    )

    def load(self) -> Institution:
        return Institution.load(
            self.rules(), self.staff_departments_path, self.student_departments_path, self.template_dir
        )

    def rules(self) -> Rules:
        return institutions.load(self.name)

    def limits(self) -> AlmaLimits:
        return AlmaLimits(users_per_file=self.users_per_file)
